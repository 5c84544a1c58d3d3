"""``facedistill bench``: latency, size, params/MACs and accuracy of artifacts, interleaved.

torch-free for ONNX files and engines: torch is imported only when a checkpoint is benchmarked.
"""

from __future__ import annotations

from pathlib import Path

import click

from facedistill.clikit import console, err_console, progress_bar
from facedistill.errors import UserError


def _batches(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, ...]:
    out = []
    for part in str(value).split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or int(part) < 1:
            raise click.BadParameter(f"{part!r} is not a batch size >= 1 (e.g. 1,8,32)")
        out.append(int(part))
    if not out:
        raise click.BadParameter("give at least one batch size (e.g. 1,8,32)")
    return tuple(out)


@click.command("bench")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--backend", type=click.Choice(["auto", "ort", "trt", "torch"]), default="auto",
              show_default=True,
              help="auto: torch for checkpoints/run folders, ONNX Runtime for .onnx, TensorRT "
                   "for .engine.")
@click.option("--batch", "batch", default="1,32", show_default=True, callback=_batches,
              help="Comma-separated batch sizes.")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True,
              help="Warm-up runs per artifact and batch size (not timed).")
@click.option("--iters", type=click.IntRange(min=1), default=None,
              help="Timed runs per artifact and batch size (= interleaved rounds).")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Measure about this long per artifact and batch size [default: 2 when "
                   "--iters is not given].")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for ONNX Runtime / torch [default: one per physical core, as "
                   "predict and the runtime use].")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="CelebA-format folder: also measure mean balanced accuracy on --split.")
@click.option("--split", type=click.Choice(["val", "test", "train"]), default="val",
              show_default=True, help="Split scored for accuracy (with --data).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Score only the first N images of the split.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the result (rows + environment) as JSON instead of the table.")
@click.option("--json-out", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write the result (rows + environment) as JSON to this file.")
@click.option("--md", "md_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the Markdown table.")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write PNG plots (needs matplotlib).")
@click.option("--quiet", is_flag=True, help="No progress bar and no table on the console.")
def command(artifacts: tuple[Path, ...], backend: str, batch: tuple[int, ...], warmup: int,
            iters: int | None, seconds: float | None, threads: int | None, data: Path | None,
            split: str, limit: int | None, as_json: bool, json_out: Path | None,
            md_out: Path | None,
            plot_out: Path | None, quiet: bool) -> None:
    """Benchmark checkpoints, run folders, ONNX files and TensorRT engines.

    Per artifact and batch size: median/p90/p99 latency, throughput, params, MACs, file size
    and (with --data) mean balanced accuracy and its delta to the fp32 variant of the same
    model. Artifacts run interleaved, round by round, so ratios stay fair on a noisy machine.

    \b
    facedistill bench runs/snet3/export/*.onnx --data data/synth --md bench.md --plot bench.png
    """
    from facedistill.bench import markdown_table, run_bench, write_outputs
    from facedistill.bench.core import check_artifacts
    from facedistill.bench.report import INSTALL_MPL, have_matplotlib, to_json

    stray = [a for a in artifacts if a.suffix.lower() == ".json" and not a.exists()]
    if stray:  # up to 0.1.0 --json took the output file
        raise UserError(f"{stray[0]} is not an artifact: --json is a flag (print JSON); "
                        "write a file with --json-out FILE")
    if iters is not None and seconds is not None:
        raise UserError("give --iters or --seconds, not both")
    if plot_out is not None and not have_matplotlib():
        raise UserError(f"--plot: {INSTALL_MPL}")
    check_artifacts(list(artifacts), backend)  # bad paths / missing backend: fail before loading
    with progress_bar("bench", enabled=not quiet and not as_json) as update:
        result = run_bench(list(artifacts), backend=backend, batches=batch, warmup=warmup,
                           iters=iters, seconds=seconds, threads=threads, data=data, split=split,
                           limit=limit, progress=update)
    written = write_outputs(result, json_path=json_out, md_path=md_out, plot_path=plot_out)
    if as_json:
        click.echo(to_json(result), nl=False)
    elif not quiet:
        console.print(markdown_table(result), markup=False, soft_wrap=True)
    for path in written:
        err_console.print(f"wrote {path}", markup=False)
