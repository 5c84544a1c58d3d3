"""``facedistill pipeline``: data -> teacher -> select -> students -> export -> bench -> report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from facedistill.clikit import EpochReporter, console, err_console, print_json


@click.command("pipeline")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None,
              help="TOML file: [data.synth], [train], [select], [compress], [export], [bench], "
                   "[pipeline] [default: the global --config, else configs/demo.toml].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder [default: the config's [pipeline] out, else runs/demo].")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="CelebA-format folder [default: the config's [pipeline] data or "
                   "[data.synth] out].")
@click.option("--students", multiple=True, help="Students to distil (repeat or comma-separate) "
              "[default: the config's, else snet1, snet2, snet3].")
@click.option("--teachers", type=int, default=None,
              help="Train an ensemble of this many teachers (seeds train.seed + i) and distil "
                   "every student from all of them [default: the config's, else 1].")
@click.option("--teacher-widths", multiple=True, metavar="W1,W2,...",
              help="An ensemble of teachers of these widths (one per teacher, seeds "
                   "train.seed + i) [default: the config's, else every teacher at train.width].")
@click.option("--twins", multiple=True,
              help="Students that also train on the labels alone with the same budget, for "
                   "the report's distillation-gain table [default: the config's, else none].")
@click.option("--bench-precisions", multiple=True,
              help="ONNX precisions the bench stage times [default: fp32, int8].")
@click.option("--from", "start", default=None, metavar="STAGE",
              help="Redo this stage (or group) and everything after it.")
@click.option("--only", default=None, metavar="STAGE",
              help="Run only this stage (or group), as needed (with --from: redo it); its "
                   "inputs must be up to date.")
@click.option("--status", "show_status", is_flag=True,
              help="Show which stages are up to date and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--quiet", is_flag=True, help="No progress output.")
def command(config_path: Path, out: Path | None, data: Path | None, students: tuple[str, ...],
            teachers: int | None, teacher_widths: tuple[str, ...], twins: tuple[str, ...], bench_precisions: tuple[str, ...],
            start: str | None,
            only: str | None,
            show_status: bool, as_json: bool, quiet: bool) -> None:
    """Run the main job end to end into one run folder, with one report.

    \b
    Stages: data, teacher, select, students (student:snet1 ..., twin:snet3 ...), export
    (export:MODEL ...),
    bench, report. A re-run skips the stages whose inputs (config values, upstream files) did
    not change and redoes those that did; an interrupted run resumes at the interrupted stage,
    mid-training included.
    """
    from facedistill.config import read_toml
    from facedistill.workflow.stages import Pipeline, PipelineConfig

    # one config file: the verb's --config, else the global one, else the demo's
    root = click.get_current_context().find_root()
    config_path = config_path or (root.obj or {}).get("config") or Path("configs/demo.toml")

    tables = read_toml(config_path)
    section = dict(tables.get("pipeline", {}))
    if students:
        section["students"] = [s for v in students for s in v.split(",") if s.strip()]
    if teachers is not None:
        section["teachers"] = teachers
    if teacher_widths:
        section["teacher_widths"] = [w for v in teacher_widths for w in str(v).split(",")
                                     if w.strip()]
    if twins:
        section["twins"] = [s for v in twins for s in v.split(",") if s.strip()]
    if bench_precisions:
        section["bench_precisions"] = [s for v in bench_precisions for s in v.split(",")]
    tables = {**tables, "pipeline": section}
    cfg = PipelineConfig.from_tables(tables, data=data, source=str(config_path))
    out = out or Path(cfg.sections["pipeline"]["out"])
    show = not quiet and not as_json
    t_start = time.perf_counter()

    def events(stage: str, what: str, info: dict[str, Any]) -> None:
        if not show:
            return
        if what == "start":
            note = " (resuming)" if info.get("resume") else ""
            err_console.print(f"[bold]{stage}[/]: running{note}")
        elif what == "skip":
            err_console.print(f"{stage}: up to date, skipped")
        elif what == "done":
            err_console.print(f"{stage}: done in {info['seconds']:.1f} s "
                              f"(total {time.perf_counter() - t_start:.0f} s)")
        elif what == "message":
            err_console.print(f"{stage}: {info['text']}", markup=False)

    pipe = Pipeline(cfg, out, events=events,
                    reporter_factory=lambda name: EpochReporter(enabled=show))
    if show_status:
        rows = pipe.status()
        if as_json:
            print_json(rows)
        else:
            for r in rows:
                console.print(f"{r['stage']:<18} {'ok' if r['valid'] else 'to run':<7} "
                              f"{r['reason']}", markup=False)
        return
    summary = pipe.run(start=start, only=only)
    if as_json:
        print_json(summary)
        return
    console.print(f"pipeline done in {summary['seconds']:.0f} s: ran {len(summary['ran'])} "
                  f"stages, skipped {len(summary['skipped'])}")
    if summary.get("report"):
        report = Path(summary["report"])
        console.print(f"report: {report} and {report.with_suffix('.html')}")
