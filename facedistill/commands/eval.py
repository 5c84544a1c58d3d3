"""``facedistill eval``: balanced accuracy per attribute of a run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facedistill.clikit import console, print_json, progress_bar
from facedistill.config import EvalConfig, config_command, opt


@dataclass(frozen=True)
class EvalRun:
    """Which run ``eval`` scores, on which data, where the report goes."""

    run: Path = opt(argument=True)
    data: Path | None = opt(None, "CelebA-format folder [default: the one the run was trained "
                                  "on].", path="dir")
    out: Path | None = opt(None, "Also write the report as JSON to this file.", path="file")
    json: bool = opt(False, "Print the report as JSON.")
    quiet: bool = opt(False, "No progress bar.")


@config_command("eval", EvalRun, EvalConfig)
def eval_cmd(run: EvalRun, cfg: EvalConfig) -> None:
    """Balanced accuracy per attribute of a run (folder or .pt), thresholds searched on val."""
    from facedistill.io import atomic_write_json
    from facedistill.pipeline.evaluate import evaluate_checkpoint

    with progress_bar("eval", enabled=not run.quiet and not run.json) as update:
        report = evaluate_checkpoint(run.run, cfg, data=run.data, progress=update)
    if run.out is not None:
        atomic_write_json(run.out, report)
    if run.json:
        print_json(report)
        return
    _print_eval(report)


def _print_eval(report: dict[str, Any]) -> None:
    from rich.table import Table

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f}"

    table = Table(title=f"{report['checkpoint']} on {report['split']} "
                        f"({report['n_test']} images; thresholds from {report['thresholds_from']})")
    notes = ["threshold: on the probability, as predict shows it; acc@0.5: accuracy at "
             "probability 0.5"]
    if report["single_class"]:
        notes.append("* only one class in this split: its rate alone is scored")
    table.caption = "\n".join(notes)
    for col in ("attribute", "bal. acc.", "TPR", "TNR", "acc@0.5", "threshold", "positives"):
        table.add_column(col, justify="left" if col == "attribute" else "right",
                         no_wrap=col == "attribute")
    for a in report["attributes"]:
        thr = "-" if a["threshold"] is None else f"{a['threshold']:.3f}"
        name = a["name"] + (" *" if a["single_class"] else "")
        table.add_row(name, pct(a["balanced"]), pct(a["tpr"]), pct(a["tnr"]), pct(a["accuracy"]),
                      thr, f"{a['n_pos']}/{a['n_pos'] + a['n_neg']}")
    table.add_section()
    table.add_row("mean", pct(report["mean_balanced"]), "", "", pct(report["mean_accuracy"]), "",
                  "")
    console.print(table)


command = eval_cmd
