"""The ``facedistill`` command line: thin; parses, calls the library, prints.

Errors a user can fix (a bad file, a bad option) print one line ``error: ...`` on stderr and
exit with code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from facedistill import __version__
from facedistill.errors import UserError

EXIT_USER_ERROR = 2
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


class NotBuiltError(UserError):
    """A verb of the design that no release has built yet."""


@contextmanager
def progress_bar(description: str, enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr; yields ``update(done, total)``."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if not enabled:
        yield lambda done, total: None
        return
    columns = (
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(),
    )  # fmt: skip
    bar = Progress(*columns, console=err_console, transient=False)
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


def _print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="facedistill")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML file with option defaults per command ([data.synth], [train], ...); "
                   "options on the command line override it.")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, debug: bool) -> None:
    """Compress face-attribute CNNs and ship them to CPUs, GPUs and Jetson.

    \b
    data synth -> train (teacher) -> select (neurons) -> compress (student)
               -> export (ONNX / TensorRT) -> bench -> predict
    pipeline runs them all, resumably.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    if config_path is not None:
        from facedistill.config import load_default_map

        ctx.default_map = load_default_map(ctx.command, config_path)


# -- data ----------------------------------------------------------------------------------


@cli.group()
def data() -> None:
    """Datasets: generate the embedded synthetic one, validate any CelebA-format folder."""


def _synth_defaults() -> Any:
    from facedistill.pipeline.data.synth import SynthConfig

    return SynthConfig()


_SYNTH = _synth_defaults()


@data.command("synth")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default="data/synth",
              show_default=True, help="Output folder (CelebA layout).")
@click.option("--n", type=int, default=_SYNTH.n, show_default=True, help="Number of images.")
@click.option("--size", type=int, default=_SYNTH.size, show_default=True,
              help="Side of the aligned square images, pixels.")
@click.option("--seed", type=int, default=_SYNTH.seed, show_default=True)
@click.option("--wild/--no-wild", default=_SYNTH.wild, show_default=True,
              help="Also write in-the-wild photos (img_celeba/) with bbox and landmark files.")
@click.option("--images-per-identity", type=float, default=_SYNTH.images_per_identity,
              show_default=True, help="Mean number of photos per identity.")
@click.option("--workers", type=int, default=None, help="Processes [default: all cores].")
@click.option("--force", is_flag=True, help="Replace an existing, different dataset at --out.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def data_synth(out: Path, n: int, size: int, seed: int, wild: bool, images_per_identity: float,
               workers: int | None, force: bool, as_json: bool, quiet: bool) -> None:
    """Generate the embedded synthetic face-attribute dataset (CelebA's file format)."""
    from facedistill.pipeline.data.synth import SynthConfig, generate

    cfg = SynthConfig(n=n, size=size, seed=seed, wild=wild,
                      images_per_identity=images_per_identity)
    with progress_bar("synth", enabled=not quiet and not as_json) as update:
        result = generate(out, cfg, workers=workers, force=force, progress=update)
    if as_json:
        _print_json({"out": str(out), **result})
        return
    _print_synth_summary(out, result)


def _print_synth_summary(out: Path, result: dict) -> None:
    from rich.table import Table

    cfg = result["config"]
    if result["reused"]:
        console.print(f"[bold]{out}[/] already holds this dataset (same config); reused.")
    else:
        rate = result["images"] / max(result["seconds"], 1e-9)
        console.print(f"wrote [bold]{out}[/]: {result['images']} images in "
                      f"{result['seconds']:.1f} s ({rate:.0f} images/s)")
    table = Table(title=f"synth n={cfg['n']} size={cfg['size']} seed={cfg['seed']} "
                        f"wild={cfg['wild']}")
    table.add_column("split")
    table.add_column("images", justify="right")
    table.add_column("identities", justify="right")
    for name, row in result["splits"].items():
        table.add_row(name, str(row["images"]), str(row["identities"]))
    console.print(table)


@data.command("check")
@click.argument("root", type=click.Path(file_okay=False, path_type=Path))
@click.option("--variant", type=click.Choice(["aligned", "wild"]), default=None,
              help="Which images to check [default: aligned, and wild when img_celeba/ exists].")
@click.option("--images/--no-images", "verify_images", default=True, show_default=True,
              help="Decode every image (finds truncated or corrupt files).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def data_check(root: Path, variant: str | None, verify_images: bool, as_json: bool,
               quiet: bool) -> None:
    """Validate a CelebA-format folder (official txt or CSV layout) and summarise it."""
    from facedistill.pipeline.data.check import check_dataset, format_check

    with progress_bar("check images", enabled=not quiet and not as_json) as update:
        report = check_dataset(root, variant=variant, verify_images=verify_images,
                               progress=update)
    if as_json:
        _print_json(report)
        return
    tables = format_check(report)
    for table in tables if isinstance(tables, list | tuple) else [tables]:
        console.print(table)


# -- models --------------------------------------------------------------------------------


@cli.command("models")
@click.option("--size", type=int, default=64, show_default=True,
              help="Input side (pixels) at which MACs are counted.")
@click.option("--width", type=float, default=1.0, show_default=True,
              help="Width multiplier (scales every conv but the final 1280).")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
def models_cmd(size: int, width: float, as_json: bool) -> None:
    """List the model registry: exact params (with and without the FC40), MACs, the paper's."""
    from rich.table import Table

    from facedistill.pipeline.models import PAPER, list_models, model_info

    order = ["tnet", *sorted(n for n in list_models() if n != "tnet")]  # teacher first
    rows = [model_info(name, width=width, size=size) for name in order]
    if as_json:
        _print_json(rows)
        return
    table = Table(title=f"models at {size}x{size}, width {width:g}")
    for col in ("model", "params", "params w/o FC40", "MACs", "paper params", "paper acc."):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        table.add_row(r["arch"], f"{r['params']:,}", f"{r['params_no_head']:,}",
                      f"{r['macs'] / 1e6:,.1f}M", PAPER[r["arch"]]["params_text"],
                      f"{r['paper_acc']:.2f}")
    console.print(table)


# -- verbs that later releases build ---------------------------------------------------------

_PLANNED = {
    "train": "Train a teacher (tnet) or a student from labels.",
    "eval": "Evaluate a checkpoint: balanced accuracy per attribute.",
    "select": "Select the teacher's most informative neurons by mean-field inference.",
    "compress": "Distill a teacher into SNet1/SNet2/SNet3 through selected neurons.",
    "export": "Export to ONNX (FP32/FP16/INT8) and TensorRT engines.",
    "bench": "Benchmark latency, size, params and accuracy of artifacts.",
    "predict": "Predict the 40 attributes of face images.",
    "pipeline": "Run the whole job end to end, resumably, with one report.",
}


def _planned(name: str, summary: str) -> click.Command:
    @click.command(name, help=f"{summary} (not built yet)", short_help=f"{summary} [not built yet]",
                   context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def command() -> None:
        raise NotBuiltError(f"'facedistill {name}' is not built yet in this release "
                            f"({__version__}); see the README's roadmap")

    return command


for _name, _summary in _PLANNED.items():
    cli.add_command(_planned(_name, _summary))


# -- entry point -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors with exit code 2 for anything the user can fix."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        code = cli.main(args=args, prog_name="facedistill", standalone_mode=False)
    except UserError as exc:
        if debug:
            raise
        err_console.print(f"error: {exc.format()}", markup=False, soft_wrap=True)
        sys.exit(EXIT_USER_ERROR)
    except click.exceptions.Abort:
        err_console.print("aborted", markup=False)
        sys.exit(130)
    except click.ClickException as exc:  # usage errors: bad option, missing argument, ...
        if debug:
            raise
        where = f" (see '{exc.ctx.command_path} --help')" if getattr(exc, "ctx", None) else ""
        err_console.print(f"error: {exc.format_message()}{where}", markup=False, soft_wrap=True)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        err_console.print("interrupted", markup=False)
        sys.exit(130)
    if isinstance(code, int) and code:  # e.g. click's own exit codes
        sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
