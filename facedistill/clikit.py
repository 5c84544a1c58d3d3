"""Shared pieces of the command line (torch-free): consoles, progress bars, JSON printing.

``facedistill.cli`` and the verbs in ``facedistill.commands`` use these, so every command
prints the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console

EXIT_USER_ERROR = 2
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def _make_progress(transient: bool) -> Any:
    """A rich Progress on stderr: description, bar, done/total, elapsed, remaining."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(),
    )  # fmt: skip
    return Progress(*columns, console=err_console, transient=transient)


@contextmanager
def progress_bar(description: str, enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr; yields ``update(done, total)``."""
    if not enabled:
        yield lambda done, total: None
        return
    bar = _make_progress(transient=False)
    task = None

    def update(done: int, total: int) -> None:
        nonlocal task
        if task is None:  # start on first report, so an early error prints no empty bar
            bar.start()
            task = bar.add_task(description, total=total)
        bar.update(task, completed=done, total=total)

    try:
        yield update
    finally:
        if task is not None:
            bar.stop()


def print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2))
