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
def step_bar(enabled: bool = True) -> Iterator[Callable[[str, int, int], None] | None]:
    """A rich progress bar on stderr whose description follows the current step; yields
    ``update(step, done, total)``, or None when not ``enabled`` (what the library's
    ``progress=`` arguments take for "no progress")."""
    if not enabled:
        yield None
        return
    bar = _make_progress(transient=False)
    task = None

    def update(step: str, done: int, total: int) -> None:
        nonlocal task
        if task is None:  # start on first report, so an early error prints no empty bar
            bar.start()
            task = bar.add_task(step, total=total)
        bar.update(task, description=step, completed=done, total=total)

    try:
        yield update
    finally:
        if task is not None:
            bar.stop()


@contextmanager
def progress_bar(description: str, enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr; yields ``update(done, total)``."""
    with step_bar(enabled) as update:
        if update is None:
            yield lambda done, total: None
        else:
            yield lambda done, total: update(description, done, total)


def print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2))


class EpochReporter:
    """Draws the Trainer's progress: one bar per epoch, one summary line per epoch."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._progress: Any = None
        self._task: Any = None

    def _bar(self, description: str, total: int) -> None:
        self._close()
        if not (self.enabled and err_console.is_terminal):
            return
        self._progress = _make_progress(transient=True)
        self._progress.start()
        self._task = self._progress.add_task(description, total=total)

    def _close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        self._epoch = f"epoch {epoch}/{epochs}"
        self._bar(self._epoch, batches)

    def batch(self, done: int, total: int, loss: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=done,
                                  description=f"{self._epoch} loss {loss:.4f}")

    def validate(self, done: int, total: int) -> None:
        if self._progress is not None and self._progress.tasks[0].total != total:
            self._bar(f"{self._epoch} validate", total)
        if self._progress is not None:
            self._progress.update(self._task, completed=done)

    def epoch_end(self, r: dict[str, Any]) -> None:
        self._close()
        if self.enabled:
            star = " *" if r["best_epoch"] == r["epoch"] else ""
            err_console.print(
                f"epoch {r['epoch']}: loss {r['train_loss']:.4f}  val loss {r['val_loss']:.4f}  "
                f"val mean bal. acc {100 * r['val_mean_balanced']:.2f}%  "
                f"({r['train_images_per_s']:.0f} img/s){star}", markup=False)

    def message(self, text: str) -> None:
        if self.enabled:
            err_console.print(text, markup=False)
