"""``facedistill pipeline``: data -> teacher -> select -> students -> export -> bench -> report."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from facedistill.clikit import EpochReporter, console, err_console, print_json
from facedistill.commands.data import SynthRun
from facedistill.config import (
    ARCHS,
    BenchConfig,
    DistillConfig,
    ExportConfig,
    PipelineOptions,
    SelectConfig,
    SynthConfig,
    TrainConfig,
    TrainOptions,
    build,
    command_at,
    config_command,
    config_table,
    load_default_map,
    opt,
    option_key,
    table_options,
    want_trt,
)
from facedistill.errors import ConfigError

T = TypeVar("T")

if TYPE_CHECKING:
    from facedistill.workflow.stages import PipelineConfig


DEMO_CONFIG = Path("configs/demo.toml")

# options that contradict the pipeline's job: an error when set
_REFUSED = {("export", "no_eval"): "the pipeline scores every export (its INT8 gate and report)",
            ("data.synth", "unlabeled"): "the pipeline's dataset needs its labels (an unlabeled "
                                         "pool is [compress] unlabeled)"}


@dataclass(frozen=True)
class PipelineRun:
    """Where the pipeline writes, what it reads, which stages it runs, how it prints."""

    out: Path = opt(Path("runs/demo"), "Run folder.", path="dir")
    data: Path | None = opt(None, "CelebA-format folder [default: [data.synth] out when the "
                                  "config has that table].", path="dir")
    start: str | None = opt(None, "Redo this stage (or group) and everything after it.",
                            name="from", metavar="STAGE")
    only: str | None = opt(None, "Run only this stage (or group), as needed (with --from: redo "
                                 "it); its inputs must be up to date.", metavar="STAGE")
    status: bool = opt(False, "Show which stages are up to date and exit.")
    json: bool = opt(False, "Print the summary as JSON.")
    quiet: bool = opt(False, "No progress output.")


def pipeline_config(root: click.Group, default_map: dict[str, Any], source: str | Path, *,
                    given: dict[str, Any] | None = None) -> PipelineConfig:
    """The pipeline's typed configs, made by the commands' own config classes: each stage's
    from its command's defaults and the config file's table (``default_map``, checked and keyed
    as :func:`facedistill.config.load_default_map` returns it); ``given`` are ``pipeline``'s
    options from the command line. The one default of the pipeline's own: ``[export] trt`` is
    on where TensorRT is installed."""
    from facedistill.workflow.stages import PipelineConfig  # light; keeps --help fast

    def table(name: str) -> dict[str, Any]:
        keys = {str(p.name): option_key(p) for p in command_at(root, name).params}
        for key, value in config_table(default_map, name).items():
            if (name, key) in _REFUSED and value:
                raise ConfigError(f"not for the pipeline: {_REFUSED[name, key]}", path=source,
                                  field=f"{name}.{keys[key]}")
        values = table_options(root, default_map, name)
        return values | (given or {}) if name == "pipeline" else values

    def make(cls: type[T], name: str, **overrides: Any) -> T:
        keys = {str(p.name): f"{name}.{option_key(p)}" for p in command_at(root, name).params}
        return build(cls, table(name) | overrides, where=keys.get, path=source)

    # a [data.synth] table: the data stage generates that dataset
    synth = synth_run = None
    if isinstance((default_map.get("data") or {}).get("synth"), dict):
        synth, synth_run = make(SynthConfig, "data.synth"), make(SynthRun, "data.synth")
    data = table("pipeline")["data"]
    if data is None and synth_run is not None:
        data = synth_run.out
    if data is None:
        raise ConfigError("no dataset: give [pipeline] data (a CelebA-format folder) or a "
                          "[data.synth] table", path=source, field="pipeline.data")
    teacher = make(TrainConfig, "train")
    if teacher.arch not in ARCHS:
        raise ConfigError(f"the pipeline distils a classification teacher ({', '.join(ARCHS)}), "
                          f"not {teacher.arch} (train it by itself: facedistill train --arch "
                          f"{teacher.arch})", path=source, field="train.arch")
    options = make(PipelineOptions, "pipeline")
    for w in options.teacher_widths:  # the same rule as [train] width: TrainConfig's
        try:
            replace(teacher, width=w)
        except ConfigError as exc:
            raise ConfigError(exc.message, path=source, field="pipeline.teacher_widths") \
                from None
    student = make(TrainOptions, "compress")
    trt = {} if "trt" in config_table(default_map, "export") else {"trt": want_trt("auto")}
    return PipelineConfig(
        pipeline=options, data=Path(data), teacher=teacher, student=student,
        distill=make(DistillConfig, "compress"), select=make(SelectConfig, "select"),
        export=make(ExportConfig, "export", **trt), bench=make(BenchConfig, "bench"),
        synth=synth, synth_workers=synth_run.workers if synth_run is not None else None,
        source=str(source))


def load_pipeline_config(root: click.Group, path: str | Path, **given: Any) -> PipelineConfig:
    """:func:`pipeline_config` of a config file (for the library and the tests)."""
    return pipeline_config(root, load_default_map(root, path), path, given=given)


@config_command("pipeline", PipelineOptions, PipelineRun)
def command(options: PipelineOptions, run: PipelineRun) -> None:
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
    given = {k: v for k, v in ctx.params.items()
             if ctx.get_parameter_source(k) is click.core.ParameterSource.COMMANDLINE}
    cfg = pipeline_config(root.command, default_map, path, given=given)
    out = Path(table_options(root.command, default_map, "pipeline")["out"]
               if "out" not in given else run.out)
    as_json = run.json
    show = not run.quiet and not as_json
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
    if run.status:
        rows = pipe.status()
        if as_json:
            print_json(rows)
        else:
            for r in rows:
                console.print(f"{r['stage']:<18} {'ok' if r['valid'] else 'to run':<7} "
                              f"{r['reason']}", markup=False)
        return
    summary = pipe.run(start=run.start, only=run.only)
    if as_json:
        print_json(summary)
        return
    console.print(f"pipeline done in {summary['seconds']:.0f} s: ran {len(summary['ran'])} "
                  f"stages, skipped {len(summary['skipped'])}")
    if summary.get("report"):
        report = Path(summary["report"])
        console.print(f"report: {report} and {report.with_suffix('.html')}")
