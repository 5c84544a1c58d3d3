"""``facedistill bench``: latency, size, params/MACs and accuracy of artifacts, interleaved.

torch-free for ONNX files and engines: torch is imported only when a checkpoint is benchmarked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from facedistill.clikit import console, err_console, progress_bar
from facedistill.config import BenchConfig, config_command, opt
from facedistill.errors import UserError


@dataclass(frozen=True)
class BenchRun:
    """What ``bench`` times and scores, where it writes, how it prints."""

    artifacts: tuple[Path, ...] = opt(argument=True)
    data: Path | None = opt(None, "CelebA-format folder: also measure mean balanced accuracy on "
                                  "--split.", path="dir")
    json: bool = opt(False, "Print the result (rows + environment) as JSON instead of the "
                            "table.")
    json_out: Path | None = opt(None, "Write the result (rows + environment) as JSON to this "
                                      "file.", path="file")
    md: Path | None = opt(None, "Write the Markdown table.", path="file")
    plot: Path | None = opt(None, "Write PNG plots (needs matplotlib).", path="file")
    quiet: bool = opt(False, "No progress bar and no table on the console.")


@config_command("bench", BenchConfig, BenchRun)
def command(cfg: BenchConfig, run: BenchRun) -> None:
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

    artifacts = list(run.artifacts)
    stray = [a for a in artifacts if a.suffix.lower() == ".json" and not a.exists()]
    if stray:  # up to 0.1.0 --json took the output file
        raise UserError(f"{stray[0]} is not an artifact: --json is a flag (print JSON); "
                        "write a file with --json-out FILE")
    if run.plot is not None and not have_matplotlib():
        raise UserError(f"--plot: {INSTALL_MPL}")
    check_artifacts(artifacts, cfg.backend)  # bad paths / missing backend: fail before loading
    with progress_bar("bench", enabled=not run.quiet and not run.json) as update:
        result = run_bench(artifacts, cfg, data=run.data, progress=update)
    written = write_outputs(result, json_path=run.json_out, md_path=run.md, plot_path=run.plot)
    if run.json:
        click.echo(to_json(result), nl=False)
    elif not run.quiet:
        console.print(markdown_table(result), markup=False, soft_wrap=True)
    for path in written:
        err_console.print(f"wrote {path}", markup=False)
