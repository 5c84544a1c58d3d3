"""``facedistill eval``: balanced accuracy per attribute of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from facedistill.clikit import console, print_json, progress_bar


@click.command("eval")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="CelebA-format folder [default: the one the run was trained on].")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test",
              show_default=True, help="Split to score.")
@click.option("--thresholds", "threshold_source", type=click.Choice(["val", "checkpoint"]),
              default="val", show_default=True,
              help="Search per-attribute thresholds on the val split now, or use the stored ones.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--workers", type=int, default=1, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the report as JSON to this file.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def eval_cmd(run: Path, data: Path | None, split: str, threshold_source: str, batch_size: int,
             workers: int, device: str, out_file: Path | None, as_json: bool,
             quiet: bool) -> None:
    """Balanced accuracy per attribute of a run (folder or .pt), thresholds searched on val."""
    from facedistill.io import atomic_write_json
    from facedistill.pipeline.evaluate import evaluate_checkpoint

    with progress_bar("eval", enabled=not quiet and not as_json) as update:
        report = evaluate_checkpoint(run, data=data, split=split, thresholds=threshold_source,
                                     batch_size=batch_size, workers=workers, device=device,
                                     progress=update)
    if out_file is not None:
        atomic_write_json(out_file, report)
    if as_json:
        print_json(report)
        return
    _print_eval(report)


def _print_eval(report: dict[str, Any]) -> None:
    from rich.table import Table

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f}"

    table = Table(title=f"{report['checkpoint']} on {report['split']} "
                        f"({report['n_test']} images; thresholds from {report['thresholds_from']})")
    if report["single_class"]:
        table.caption = "* only one class in this split: its rate alone is scored"
    for col in ("attribute", "bal. acc.", "TPR", "TNR", "acc@0.5", "threshold", "positives"):
        table.add_column(col, justify="left" if col == "attribute" else "right",
                         no_wrap=col == "attribute")
    for a in report["attributes"]:
        thr = "-" if a["threshold"] is None else f"{a['threshold']:+.3f}"
        name = a["name"] + (" *" if a["single_class"] else "")
        table.add_row(name, pct(a["balanced"]), pct(a["tpr"]), pct(a["tnr"]), pct(a["accuracy"]),
                      thr, f"{a['n_pos']}/{a['n_pos'] + a['n_neg']}")
    table.add_section()
    table.add_row("mean", pct(report["mean_balanced"]), "", "", pct(report["mean_accuracy"]), "",
                  "")
    console.print(table)


command = eval_cmd
