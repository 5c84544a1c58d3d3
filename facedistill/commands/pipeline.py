"""``facedistill pipeline``: data -> teacher -> select -> students -> export -> bench -> report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from facedistill.clikit import EpochReporter, console, err_console, print_json
from facedistill.config import (
    NumberList,
    command_at,
    config_table,
    load_default_map,
    option_key,
    table_options,
)
from facedistill.errors import ConfigError

if TYPE_CHECKING:
    from facedistill.workflow.stages import PipelineConfig


DEMO_CONFIG = Path("configs/demo.toml")

# options of the stage commands that the pipeline decides itself: where files go, how it prints
_OWN = frozenset({"out", "data", "teachers", "student", "selection", "source", "artifacts",
                  "calib_data", "resume", "force", "as_json", "quiet", "json_out", "md_out",
                  "plot_out"})
# options that contradict the pipeline's job: an error when set
_REFUSED = {("export", "no_eval"): "the pipeline scores every export (its INT8 gate and report)",
            ("data.synth", "unlabeled"): "the pipeline's dataset needs its labels (an unlabeled "
                                         "pool is [compress] unlabeled)"}
# where the pipeline's default is not the single command's
_PIPELINE_DEFAULTS = {"export": {"trt": "auto"}}  # engines wherever TensorRT is installed


def pipeline_config(root: click.Group, default_map: dict[str, Any], source: str | Path, *,
                    given: dict[str, Any] | None = None) -> PipelineConfig:
    """The pipeline's options from the CLI's own: each stage table starts from its command's
    option defaults and takes the config file's values (``default_map``, checked and keyed as
    :func:`facedistill.config.load_default_map` returns it); ``given`` are ``pipeline``'s
    options from the command line."""
    from facedistill.workflow.stages import STAGE_TABLES, PipelineConfig

    sections: dict[str, dict[str, Any]] = {}
    keys: dict[str, dict[str, str]] = {}
    for name in (*STAGE_TABLES, "pipeline"):
        keys[name] = {str(p.name): option_key(p) for p in command_at(root, name).params
                      if p.name}
        own = frozenset() if name == "pipeline" else _OWN
        values = {k: v for k, v in table_options(root, {}, name).items() if k not in own}
        values.update(_PIPELINE_DEFAULTS.get(name, {}))
        table = config_table(default_map, name)
        for key, value in table.items():
            if (name, key) in _REFUSED and value:
                raise ConfigError(f"not for the pipeline: {_REFUSED[name, key]}", path=source,
                                  field=f"{name}.{keys[name][key]}")
        sections[name] = values | {k: v for k, v in table.items() if k in values}
    sections["pipeline"].update(given or {})
    # a [data.synth] table: the data stage generates that dataset
    synth = isinstance((default_map.get("data") or {}).get("synth"), dict)
    data = sections["pipeline"]["data"]
    if data is None and synth:
        data = table_options(root, default_map, "data.synth")["out"]
    if data is None:
        raise ConfigError("no dataset: give [pipeline] data (a CelebA-format folder) or a "
                          "[data.synth] table", path=source, field="pipeline.data")
    return PipelineConfig(sections=sections, synth=synth, data=Path(data), source=str(source),
                          keys=keys)


def load_pipeline_config(root: click.Group, path: str | Path, **given: Any) -> PipelineConfig:
    """:func:`pipeline_config` of a config file (for the library and the tests)."""
    return pipeline_config(root, load_default_map(root, path), path, given=given)


@click.command("pipeline")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default="runs/demo",
              show_default=True, help="Run folder.")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="CelebA-format folder [default: [data.synth] out when the config has that "
                   "table].")
@click.option("--students", multiple=True, default=("snet1", "snet2", "snet3"),
              show_default=True, help="Students to distil (repeat or comma-separate).")
@click.option("--teachers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Train an ensemble of this many teachers (seeds train.seed + i) and distil "
                   "every student from all of them.")
@click.option("--teacher-widths", type=NumberList(), multiple=True, metavar="W1,W2,...",
              help="An ensemble of teachers of these widths (one per teacher, seeds "
                   "train.seed + i) [default: every teacher at train.width].")
@click.option("--twins", multiple=True,
              help="Students that also train on the labels alone with the same budget, for "
                   "the report's distillation-gain table [default: none].")
@click.option("--bench-precisions", multiple=True, default=("fp32", "int8"), show_default=True,
              help="ONNX precisions the bench stage times.")
@click.option("--from", "start", default=None, metavar="STAGE",
              help="Redo this stage (or group) and everything after it.")
@click.option("--only", default=None, metavar="STAGE",
              help="Run only this stage (or group), as needed (with --from: redo it); its "
                   "inputs must be up to date.")
@click.option("--status", "show_status", is_flag=True,
              help="Show which stages are up to date and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--quiet", is_flag=True, help="No progress output.")
def command(out: Path, data: Path | None, students: tuple[str, ...], teachers: int,
            teacher_widths: tuple[list[float], ...], twins: tuple[str, ...],
            bench_precisions: tuple[str, ...], start: str | None, only: str | None,
            show_status: bool, as_json: bool, quiet: bool) -> None:
    """Run the main job end to end into one run folder, with one report.

    \b
    Stages: data, teacher, select, students (student:snet1 ..., twin:snet3 ...), export
    (export:MODEL ...), bench, report. The options of each stage are those of its command,
    from the global --config's tables ([data.synth], [train], [select], [compress], [export],
    [bench], [pipeline]; default: configs/demo.toml). A re-run skips the stages whose inputs
    (config values, upstream files) did not change and redoes those that did; an interrupted
    run resumes at the interrupted stage, mid-training included.
    """
    from facedistill.workflow.stages import Pipeline

    ctx = click.get_current_context()
    root = ctx.find_root()
    path = (root.obj or {}).get("config")
    default_map = root.default_map if path else None
    if default_map is None:  # no global --config: the demo's
        path = DEMO_CONFIG
        default_map = load_default_map(root.command, path)
    values = {"out": out, "data": data, "students": list(students), "teachers": teachers,
              "teacher_widths": [w for ws in teacher_widths for w in ws], "twins": list(twins),
              "bench_precisions": list(bench_precisions)}
    given = {k: v for k, v in values.items()
             if ctx.get_parameter_source(k) is click.core.ParameterSource.COMMANDLINE}
    cfg = pipeline_config(root.command, default_map, path, given=given)
    out = Path(cfg.sections["pipeline"]["out"])
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
