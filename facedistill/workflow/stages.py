"""The main job as stages: data -> teacher -> select -> students -> export -> bench -> report.

Each stage has a *key*: the sha256 of its config (the typed configs of the commands it runs,
:func:`facedistill.config.key_record`: the fields that make its result) and of its upstream
stages' output fingerprints (the sha256 of the files they wrote). The run folder's ``pipeline.json``
records, per stage, its key, status (``running`` or ``done``), outputs and timings. A re-run:

* skips a ``done`` stage whose key is unchanged and whose output files still hash the same;
* redoes a stage whose key changed - a changed config value therefore invalidates exactly the
  stages that read it and those downstream of them (a stage whose upstream re-ran but wrote
  byte-identical files stays valid);
* resumes a ``running`` stage with an unchanged key where it was interrupted: training stages
  continue from their ``last.pt`` (mid-training), the others start that stage again.

The config is the TOML file the CLI reads (``configs/demo.toml``): its command tables
(``[data.synth]``, ``[train]``, ``[select]``, ``[compress]``, ``[export]``, ``[bench]``,
``[pipeline]``) give each stage its options under the CLI's option names, checked by the same
config classes the commands are made from.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from facedistill import __version__
from facedistill.config import (
    BenchConfig,
    DistillConfig,
    ExportConfig,
    PipelineOptions,
    SelectConfig,
    SynthConfig,
    TrainConfig,
    TrainOptions,
    key_record,
)
from facedistill.errors import UserError
from facedistill.io import atomic_write_json, sha256_file

STATE_FILE = "pipeline.json"
STATE_FORMAT = "facedistill.pipeline/v1"
GROUPS = ("data", "teacher", "select", "students", "cascade", "export", "bench", "report")

# -- configuration ----------------------------------------------------------------------------

#: the command tables whose options the stages read, besides ``[pipeline]``'s own
STAGE_TABLES = ("data.synth", "train", "select", "compress", "export", "bench")


@dataclass(frozen=True)
class PipelineConfig:
    """The stages' configs, typed and checked (``facedistill.commands.pipeline.pipeline_config``
    builds it from the commands' own config classes: their defaults, then the config file, then
    the command line). ``synth`` is None when the data stage reads an existing dataset.
    ``student`` holds the Trainer options of ``[compress]`` (every student's but its arch)."""

    pipeline: PipelineOptions
    data: Path
    teacher: TrainConfig
    student: TrainOptions
    distill: DistillConfig
    select: SelectConfig
    export: ExportConfig
    bench: BenchConfig
    synth: SynthConfig | None = None
    synth_workers: int | None = None
    source: str | None = None

    def teacher_config(self) -> TrainConfig:
        return self.teacher

    def student_config(self, student: str) -> TrainConfig:
        return self.student.for_arch(student)

    def teacher_widths(self) -> list[float]:
        """One width per teacher (``[pipeline] teacher_widths``), or every teacher at
        ``[train] width`` when empty."""
        return list(self.pipeline.teacher_widths)

    def precisions(self) -> list[str]:
        """The ONNX variants each export writes."""
        return self.export.precisions


# -- the stages --------------------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    group: str
    deps: tuple[str, ...]
    params: dict[str, Any]
    run: Callable[[StageContext], dict[str, Any]]


@dataclass
class StageContext:
    """What a stage's function sees: where to write, whether to resume, how to report."""

    pipeline: Pipeline
    stage: Stage
    out: Path
    resume: bool
    force: bool
    upstream: dict[str, dict[str, Any]] = field(default_factory=dict)

    def message(self, text: str) -> None:
        self.pipeline.events(self.stage.name, "message", {"text": text})


def _fingerprint(outputs: Mapping[str, Any]) -> dict[str, str]:
    return dict(outputs.get("files", {}))


def _files(*paths: str | os.PathLike[str]) -> dict[str, str]:
    """{path: sha256} of the files a stage wrote (what downstream keys and skips check)."""
    return {str(p): sha256_file(p) for p in paths if Path(p).is_file()}


def _key(stage: Stage, upstream: Mapping[str, Mapping[str, Any]]) -> str:
    body = {"stage": stage.name, "params": stage.params,
            "upstream": {d: _fingerprint(upstream[d]) for d in stage.deps}}
    text = json.dumps(body, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class Pipeline:
    """Plan, skip, resume and run the stages of one config into one run folder."""

    def __init__(self, cfg: PipelineConfig, out: str | os.PathLike[str], *,
                 reporter_factory: Callable[[str], Any] | None = None,
                 events: Callable[[str, str, dict[str, Any]], None] | None = None) -> None:
        self.cfg = cfg
        self.out = Path(out)
        self.reporter_factory = reporter_factory or (lambda name: None)
        self.events = events or (lambda stage, what, info: None)
        self.stages = self._plan()
        self.state = self._read_state()

    # -- plan ---------------------------------------------------------------------------------
    @property
    def students(self) -> list[str]:
        return list(self.cfg.pipeline.students)

    @property
    def twins(self) -> list[str]:
        """Students that also get a label-only twin with the same budget (the report's
        distillation-gain table)."""
        return list(self.cfg.pipeline.twins)

    @property
    def teachers(self) -> list[str]:
        """The teacher stages: ``teacher`` (seed ``train.seed``) and, for an ensemble,
        ``teacher:1`` ... (seeds ``train.seed + i``, widths ``teacher_widths[i]`` when given);
        every student distils from all of them."""
        count = self.cfg.pipeline.n_teachers
        return ["teacher", *(f"teacher:{i}" for i in range(1, count))]

    @property
    def cascades(self) -> list[str]:
        """With ``[pipeline] cascade``: ``cascade`` (the teacher as its whole-image subnet) and
        ``cascade-small`` (a student and part subnets distilled from the cascade's)."""
        return ["cascade", "cascade-small"] if self.cfg.pipeline.cascade else []

    @property
    def models(self) -> list[str]:
        """Every teacher, then the students, then the cascades: what export and bench cover
        (an ensemble's latency is that of running all its members)."""
        return [*self.teachers, *self.students, *self.cascades]

    @staticmethod
    def source_stage(model: str) -> str:
        """The stage whose checkpoint ``model`` (a name of :attr:`models`) is."""
        if model.startswith("teacher"):
            return model
        if model in ("cascade", "cascade-small"):
            return model.replace("-", ":")
        return f"student:{model}"

    def frl_config(self) -> TrainConfig:
        """The FRL net whose mean boxes place the cascade's regions: the teacher's training
        at ``[pipeline] frl_width``."""
        return replace(self.cfg.teacher_config(), arch="frl",
                       width=self.cfg.pipeline.frl_width)

    def parts_config(self, small: bool = False) -> TrainConfig:
        """The cascade's fixed-box part subnets (the teacher's training), or with ``small``
        those of cascade-small (the students' training, distilled from the former)."""
        base = (self.cfg.student_config(self.cfg.pipeline.cascade_whole) if small
                else self.cfg.teacher_config())
        width = self.cfg.pipeline.small_parts_width if small else self.cfg.pipeline.parts_width
        return replace(base, arch="parts", width=width, frl=str(self.out / "frl"),
                       part_boxes="fixed")

    def _plan(self) -> list[Stage]:
        cfg = self.cfg
        teacher = cfg.teacher.to_record()
        data_params: dict[str, Any] = {"root": str(cfg.data), "synth": None}
        if cfg.synth is not None:
            data_params["synth"] = asdict(cfg.synth)
        stages = [Stage("data", "data", (), data_params, _run_data)]
        widths = cfg.pipeline.teacher_widths
        for i, name in enumerate(self.teachers):
            member = {**teacher, "seed": teacher["seed"] + i}
            if widths:
                member["width"] = widths[i]
            stages.append(Stage(name, "teacher", ("data",), {"train": member}, _run_teacher))
        teachers = tuple(self.teachers)
        selected = cfg.distill.method == "selected"
        if selected:
            stages.append(Stage("select", "select", ("data", *teachers),
                                key_record(self.selection_config()), _run_select))
        for student in self.students:
            deps = ("data", *teachers, *(("select",) if selected else ()))
            params = {"train": cfg.student_config(student).to_record(),
                      **key_record(cfg.distill)}
            stages.append(Stage(f"student:{student}", "students", deps, params, _run_student))
            if student in self.twins:
                twin = {**params, **key_record(self.twin_config())}
                stages.append(Stage(f"twin:{student}", "students", ("data", *teachers), twin,
                                    _run_student))
        if cfg.pipeline.cascade:
            stages += self._cascade_stages()
        export = key_record(cfg.export)
        for model in self.models:
            src = self.source_stage(model)
            stages.append(Stage(f"export:{model}", "export", ("data", src), export, _run_export))
        bench = key_record(cfg.bench) | {"precisions": list(cfg.pipeline.bench_precisions)}
        stages.append(Stage("bench", "bench", ("data", *(f"export:{m}" for m in self.models)),
                            bench, _run_bench))
        report_deps = (*teachers, *(f"student:{m}" for m in self.students),
                       *(self.source_stage(m) for m in self.cascades),
                       *(f"twin:{m}" for m in self.twins),
                       *(("select",) if selected else ()), "bench")
        stages.append(Stage("report", "report", report_deps, {"version": 1}, _run_report))
        return stages

    def _cascade_stages(self) -> list[Stage]:
        """frl -> parts -> cascade (with the teacher), parts:small (distilled from parts) ->
        cascade:small (with the student ``cascade_whole``)."""
        cfg = self.cfg
        if cfg.teacher.variant != "wild":
            raise UserError("the cascade is for unaligned faces: it needs [train] variant = "
                            "\"wild\" (face-box crops)", field="pipeline.cascade")
        whole = f"student:{cfg.pipeline.cascade_whole}"
        head = {"switch": "hard", "relations": True}
        return [
            Stage("frl", "cascade", ("data",), {"train": self.frl_config().to_record()},
                  _run_train),
            Stage("parts", "cascade", ("data", "frl"),
                  {"train": self.parts_config().to_record()}, _run_train),
            Stage("cascade", "cascade", ("data", "teacher", "parts"), head, _run_cascade),
            Stage("parts:small", "cascade", ("data", "frl", "parts"),
                  {"train": self.parts_config(small=True).to_record(),
                   **key_record(cfg.distill)}, _run_small_parts),
            Stage("cascade:small", "cascade", ("data", whole, "parts:small"), head,
                  _run_cascade),
        ]

    def selection_config(self) -> SelectConfig:
        """``[select]`` with ``[compress] k``: the students' K."""
        return replace(self.cfg.select, k=self.cfg.distill.k)

    def twin_config(self) -> DistillConfig:
        """A twin: the student's budget, from the labels alone."""
        return replace(self.cfg.distill, method="labels", weight=(), unlabeled=None,
                       unlabeled_n=None)

    def stage(self, name: str) -> Stage:
        for st in self.stages:
            if st.name == name:
                return st
        raise UserError(f"no stage {name!r} (stages: {', '.join(s.name for s in self.stages)})")

    def _select(self, name: str | None) -> list[Stage]:
        if name is None:
            return []
        chosen = [s for s in self.stages if name in (s.name, s.group)]
        if not chosen:
            known = ", ".join(dict.fromkeys([*GROUPS, *(s.name for s in self.stages)]))
            raise UserError(f"unknown stage {name!r} (known: {known})", field="stage")
        return chosen

    # -- state --------------------------------------------------------------------------------
    def _read_state(self) -> dict[str, Any]:
        path = self.out / STATE_FILE
        if not path.exists():
            return {"format": STATE_FORMAT, "stages": {}}
        try:
            state = json.loads(path.read_text())
        except (json.JSONDecodeError, OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read the pipeline state ({exc}); delete it to start over",
                            path=path) from None
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise UserError(f"not a {STATE_FORMAT} state file; delete it to start over",
                            path=path)
        state.setdefault("stages", {})
        return state

    def _write_state(self) -> None:
        self.state["version"] = __version__
        self.state["config"] = self.cfg.source
        atomic_write_json(self.out / STATE_FILE, self.state)

    def _valid(self, record: Mapping[str, Any] | None, key: str) -> bool:
        if not record or record.get("status") != "done" or record.get("key") != key:
            return False
        files = record.get("outputs", {}).get("files", {})
        return all(Path(p).is_file() and sha256_file(p) == h for p, h in files.items())

    def status(self) -> list[dict[str, Any]]:
        """Per stage: would it run now, and why."""
        rows = []
        fingerprints: dict[str, dict[str, Any]] = {}
        for st in self.stages:
            rec = self.state["stages"].get(st.name)
            ready = all(d in fingerprints for d in st.deps)
            key = _key(st, fingerprints) if ready else None
            valid = ready and self._valid(rec, key or "")
            if valid:
                fingerprints[st.name] = rec["outputs"]
            why = ("up to date" if valid else "never ran" if rec is None else
                   "interrupted" if rec.get("status") == "running" and rec.get("key") == key else
                   "upstream or config changed" if rec.get("key") != key else "outputs changed")
            rows.append({"stage": st.name, "valid": valid, "reason": why})
        return rows

    # -- run ----------------------------------------------------------------------------------
    def run(self, *, start: str | None = None, only: str | None = None) -> dict[str, Any]:
        """Run what is needed. ``start`` redoes that stage (or group) and everything after it;
        ``only`` limits the run to that stage (or group), run or resumed as needed (redone with
        ``start`` too); its upstream stages must be up to date."""
        self.out.mkdir(parents=True, exist_ok=True)
        forced = set()
        if start is not None:
            first = self.stages.index(self._select(start)[0])
            forced = {s.name for s in self.stages[first:]}
        only_set = {s.name for s in self._select(only)} if only else None
        outputs: dict[str, dict[str, Any]] = {}
        ran, skipped = [], []
        t_total = time.perf_counter()
        for st in self.stages:
            if only_set is not None and only_set <= set(ran) | set(skipped):
                break  # --only: what comes after the chosen stages is left alone
            missing = [d for d in st.deps if d not in outputs]
            if missing:  # an upstream stage was not run (only/--from) and is not valid
                raise UserError(f"stage {st.name!r} needs {', '.join(missing)} first: run the "
                                "pipeline without --only/--from once")
            key = _key(st, outputs)
            rec = self.state["stages"].get(st.name)
            wanted = st.name in forced
            if self._valid(rec, key) and not wanted:
                outputs[st.name] = rec["outputs"]
                skipped.append(st.name)
                self.events(st.name, "skip", {"seconds": rec.get("seconds")})
                continue
            if only_set is not None and st.name not in only_set:
                raise UserError(f"stage {st.name!r} is not up to date; --only {only} needs it: "
                                "run the pipeline without --only first")
            resume = bool(rec and rec.get("status") == "running" and rec.get("key") == key
                          and not wanted)
            self.state["stages"][st.name] = {"key": key, "status": "running", "started": _now(),
                                             "resumed": resume}
            self._write_state()
            self.events(st.name, "start", {"resume": resume})
            ctx = StageContext(self, st, self.out, resume=resume, force=not resume,
                               upstream={d: outputs[d] for d in st.deps})
            t0 = time.perf_counter()
            result = st.run(ctx)
            seconds = time.perf_counter() - t0
            self.state["stages"][st.name].update(
                {"status": "done", "outputs": result, "finished": _now(), "seconds": seconds})
            self._write_state()
            outputs[st.name] = result
            ran.append(st.name)
            self.events(st.name, "done", {"seconds": seconds, "outputs": result})
        summary = {"out": str(self.out), "ran": ran, "skipped": skipped,
                   "seconds": time.perf_counter() - t_total,
                   "report": outputs.get("report", {}).get("markdown")}
        self.state["last_run"] = summary | {"finished": _now()}
        self._write_state()
        return summary


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- stage functions ---------------------------------------------------------------------------


def _run_data(ctx: StageContext) -> dict[str, Any]:
    from facedistill.data.celeba import CelebAIndex

    cfg = ctx.pipeline.cfg
    root = cfg.data
    result: dict[str, Any] = {"root": str(root)}
    if cfg.synth is not None:
        from facedistill.data.synth import generate

        man = generate(root, cfg.synth, workers=cfg.synth_workers)
        result["reused"] = bool(man.get("reused"))
    index = CelebAIndex.load(root)
    result["splits"] = index.split_sizes()
    files = [index.files[r] for r in ("attributes", "partition") if r in index.files]
    if cfg.synth is not None:  # the manifest carries the generator version: new images, new fingerprint
        from facedistill.data.synth import MANIFEST

        files.append(root / MANIFEST)
    result["files"] = _files(*files)
    return result


def _run_teacher(ctx: StageContext) -> dict[str, Any]:
    from facedistill.pipeline.evaluate import evaluate_checkpoint
    from facedistill.pipeline.train import train

    member = ctx.stage.params["train"]
    cfg = replace(ctx.pipeline.cfg.teacher_config(), seed=member["seed"], width=member["width"])
    out = ctx.out / ctx.stage.name.replace(":", "-")
    train(cfg, ctx.pipeline.cfg.data, out, resume=ctx.resume, force=ctx.force,
          reporter=ctx.pipeline.reporter_factory(ctx.stage.name))
    report = evaluate_checkpoint(out, data=ctx.pipeline.cfg.data, split="test",
                                 workers=cfg.workers, device=cfg.device)
    atomic_write_json(out / "eval_test.json", report)
    return {"run": str(out), "checkpoint": str(out / "best.pt"),
            "mean_balanced": report["mean_balanced"], "eval": str(out / "eval_test.json"),
            "files": _files(out / "best.pt")}


def _teacher_runs(ctx: StageContext) -> list[str]:
    """The run folders of the pipeline's teacher stages (one, or an ensemble), in order."""
    return [ctx.upstream[name]["run"] for name in ctx.pipeline.teachers]


def _run_select(ctx: StageContext) -> dict[str, Any]:
    from facedistill.pipeline.selection import run_selection

    target = ctx.out / "selection" / "selection.json"
    rec = run_selection(_teacher_runs(ctx), ctx.pipeline.selection_config(),
                        data=ctx.pipeline.cfg.data, out=target)
    plot = target.parent / "selection.png"
    return {"selection": str(target), "plot": str(plot) if plot.exists() else None,
            "k": rec.k, "seconds": dict(rec.seconds), "files": _files(target)}


def _run_student(ctx: StageContext) -> dict[str, Any]:
    from facedistill.pipeline.compress import compress

    kind, student = ctx.stage.name.split(":", 1)
    distill = ctx.pipeline.cfg.distill if kind == "student" else ctx.pipeline.twin_config()
    out = ctx.out / "students" / (student if kind == "student" else f"{student}-labels")
    selection = ctx.upstream.get("select", {}).get("selection") \
        if distill.method == "selected" else None
    result = compress(ctx.pipeline.cfg.student_config(student),
                      _teacher_runs(ctx), ctx.pipeline.cfg.data, out, distill,
                      selection=selection, resume=ctx.resume, force=ctx.force,
                      reporter=ctx.pipeline.reporter_factory(ctx.stage.name))
    row = result["rows"][0]
    return {"run": str(out), "checkpoint": str(out / "best.pt"),
            "mean_balanced": row["mean_balanced"], "compare": str(out / "compare.json"),
            "files": _files(out / "best.pt")}


def _run_export(ctx: StageContext) -> dict[str, Any]:
    from facedistill.export import export_model
    from facedistill.export.api import GateError

    model = ctx.stage.name.split(":", 1)[1]
    src = ctx.upstream[ctx.pipeline.source_stage(model)]
    out = ctx.out / "export" / model.replace(":", "-")
    data = ctx.pipeline.cfg.data
    try:
        report = export_model(src["checkpoint"], out, ctx.pipeline.cfg.export, calib_data=data,
                              eval_data=data)
    except GateError as exc:
        # INT8 that loses too much accuracy is left out of this model's deployment (the
        # report says by how much); any other export error stops the pipeline.
        report = exc.report
        ctx.message(f"{exc.message}; continuing without INT8 for {model}")
    files = sorted(str(f) for f in out.glob("*.onnx"))
    return {"dir": str(out), "report": str(out / "export_report.json"), "onnx": files,
            "variants": report.ok_onnx(), "gate": report.gate.to_json(),
            "files": _files(*files)}


def _run_train(ctx: StageContext) -> dict[str, Any]:
    """A model the cascade is made of, trained from the labels (frl, parts)."""
    from facedistill.pipeline.train import train

    cfg = TrainConfig.from_record(ctx.stage.params["train"])
    out = ctx.out / ctx.stage.name
    train(cfg, ctx.pipeline.cfg.data, out, resume=ctx.resume, force=ctx.force,
          reporter=ctx.pipeline.reporter_factory(ctx.stage.name))
    return {"run": str(out), "checkpoint": str(out / "best.pt"), "files": _files(out / "best.pt")}


def _run_small_parts(ctx: StageContext) -> dict[str, Any]:
    """cascade-small's part subnets, distilled from the cascade's by ``[compress] method``."""
    from facedistill.pipeline.compress import compress

    out = ctx.out / "students" / "parts-small"
    result = compress(TrainConfig.from_record(ctx.stage.params["train"]),
                      [ctx.upstream["parts"]["run"]], ctx.pipeline.cfg.data, out,
                      ctx.pipeline.cfg.distill, resume=ctx.resume, force=ctx.force,
                      reporter=ctx.pipeline.reporter_factory(ctx.stage.name))
    return {"run": str(out), "checkpoint": str(out / "best.pt"),
            "mean_balanced": result["rows"][0]["mean_balanced"],
            "files": _files(out / "best.pt")}


def _run_cascade(ctx: StageContext) -> dict[str, Any]:
    """Whole-image subnet + part subnets -> the cascade (switch and relations on val)."""
    from facedistill.pipeline.cascade import assemble

    small = ctx.stage.name == "cascade:small"
    cfg = ctx.pipeline.cfg
    whole = ctx.upstream[f"student:{cfg.pipeline.cascade_whole}" if small else "teacher"]
    parts = ctx.upstream["parts:small" if small else "parts"]
    out = ctx.out / ctx.stage.name.replace(":", "-")
    rec = assemble(whole["run"], parts["run"], out, data=cfg.data, **ctx.stage.params)
    return {"run": str(out), "checkpoint": str(out / "best.pt"),
            "mean_balanced": rec["mean_balanced"]["cascade"], "record": str(out / "cascade.json"),
            "files": _files(out / "best.pt")}


def _run_bench(ctx: StageContext) -> dict[str, Any]:
    from facedistill.bench import run_bench, write_outputs

    cfg = ctx.pipeline.cfg
    artifacts = []
    for model in ctx.pipeline.models:
        variants = ctx.upstream[f"export:{model}"]["variants"]
        artifacts += [variants[prec] for prec in cfg.pipeline.bench_precisions
                      if prec in variants]
    out = ctx.out / "bench"
    result = run_bench(artifacts, cfg.bench, data=cfg.data)
    paths = {"json_path": out / "bench.json", "md_path": out / "bench.md",
             "plot_path": out / "bench.png"}
    write_outputs(result, **paths)
    plots = sorted(str(f) for f in out.glob("*.png"))
    return {"json": str(paths["json_path"]), "md": str(paths["md_path"]), "plots": plots,
            "files": _files(paths["json_path"])}


def _run_report(ctx: StageContext) -> dict[str, Any]:
    from facedistill.workflow.report import build_report

    paths = build_report(ctx.pipeline, ctx.upstream, ctx.out)
    return {"markdown": str(paths["markdown"]), "html": str(paths["html"]),
            "json": str(paths["json"]), "files": _files(paths["json"])}

