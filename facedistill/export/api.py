"""``export_model``: a checkpoint to FP32/FP16/INT8 ONNX (+ TensorRT engines), each variant
checked, scored on the validation split and recorded in ``export_report.json``.

Files written to ``out_dir`` (``<arch>`` is the checkpoint's architecture, e.g. ``snet3``):

* ``<arch>.fp32.onnx`` - always (it is the source of the other variants and the reference
  of their accuracy deltas); parity with PyTorch checked at batch 1 and the largest batch;
* ``<arch>.fp16.onnx`` - when asked for;
* ``<arch>.int8.onnx`` - INT8 by a CPU recipe (``cpu``, the default, or ``cpu-vnni``) and
  ``<arch>.int8-trt.onnx`` - INT8 by the ``tensorrt`` recipe (the default with ``trt=True``),
  see :data:`facedistill.export.quantize.INT8_RECIPES`;
* ``<arch>.<precision>.engine`` + ``<arch>.<precision>.engine.json`` - with ``trt=True``
  (the int8 engine from ``<arch>.int8-trt.onnx``), plus the shared ``trt_timing.cache``;
* ``export_report.json`` - per variant: path, size, sha256, checker, parity (fp32),
  accuracy ``{split, mean_balanced, delta_to_fp32, n_images}`` (fractions, as in
  ``facedistill eval``), largest probability difference to fp32, for INT8 the recipe, the
  gate's record and the largest difference between ONNX Runtime's integer kernels and its
  float emulation of the Q/DQ graph on this CPU; seconds per step; the machine's CPU class.

The INT8 gate: an INT8 file is kept only if its mean balanced accuracy is at most
``max_drop`` percentage points below FP32's on ``eval_split`` (``gate=False`` keeps it
anyway), measured on the machine that exports, with the kernels its target runs: ONNX
Runtime's integer kernels for a CPU recipe this CPU can run without saturating, the float
emulation otherwise (TensorRT; ``cpu-vnni`` exported on a CPU without VNNI). A rejected file is
not written; a previous accepted one of the same source stays (see below).

An export is one unit (:mod:`facedistill.export.folder`): everything is built in a staging
folder inside ``out_dir`` and swapped in only when complete, so a failing, interrupted or
killed export leaves the previous export byte-identical. Every step still runs when another
fails (FP16, calibration, each INT8 recipe, each engine), so the error names every failure:
:class:`ExportFailed` (the CLI exits 2) with the attempt's report attached. The one partial
result that is committed is a complete export without INT8 files the gate rejected
(:class:`GateError`). Files of the previous export that the new one does not rewrite stay
when they come from the same source (listed with ``carried_from``) and are removed when they
come from another model (they would be stale beside the new fp32).

Only the FP32 export itself needs torch: ``checkpoint`` may also be an FP32 ``.onnx`` export,
then nothing here imports torch (data must then be given: the ONNX does not record it).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from facedistill import __version__
from facedistill.config import ExportConfig
from facedistill.errors import UserError
from facedistill.export.folder import ExportFolder
from facedistill.export.onnx import (
    ExportError,
    check_checkpoint_version,
    check_onnx,
    check_opset,
    file_record,
    get_metadata,
    load_onnx,
    ort_session,
    update_metadata,
)
from facedistill.export.report import REPORT_FORMAT, REPORT_NAME, ExportReport
from facedistill.io import pause_point, sha256_file, write_error
from facedistill.runtime.metadata import INPUT_NAME, ModelInfo, parse_metadata

StepProgress = Callable[[str, int, int], None]


def _resolve_data(data: str | os.PathLike[str] | None, default: str | None, what: str,
                  where: str | os.PathLike[str], option: str = "--data") -> Path:
    if data is not None:
        root = Path(data)
        if not root.exists():
            raise UserError(f"{what} folder does not exist", path=root)
        return root
    if not default:
        raise UserError(f"no {what} folder: the model does not say where its data is; pass "
                        f"{option}", path=where)
    if not Path(default).exists():
        raise UserError(f"the run's data folder {default} is gone; pass {option}", path=where)
    return Path(default)


def _check_attributes(names: Sequence[str], info: ModelInfo, root: Path) -> None:
    if list(names) != list(info.attributes):
        raise UserError(f"the dataset's {len(names)} attributes differ from the model's "
                        f"{len(info.attributes)}", path=root)


def _step(progress: StepProgress | None, what: str, done: int, total: int) -> None:
    if progress is not None:
        progress(what, done, total)


def _int8_plan(wanted: Sequence[str], recipes: Sequence[str] | str | None, trt: bool
               ) -> dict[str, str]:
    """INT8 variant name -> recipe name: ``int8`` (``<arch>.int8.onnx``, a CPU recipe) and
    ``int8-trt`` (``<arch>.int8-trt.onnx``, the TensorRT recipe). ``None``/``"auto"``: ``cpu``,
    plus ``tensorrt`` when engines are built."""
    from facedistill.export.quantize import DEFAULT_INT8_RECIPE, int8_recipe

    if "int8" not in wanted:
        return {}
    items = [recipes] if recipes is None or isinstance(recipes, str) else list(recipes)
    names = [r.strip().lower() for item in items if item is not None
             for r in str(item).split(",") if r.strip()]
    if not names or names == ["auto"]:
        names = [DEFAULT_INT8_RECIPE] + (["tensorrt"] if trt else [])
    plan: dict[str, str] = {}
    for name in names:
        rec = int8_recipe(name)
        key = "int8-trt" if rec.target == "tensorrt" else "int8"
        if key in plan and plan[key] != name:
            raise UserError(f"INT8 recipes {plan[key]!r} and {name!r} both write the CPU file "
                            "<arch>.int8.onnx; choose one", field="int8_recipe")
        plan[key] = name
    return plan


def _gate_kernels(recipe: Any, cpu_class: str) -> str:
    """How an INT8 file is scored for its gate on this machine: ``integer`` (ONNX Runtime's
    own kernels, the file's real behaviour here) when this CPU is one of its targets, else
    ``emulated`` (Q/DQ in float32: what its target - TensorRT, a VNNI CPU - computes)."""
    from facedistill.runtime.cpu import saturates_full_range

    if recipe.target != "onnxruntime":
        return "emulated"
    if recipe.weight_bits > 7 and saturates_full_range(cpu_class):
        return "emulated"
    return "integer"


def _evaluate(paths: dict[str, Path], info: ModelInfo, images: Any, labels: np.ndarray,
              names: list[str], split: str, emulated: set[str], progress: StepProgress | None
              ) -> tuple[dict[str, dict[str, Any]], dict[str, float], dict[str, dict[str, float]]]:
    """Score every variant in one pass over the images (each decoded once).

    INT8 variants run twice, with ONNX Runtime's integer kernels and with Q/DQ emulated in
    float32; the gate scores the mode that ``emulated`` names for it (integer otherwise).
    Returns the scores, the seconds spent per variant and per variant the largest probability
    difference to fp32 (``fp32``) and, for INT8, between the two modes (``kernels``).
    """
    from facedistill.bench.accuracy import balanced_accuracy, predict_images

    runs: list[tuple[str, bool]] = []
    for p in paths:
        runs.append((p, p in emulated))
        if p.startswith("int8"):
            runs.append((p, p not in emulated))
    sessions = [ort_session(paths[p], emulate_qdq=emu) for p, emu in runs]
    spent = dict.fromkeys(paths, 0.0)
    width = len(info.attributes)

    def run_all(x: np.ndarray) -> np.ndarray:
        outs = []
        for (p, _emu), sess in zip(runs, sessions, strict=True):
            t0 = time.perf_counter()
            outs.append(sess.run(["probabilities"], {INPUT_NAME: x})[0])
            spent[p] += time.perf_counter() - t0
        return np.concatenate(outs, axis=1)

    probs = predict_images(run_all, info.preprocess, images, batch_size=64,
                           progress=lambda d, t: _step(progress, f"evaluate on {split}", d, t))
    part = {run: probs[:, k * width:(k + 1) * width] for k, run in enumerate(runs)}
    results: dict[str, dict[str, Any]] = {}
    diffs: dict[str, dict[str, float]] = {}
    ref = part.get(("fp32", False))
    for p in paths:
        gated = part[(p, p in emulated)]
        results[p] = balanced_accuracy(gated, labels, info.thresholds, names)
        diffs[p] = {}
        if ref is not None:
            diffs[p]["fp32"] = float(np.max(np.abs(gated - ref)))
        if p.startswith("int8"):
            diffs[p]["kernels"] = float(np.max(np.abs(part[(p, True)] - part[(p, False)])))
    return results, spent, diffs


def _error_line(exc: BaseException) -> str:
    """One line for the report: a UserError as the CLI prints it, anything else with its type."""
    if isinstance(exc, UserError):
        return exc.format()
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class ExportFailed(ExportError):
    """Export steps failed. ``failed`` names them (``int8``, ``fp16 engine`` ...) and
    ``report`` is the attempt's :class:`ExportReport` (``status: failed`` with each error).
    ``committed`` says whether the export was swapped into the folder anyway (only when the
    INT8 gate was the sole failure, see :class:`GateError`); otherwise the folder holds the
    previous export, byte for byte."""

    def __init__(self, message: str, *, failed: list[str], report: ExportReport,
                 committed: bool = False, **where: Any) -> None:
        super().__init__(message, **where)
        self.failed = failed
        self.report = report
        self.committed = committed


class GateError(ExportFailed):
    """The export failed only because INT8 files lost more accuracy than ``max_drop``: it was
    committed without them. ``rejected`` names them; ``report`` is the :class:`ExportReport`
    committed."""

    def __init__(self, message: str, *, rejected: list[str], report: ExportReport,
                 **where: Any) -> None:
        super().__init__(message, failed=rejected, report=report, committed=True, **where)
        self.rejected = rejected


class _Steps:
    """Runs the export's steps so that one failing precision never hides the others: an
    error is recorded on its variant (``status: failed``, ``error``) and collected, and the
    other steps still run (their results are in the report the error carries)."""

    def __init__(self, report: dict[str, Any], folder: ExportFolder | None = None) -> None:
        self.report = report
        self.folder = folder
        self.errors: list[tuple[str, BaseException]] = []
        self.gated: set[str] = set()  # the steps the INT8 gate failed

    def fail(self, table: str, name: str, exc: BaseException, *, gate: bool = False) -> None:
        if self.folder is not None:  # a failed write names the file's place, not the staging
            exc = self.folder.public_error(write_error(exc, self.folder.out))
        entry = self.report[table].setdefault(name, {})
        entry.update(status="failed", error=_error_line(exc))
        for key in ("size_bytes", "sha256"):
            entry.pop(key, None)
        self.errors.append((f"{name}{' engine' if table == 'engines' else ''}", exc))
        if gate:
            self.gated.add(self.errors[-1][0])

    def run(self, table: str, name: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - recorded, reported, raised at the end
            self.fail(table, name, exc)
            return None

    @property
    def only_gate(self) -> bool:
        """Nothing failed but the INT8 gate (then the export is still committed)."""
        return bool(self.errors) and {name for name, _ in self.errors} <= self.gated

    def raise_if_failed(self, out: Path, created: bool = False) -> None:
        """``created``: ``out`` is new (made by this export, removed again when it fails)."""
        if not self.errors:
            return
        names = [name for name, _ in self.errors]
        gated = self.only_gate
        kind: type[ExportFailed] = GateError if gated else ExportFailed
        extra: dict[str, Any] = ({"rejected": names} if gated else {"failed": names})
        where = (f"the export was written without {', '.join(names)}; report: "
                 f"{out / REPORT_NAME}" if gated else
                 f"nothing was written: {out} was new and is removed again" if created else
                 f"nothing was written: {out} is as it was")
        report = ExportReport.from_json(self.report)
        if len(self.errors) == 1 and isinstance(self.errors[0][1], UserError):
            exc = self.errors[0][1]
            raise kind(f"{exc.message} ({where})", path=exc.path, line=exc.line,
                       field=exc.field, report=report, **extra)
        what = "; ".join(f"{name}: {_error_line(exc)}" for name, exc in self.errors)
        raise kind(f"{len(self.errors)} export steps failed - {what} ({where})",
                   report=report, **extra)


@dataclass(frozen=True)
class ExportRequest:
    """What to export, every value checked (:meth:`check`) before any file is read."""

    precisions: tuple[str, ...]
    int8_plan: dict[str, str]  # variant (int8, int8-trt) -> recipe
    opset: int = 18
    calib_n: int = 512
    calib_method: str = "entropy"
    max_drop: float = 1.0
    gate: bool = True
    eval_split: str | None = "val"
    trt: bool = False
    profile: tuple[int, int, int] = (1, 8, 32)
    workspace_mb: int | None = None

    @classmethod
    def from_config(cls, cfg: ExportConfig) -> ExportRequest:
        """The request of ``cfg``, with what only the export can check (the opset, the INT8
        recipes, the TensorRT profile and workspace, the split) checked too."""
        from facedistill.runtime.engine import parse_profile

        wanted = cfg.precisions  # checked by the config
        check_opset(cfg.opset)
        plan = _int8_plan(wanted, cfg.int8_recipe, cfg.trt)
        profile = parse_profile(list(cfg.trt_profile))
        if cfg.workspace_mb is not None:
            from facedistill.export.tensorrt import workspace_bytes

            workspace_bytes(cfg.workspace_mb)
        if cfg.eval_split is not None:
            from facedistill.data.celeba import split_id

            split_id(cfg.eval_split)  # a ConfigError naming the split when unknown
        return cls(precisions=tuple(wanted), int8_plan=plan, opset=cfg.opset,
                   calib_n=cfg.calib_n, calib_method=cfg.calib_method,
                   max_drop=float(cfg.max_drop), gate=cfg.gate, eval_split=cfg.eval_split,
                   trt=cfg.trt, profile=profile, workspace_mb=cfg.workspace_mb)


@dataclass
class _Source:
    """The model to export: a checkpoint (needs torch) or an fp32 ONNX export (does not)."""

    path: Path
    arch: str
    record: dict[str, Any]  # the report's ``source``
    ckpt: dict[str, Any] | None = None
    data_default: str | None = None
    variant: str | None = None

    @classmethod
    def open(cls, src: Path) -> _Source:
        if src.suffix.lower() == ".onnx":
            info = parse_metadata(get_metadata(load_onnx(src)), source=str(src))
            if info.precision != "fp32":
                raise ExportError(f"the source must be an fp32 export, this one is "
                                  f"{info.precision}", path=src, field="precision")
            return cls(src, str(info.arch.get("arch")), {
                "onnx": str(src), "sha256": info.source_sha256, "version": info.version,
                "note": "exported earlier; parity with PyTorch not re-checked"})
        from facedistill.nn.checkpoint import load_checkpoint

        ckpt = load_checkpoint(src)
        note = check_checkpoint_version(ckpt.get("version"), ckpt["path"])
        data = ckpt.get("data") or {}
        return cls(src, str(ckpt["arch"]["arch"]), {
            "checkpoint": ckpt["path"], "sha256": sha256_file(ckpt["path"]),
            "version": ckpt.get("version"), "note": note}, ckpt=ckpt,
            data_default=data.get("root"), variant=data.get("variant") or "aligned")


def export_model(
    checkpoint: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    cfg: ExportConfig | None = None,
    *,
    calib_data: str | os.PathLike[str] | None = None,
    eval_data: str | os.PathLike[str] | None = None,
    progress: StepProgress | None = None,
    **fields: Any,
) -> ExportReport:
    """Export ``checkpoint`` (run folder, ``.pt``, or an FP32 ``.onnx`` export) into
    ``out_dir``; returns the :class:`ExportReport` also written to
    ``out_dir/export_report.json``.

    ``cfg`` (:class:`~facedistill.config.ExportConfig`, the ``export`` command's options) says
    what to write and check; ``fields`` override its fields (``precision="fp32,int8"``).
    ``calib_data`` / ``eval_data`` default to the dataset recorded in the checkpoint;
    calibration uses ``calib_n`` seeded-random *training* images, evaluation the whole
    ``split`` (``no_eval`` skips evaluation, which the INT8 gate then refuses).
    ``int8_recipe`` names the INT8 recipes (:data:`~facedistill.export.quantize.INT8_RECIPES`;
    ``auto``: ``cpu``, plus ``tensorrt`` with ``trt``). ``max_drop`` is in percentage points of
    mean balanced accuracy. ``trt_profile`` is the TensorRT profile's (min, opt, max); the
    FP32 parity check runs at batch 1 and the max. ``progress(step, done, total)`` is called as
    work proceeds.

    The export is built in a staging folder and swapped in only when complete
    (:mod:`facedistill.export.folder`). A failing step does not stop the others, but then
    nothing is swapped in: :class:`ExportFailed` names every failure and carries the report;
    ``out_dir`` keeps the previous export byte for byte. The exception: when only the INT8
    gate failed, the export is committed without the rejected files and :class:`GateError`
    is raised.
    """
    t_start = time.perf_counter()
    request = ExportRequest.from_config(replace(cfg or ExportConfig(), **fields))
    src = Path(checkpoint)
    if not src.exists():  # before importing torch to read it, or creating out_dir
        raise UserError("no such checkpoint file or run folder", path=src)
    if request.trt:  # fail before any work when TensorRT or a GPU is missing
        from facedistill.runtime.engine import gpu_identity, require_cudart, require_tensorrt

        require_tensorrt()
        gpu_identity(0, require_cudart())
    source = _Source.open(src)
    eval_root = calib_root = None
    if request.eval_split is not None:  # --data, else the run's data
        eval_root = _resolve_data(eval_data, source.data_default, "evaluation data", src)
    if request.int8_plan:  # --calib-data, else the run's data, else --data
        fallback = source.data_default
        if calib_data is None and eval_data is not None and not (
                fallback and Path(fallback).exists()):
            fallback = str(eval_data)
        calib_root = _resolve_data(calib_data, fallback, "calibration data", src,
                                   "--calib-data or --data")
    with ExportFolder(out_dir) as folder:  # created only now: bad input leaves no --out
        job = _Export(request, source, folder, progress)
        try:
            job.fp32()
            if "fp16" in request.precisions:
                job.fp16()
            if request.int8_plan:
                assert calib_root is not None
                job.int8(calib_root)
            job.score_and_gate(eval_root)
            if request.trt:
                job.engines()
            job.report["seconds"]["total"] = time.perf_counter() - t_start
            if not job.steps.errors or job.steps.only_gate:
                job.commit()
        except UserError as exc:  # e.g. a corrupt evaluation image: nothing is committed
            raise folder.public_error(write_error(exc, folder.out)) from None
    job.steps.raise_if_failed(folder.out, created=folder.created)
    return ExportReport.from_json(job.report)


class _Export:
    """One export's steps, in order: :meth:`fp32` (the source of the others: its failure
    ends the export), :meth:`fp16`, :meth:`int8` (one file per recipe), :meth:`score_and_gate`
    (every variant on the evaluation split, the INT8 gate, accuracy into each file's
    metadata), :meth:`engines` (TensorRT), :meth:`commit`. Files are written into the
    staging folder; the report records the paths they will have. The report is assembled
    as a dict (``self.report``, the JSON of an :class:`ExportReport`); what leaves the
    package is the typed record."""

    def __init__(self, request: ExportRequest, source: _Source, folder: ExportFolder,
                 progress: StepProgress | None) -> None:
        from facedistill.runtime.cpu import cpu_record

        self.request, self.source, self.folder, self.progress = request, source, folder, progress
        self.cpu = cpu_record()
        self.report: dict[str, Any] = {
            "format": REPORT_FORMAT,
            "version": __version__,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source": source.record,
            "arch": None,
            "out_dir": str(folder.out),
            "opset": request.opset,
            "precisions": list(request.precisions),
            "int8_recipes": dict(request.int8_plan),
            "machine": {**self.cpu, "onnxruntime": _ort_version()},
            "data": {},
            "variants": {},
            "engines": {},
            "gate": {"enabled": request.gate, "max_drop_points": request.max_drop},
            "seconds": {},
        }
        self.steps = _Steps(self.report, folder)
        self.variants: dict[str, dict[str, Any]] = self.report["variants"]
        self.paths: dict[str, Path] = {}  # variant -> its staged file
        self.info: ModelInfo | None = None

    def name(self, variant: str) -> str:
        return f"{self.source.arch}.{variant}.onnx"

    def _record(self, variant: str, rec: dict[str, Any], status: str) -> None:
        """Record a staged file under the path it will have once committed."""
        self.variants[variant] = {**rec, "path": str(self.folder.final(self.name(variant))),
                                  "status": status}
        self.paths[variant] = self.folder.stage(self.name(variant))

    def fp32(self) -> None:
        staged = self.folder.stage(self.name("fp32"))
        _step(self.progress, "export fp32", 0, 1)
        try:
            if self.source.ckpt is None:
                t0 = time.perf_counter()
                check_onnx(self.source.path)  # a bad source never becomes an fp32
                shutil.copyfile(self.source.path, staged)
                rec = {**file_record(staged), "precision": "fp32", "checker": True,
                       "parity": None, "seconds": {"copy": time.perf_counter() - t0}}
            else:
                from facedistill.export.onnx import export_onnx

                full = export_onnx(self.source.ckpt, staged, opset=self.request.opset,
                                   parity_batches=(1, max(2, self.request.profile[2])))
                rec = {k: full[k] for k in ("size_bytes", "sha256", "precision", "opset",
                                            "checker", "parity", "parity_logits", "seconds")}
            self.info = parse_metadata(get_metadata(load_onnx(staged)), source=str(staged))
        except Exception as exc:
            self.steps.fail("variants", "fp32", exc)
            mapped = self.steps.errors[-1][1]  # a full disk: a one-line error naming --out
            if mapped is exc:
                raise
            raise mapped from None
        self._record("fp32", rec, "ok")
        self.report["arch"] = self.info.arch
        _step(self.progress, "export fp32", 1, 1)

    def fp16(self) -> None:
        from facedistill.export.quantize import convert_fp16

        _step(self.progress, "convert fp16", 0, 1)
        staged = self.folder.stage(self.name("fp16"))
        rec = self.steps.run("variants", "fp16", lambda: convert_fp16(self.paths["fp32"], staged))
        if rec is not None:
            self._record("fp16", rec, "ok")
        _step(self.progress, "convert fp16", 1, 1)

    def int8(self, calib_root: Path) -> None:
        """One INT8 file per recipe, ``pending`` until the gate has scored it."""
        from facedistill.export.quantize import (
            calibration_images,
            preprocess_images,
            quantize_int8,
        )

        assert self.info is not None
        req = self.request
        t0 = time.perf_counter()
        try:
            images = preprocess_images(
                self.info.preprocess,
                calibration_images(calib_root, req.calib_n, variant=self.source.variant),
                progress=lambda d, t: _step(self.progress, "calibration images", d, t))
        except Exception as exc:  # noqa: BLE001 - every INT8 variant fails with it
            for name in req.int8_plan:
                self.steps.fail("variants", name, exc)
            return
        t_images = time.perf_counter() - t0
        self.report["data"]["calibration"] = {"root": str(calib_root), "split": "train",
                                              "n_images": len(images),
                                              "method": req.calib_method}
        pause_point("export:int8")  # test hook: a kill in the middle of an export
        for name, recipe in req.int8_plan.items():
            what = f"quantize {name} ({recipe}, {req.calib_method})"
            _step(self.progress, what, 0, 1)
            staged = self.folder.stage(self.name(name))
            rec = self.steps.run("variants", name, lambda s=staged, r=recipe: quantize_int8(
                self.paths["fp32"], s, images, method=req.calib_method, recipe=r))
            if rec is not None:
                rec["seconds"] = {"calibration_images": t_images, **rec["seconds"]}
                rec["calibration"].update(data=str(calib_root), split="train", seed=0)
                self._record(name, rec, "pending")
            _step(self.progress, what, 1, 1)

    def score_and_gate(self, eval_root: Path | None) -> None:
        """Score every variant, apply the INT8 gate, write accuracy into each file."""
        from facedistill.export.quantize import INT8_RECIPES

        assert self.info is not None
        plan = self.request.int8_plan
        emulated = {name for name in self.paths if name in plan and _gate_kernels(
            INT8_RECIPES[plan[name]], str(self.cpu["int8_class"])) == "emulated"}
        if eval_root is not None:
            _score(self.paths, self.info, eval_root, str(self.request.eval_split),
                   self.source.variant, emulated, self.report, self.progress)
        for name in list(self.paths):
            if name in plan:
                _gate(name, self.variants[name], self.report, self.request, emulated,
                      self.cpu, self.steps, self.folder.final(self.name(name)))
        for p in list(self.paths):
            v = self.variants[p]
            if v.get("status") == "failed":
                self.paths.pop(p).unlink(missing_ok=True)
                continue
            changes = {key: json.dumps(v[key]) for key in ("accuracy", "int8_gate") if key in v}
            if self.steps.run("variants", p, lambda p=p, c=changes: self._seal(p, c)) is None:
                self.paths.pop(p).unlink(missing_ok=True)

    def _seal(self, variant: str, changes: dict[str, str]) -> bool:
        """Write the scores into the file's metadata; its final size and sha256."""
        if changes:
            update_metadata(self.paths[variant], **changes)
        v = self.variants[variant]
        v.update({**file_record(self.paths[variant]), "path": v["path"], "status": "ok"})
        return True

    def engines(self) -> None:
        """One engine per precision: fp32/fp16 from their ONNX, int8 from the TensorRT recipe;
        the timing cache of the previous export is reused."""
        from facedistill.export.tensorrt import TIMING_CACHE

        cache = self.folder.final(TIMING_CACHE)
        if cache.is_file():
            shutil.copyfile(cache, self.folder.stage(TIMING_CACHE))
        _build_engines(self.paths, self.source.arch, self.folder, self.request,
                       self.report, self.steps, self.progress)

    def commit(self) -> None:
        """Swap the staged export in; the previous export's files this one did not write are
        kept when they come from the same source (and are listed), removed when stale."""
        previous = self.folder.previous_report(REPORT_NAME)
        stale = _carry_previous(self.report, previous, self.folder, set(
            p.name for p in self.folder.staging.iterdir()))
        self.folder.commit(REPORT_NAME, ExportReport.from_json(self.report).to_json(),
                           remove=stale)


def _carry_previous(report: dict[str, Any], previous: ExportReport | None,
                    folder: ExportFolder, written: set[str]) -> list[str]:
    """Reconcile the new export with the previous one in the folder. A previous file this
    export did not rewrite is *carried* (kept, and listed in the new report with
    ``carried_from``) when it was exported from the same source and is unchanged on disk; an
    engine also needs its ONNX file to be the one it was built from. Anything else the
    previous report lists is stale (another model) and returned, to be removed. Without a
    previous report (none, unreadable, another format) nothing is known about the folder's
    other files: they stay, unlisted."""
    if previous is None:
        return []
    same = bool(report["source"].get("sha256")) and \
        previous.source.sha256 == report["source"]["sha256"]
    since = previous.created_at
    stale: list[str] = []
    onnx_sha: dict[str, str] = {}
    for rec in report["variants"].values():
        if rec.get("status") == "ok":
            onnx_sha[Path(rec["path"]).name] = rec["sha256"]
    for name, old in previous.variants.items():
        fname = Path(old.path or "").name
        if not old.ok or not fname or fname in written:
            continue
        path = folder.final(fname)
        if not path.is_file():
            continue
        if not same or sha256_file(path) != old.sha256:
            stale.append(fname)
            continue
        onnx_sha[fname] = str(old.sha256)
        now = report["variants"].get(name)
        if now is None:
            report["variants"][name] = {**old.to_json(), "carried_from": since}
        else:  # rejected by this export's gate: the earlier accepted file stays
            rec = old.to_json()
            now["previous"] = {**{k: rec.get(k) for k in (
                "path", "size_bytes", "sha256", "accuracy", "int8_gate")}, "created_at": since}
    for name, engine in previous.engines.items():
        files = [Path(p or "").name for p in (engine.path, engine.sidecar)]
        if not engine.ok or not files[0] or files[0] in written:
            continue
        if not folder.final(files[0]).is_file():
            continue
        try:
            built_from = json.loads(folder.final(files[1]).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            built_from = {}
        if not isinstance(built_from, dict):
            built_from = {}
        onnx_name = Path(engine.onnx or "").name
        if same and name not in report["engines"] and \
                onnx_sha.get(onnx_name) == built_from.get("onnx_sha256"):
            report["engines"][name] = {**engine.to_json(), "carried_from": since}
        else:
            stale += files
    return stale


def _ort_version() -> str | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    return str(ort.__version__)


def _score(paths: dict[str, Path], info: ModelInfo, eval_root: Path, split: str,
           variant: str | None, emulated: set[str], report: dict[str, Any],
           progress: StepProgress | None) -> None:
    """Score every variant on ``split`` and record accuracy and differences in the report."""
    from facedistill.bench.accuracy import split_images

    variants = report["variants"]
    t0 = time.perf_counter()
    images_eval, labels, names = split_images(eval_root, split, variant)
    _check_attributes(names, info, eval_root)
    results, spent, diffs = _evaluate(paths, info, images_eval, labels, names, split,
                                      emulated, progress)
    elapsed = time.perf_counter() - t0
    decode = max(0.0, elapsed - sum(spent.values()))
    base = results["fp32"]["mean_balanced"]
    report["data"]["eval"] = {"root": str(eval_root), "split": split,
                              "n_images": len(images_eval)}
    for p in paths:
        variants[p]["accuracy"] = {
            "split": split, "mean_balanced": results[p]["mean_balanced"],
            "delta_to_fp32": results[p]["mean_balanced"] - base,
            "n_images": results[p]["n_images"]}
        variants[p]["max_abs_diff_to_fp32"] = diffs[p].get("fp32")
        if "kernels" in diffs[p]:
            variants[p]["max_abs_diff_integer_vs_emulated"] = diffs[p]["kernels"]
        variants[p]["seconds"]["evaluate"] = spent[p] + decode / len(paths)


def _gate(name: str, v: dict[str, Any], report: dict[str, Any], request: ExportRequest,
          emulated: set[str], cpu: dict[str, Any], steps: _Steps, final: Path) -> None:
    """Apply the INT8 gate to variant ``name`` and record where and how it was measured."""
    acc = v.get("accuracy")
    kernels = "emulated" if name in emulated else "integer"
    max_drop = request.max_drop
    v["int8_gate"] = {
        "recipe": v["recipe"]["name"], "kernels": kernels, "cpu": cpu.get("model"),
        "int8_class": cpu.get("int8_class"), "onnxruntime": report["machine"]["onnxruntime"],
        "split": acc["split"] if acc else None,
        "drop_points": None if acc is None else -100.0 * acc["delta_to_fp32"],
        "max_drop_points": max_drop if request.gate else None,
        "max_abs_diff_integer_vs_emulated": v.get("max_abs_diff_integer_vs_emulated")}
    if acc is None:
        return
    drop = -100.0 * acc["delta_to_fp32"]
    passed = drop <= max_drop
    report["gate"].setdefault("results", {})[name] = {"drop_points": drop, "passed": passed,
                                                      "kernels": kernels}
    if name == "int8":  # the keys earlier reports had
        report["gate"].update(int8_drop_points=drop, passed=passed)
    if request.gate and not passed:
        base = 100 * (acc["mean_balanced"] - acc["delta_to_fp32"])
        why = (f"mean balanced accuracy drops {drop:.2f} points (fp32 {base:.2f}% -> "
               f"{name} {100 * acc['mean_balanced']:.2f}%, {kernels} kernels), more than "
               f"max_drop {max_drop:g}")
        steps.fail("variants", name, ExportError(
            f"INT8 rejected: {why} on {request.eval_split}; try another --calib-method, more "
            "--calib-n, or --no-gate", path=final), gate=True)
        v.update(error=why, rejected_by_gate=True)


def _build_engines(paths: dict[str, Path], arch: str, folder: ExportFolder,
                   request: ExportRequest, report: dict[str, Any], steps: _Steps,
                   progress: StepProgress | None) -> None:
    """One engine per precision: fp32/fp16 from their (staged) ONNX, int8 from the TensorRT
    recipe's file; built in the staging folder, recorded under their final paths."""
    from facedistill.export.tensorrt import TIMING_CACHE, build_engine
    from facedistill.runtime.engine import sidecar_path

    sources = {p: paths.get(p) for p in request.precisions if p != "int8"}
    if "int8" in request.precisions:
        sources["int8"] = paths.get("int8-trt")
    for p, onnx_path in sources.items():
        if onnx_path is None:
            why = ("no int8-trt file (the TensorRT recipe): add 'tensorrt' to --int8-recipe"
                   if p == "int8" and "int8-trt" not in report["variants"]
                   else f"its ONNX variant failed: {report['variants'][_source_of(p)]['error']}")
            steps.fail("engines", p, ExportError(f"{p} engine not built: {why}"))
            continue
        _step(progress, f"build {p} engine", 0, 1)
        name = f"{arch}.{p}.engine"
        engine = folder.stage(name)
        t0 = time.perf_counter()
        side = steps.run("engines", p, lambda o=onnx_path, e=engine: build_engine(
            o, e, batches=request.profile, workspace_mb=request.workspace_mb,
            timing_cache=folder.stage(TIMING_CACHE)))
        if side is not None:
            report["engines"][p] = {
                "path": str(folder.final(name)),
                "sidecar": str(folder.final(sidecar_path(engine).name)),
                "onnx": str(folder.final(onnx_path.name)), "status": "ok",
                "size_bytes": engine.stat().st_size, "sha256": side["engine_sha256"],
                **{k: side[k] for k in ("trt_version", "gpu_name", "compute_capability",
                                        "precision", "profile", "built_at", "build")},
                "seconds": time.perf_counter() - t0}
        _step(progress, f"build {p} engine", 1, 1)


def _source_of(precision: str) -> str:
    return "int8-trt" if precision == "int8" else precision
