"""``facedistill train``, and the Trainer's run options ``compress`` shares."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from facedistill.clikit import EpochReporter, console, print_json
from facedistill.config import TrainConfig, config_command, opt


@dataclass(frozen=True)
class TrainRun:
    """Where a training run reads and how it prints (``train`` and ``compress``)."""

    data: Path = opt(Path("data/synth"), "CelebA-format folder.", path="dir")
    resume: bool = opt(False, "Continue the run in --out after its last completed epoch (a new "
                              "run when there is none yet).")
    force: bool = opt(False, "Start over in an --out that holds a run.")
    json: bool = opt(False, "Print the summary as JSON.")
    quiet: bool = opt(False, "No progress output.")


@dataclass(frozen=True)
class TrainOut:
    out: Path | None = opt(None, "Run folder [default: runs/ARCH].", path="dir")


@config_command("train", TrainConfig, TrainOut, TrainRun)
def train_cmd(cfg: TrainConfig, where: TrainOut, run: TrainRun) -> None:
    """Train a model from the attribute labels (teacher, or a student baseline).

    Runs unchanged under torchrun: torchrun --nproc_per_node=N -m facedistill train ...
    """
    from facedistill.pipeline.train import train

    out = where.out or Path("runs") / cfg.arch
    reporter = EpochReporter(enabled=not run.quiet and not run.json)
    result = train(cfg, run.data, out, resume=run.resume, force=run.force, reporter=reporter)
    if result.summary.get("world_size", 1) > 1 and _rank() != 0:
        return
    if run.json:
        print_json(result.summary)
        return
    best = result.best
    console.print(f"[bold]{out}[/]: best epoch {result.best_epoch}, val mean balanced accuracy "
                  f"{100 * best.get('val_mean_balanced', float('nan')):.2f}% "
                  f"(best.pt, last.pt, metrics.jsonl, run.json)")


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


command = train_cmd
