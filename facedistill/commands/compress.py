"""``facedistill compress``: distil a teacher (or an ensemble) into a student."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import click

from facedistill.clikit import EpochReporter, console, print_json, progress_bar
from facedistill.commands.train import TrainRun, _rank
from facedistill.config import (
    DistillConfig,
    SelectConfig,
    TrainOptions,
    build,
    config_command,
    opt,
    table_options,
)
from facedistill.config.train import Arch


@dataclass(frozen=True)
class CompressRun:
    """Which student, from which teachers, into which folder."""

    student: Arch = opt("snet3", "Student architecture.")
    teacher: tuple[Path, ...] = opt(
        (), "Teacher run folder or checkpoint; repeat for an ensemble.", required=True)
    selection: Path | None = opt(
        None, "A selection.json from 'facedistill select' [default: run it with the config's "
              "[select] options, cached].")
    out: Path | None = opt(None, "Run folder [default: runs/STUDENT-METHOD].", path="dir")


@config_command("compress", CompressRun, DistillConfig, TrainOptions, TrainRun)
def compress_cmd(job: CompressRun, distill: DistillConfig, options: TrainOptions,
                 run: TrainRun) -> None:
    """Distil a teacher into a student through selected neurons, then compare the two."""
    from facedistill.pipeline.compress import compress, prepare_selection

    cfg = options.for_arch(job.student)
    out = job.out or Path("runs") / f"{job.student}-{distill.method}"
    teachers = list(job.teacher)
    show = not run.quiet and not run.json
    selection = job.selection
    if distill.method == "selected" and selection is None:
        # selected here: with the config's [select] options (as `facedistill select` would);
        # k, the device and the workers are compress's own
        root = click.get_current_context().find_root()
        values = table_options(root.command, root.default_map or {}, "select")  # type: ignore[arg-type]
        select = replace(build(SelectConfig, values), k=distill.k, workers=cfg.workers,
                         device=cfg.device)
        with progress_bar("teacher responses", enabled=show) as update:
            selection = Path(prepare_selection(teachers, run.data, out, select,
                                               variant=cfg.variant, progress=update,
                                               staged=True, resume=run.resume,
                                               force=run.force))
    reporter = EpochReporter(enabled=show)
    result = compress(cfg, teachers, run.data, out, distill, selection=selection,
                      resume=run.resume, force=run.force, reporter=reporter)
    if _rank() != 0:
        return
    if run.json:
        print_json(result)
        return
    from facedistill.pipeline.compress import compare_markdown

    console.print(compare_markdown(result), markup=False)
    console.print(f"wrote {out}/best.pt, compare.json, compare.md")


command = compress_cmd
