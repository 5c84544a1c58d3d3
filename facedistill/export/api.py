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
not left behind (a previous good one is not touched).

One failing precision never loses the others: each step (FP16, calibration, each INT8
recipe, the gate, each engine) records its error on its variant (``status: failed``), the
report is written in every case, and :class:`~facedistill.export.onnx.ExportError` naming
every failure is raised at the end (the CLI exits 2).

Only the FP32 export itself needs torch: ``checkpoint`` may also be an FP32 ``.onnx`` export,
then nothing here imports torch (data must then be given: the ONNX does not record it).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from facedistill import __version__
from facedistill.errors import UserError
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
from facedistill.io import atomic_write_json, sha256_file
from facedistill.runtime.metadata import INPUT_NAME, PRECISIONS, ModelInfo, parse_metadata

REPORT_FORMAT = "facedistill.export_report/v1"
REPORT_NAME = "export_report.json"
StepProgress = Callable[[str, int, int], None]


def _check_precisions(precisions: Sequence[str] | str) -> list[str]:
    items = [precisions] if isinstance(precisions, str) else list(precisions)
    wanted = {p.strip().lower() for item in items for p in str(item).split(",") if p.strip()}
    bad = sorted(wanted - set(PRECISIONS))
    if bad:
        raise UserError(f"unknown precision {bad[0]!r}; expected {', '.join(PRECISIONS)}",
                        field="precision")
    return [p for p in PRECISIONS if p in wanted or p == "fp32"]


def _check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".facedistill-write-test.", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"cannot write to the output folder: {exc.strerror or exc}",
                        path=out_dir) from None


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


class GateError(ExportError):
    """The export failed only because INT8 files lost more accuracy than ``max_drop``: every
    other variant was written. ``rejected`` names them; ``report`` is the export report."""

    def __init__(self, message: str, *, rejected: list[str], report: dict[str, Any],
                 **where: Any) -> None:
        super().__init__(message, **where)
        self.rejected = rejected
        self.report = report


class _Steps:
    """Runs the export's steps so that one failing precision never loses the others: an
    error is recorded on its variant (``status: failed``, ``error``) and collected."""

    def __init__(self, report: dict[str, Any]) -> None:
        self.report = report
        self.errors: list[tuple[str, BaseException]] = []
        self.gated: set[str] = set()  # the steps the INT8 gate failed

    def fail(self, table: str, name: str, exc: BaseException, *, gate: bool = False) -> None:
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

    def raise_if_failed(self, report_path: Path) -> None:
        if not self.errors:
            return
        names = [name for name, _ in self.errors]
        kind = GateError if set(names) <= self.gated else ExportError
        extra = {"rejected": names, "report": self.report} if kind is GateError else {}
        if len(self.errors) == 1 and isinstance(self.errors[0][1], UserError):
            exc = self.errors[0][1]
            raise kind(f"{exc.message} (report: {report_path})", path=exc.path,
                       line=exc.line, field=exc.field, **extra)
        what = "; ".join(f"{name}: {_error_line(exc)}" for name, exc in self.errors)
        raise kind(f"{len(self.errors)} export steps failed - {what} (the others were "
                   f"written; report: {report_path})", **extra)


def export_model(
    checkpoint: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    precisions: Sequence[str] = ("fp32", "fp16", "int8"),
    opset: int = 18,
    calib_data: str | os.PathLike[str] | None = None,
    calib_n: int = 512,
    calib_method: str = "entropy",
    int8_recipe: Sequence[str] | str | None = None,
    max_drop: float = 1.0,
    gate: bool = True,
    eval_data: str | os.PathLike[str] | None = None,
    eval_split: str | None = "val",
    trt: bool = False,
    batches: Sequence[int] | str = (1, 8, 32),
    workspace_mb: int | None = None,
    progress: StepProgress | None = None,
) -> dict[str, Any]:
    """Export ``checkpoint`` (run folder, ``.pt``, or an FP32 ``.onnx`` export) into
    ``out_dir``; returns the report also written to ``out_dir/export_report.json``.

    ``calib_data`` / ``eval_data`` default to the dataset recorded in the checkpoint;
    calibration uses ``calib_n`` seeded-random *training* images, evaluation the whole
    ``eval_split`` (``None`` skips evaluation, which the INT8 gate then refuses).
    ``int8_recipe`` names the INT8 recipes (:data:`~facedistill.export.quantize.INT8_RECIPES`;
    default ``cpu``, plus ``tensorrt`` with ``trt``). ``max_drop`` is in percentage points of
    mean balanced accuracy. ``batches`` are the TensorRT profile's (min, opt, max) and the
    FP32 parity check runs at batch 1 and the max. ``progress(step, done, total)`` is called
    as work proceeds.

    A failing precision (conversion, quantization, gate, engine build) does not stop the
    others: the report, always written, marks it ``failed`` with its error, and an
    :class:`ExportError` naming every failure is raised at the end.
    """
    from facedistill.export.quantize import (
        CALIBRATION_METHODS,
        INT8_RECIPES,
        calibration_images,
        convert_fp16,
        preprocess_images,
        quantize_int8,
    )
    from facedistill.runtime.cpu import cpu_record
    from facedistill.runtime.engine import parse_profile

    t_start = time.perf_counter()
    wanted = _check_precisions(precisions)
    check_opset(opset)
    if calib_method not in CALIBRATION_METHODS:
        raise UserError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, "
                        f"got {calib_method!r}", field="calib_method")
    if isinstance(calib_n, bool) or not isinstance(calib_n, int) or calib_n < 1:
        raise UserError(f"the number of calibration images must be >= 1, got {calib_n!r}",
                        field="calib_n")
    int8_plan = _int8_plan(wanted, int8_recipe, trt)
    max_drop = float(max_drop)
    if math.isnan(max_drop):
        raise UserError("max drop is NaN", field="max_drop")
    profile = parse_profile(batches if isinstance(batches, str) else list(batches))
    if workspace_mb is not None:
        from facedistill.export.tensorrt import workspace_bytes

        workspace_bytes(workspace_mb)
    if eval_split is not None:
        from facedistill.data.celeba import split_id

        split_id(eval_split)  # a ConfigError naming the split when unknown
    if "int8" in wanted and gate and eval_split is None:
        raise UserError("the INT8 accuracy gate needs an evaluation split; drop --no-eval or "
                        "pass --no-gate", field="eval_split")
    src = Path(checkpoint)
    if not src.exists():  # before importing torch to read it, or creating out_dir
        raise UserError("no such checkpoint file or run folder", path=src)
    if trt:  # fail before any work when TensorRT or a GPU is missing
        from facedistill.runtime.engine import gpu_identity, require_cudart, require_tensorrt

        require_tensorrt()
        gpu_identity(0, require_cudart())
    out = Path(out_dir)

    # -- source: checkpoint (torch) or an FP32 ONNX (no torch) -------------------------------
    from_onnx = src.suffix.lower() == ".onnx"
    ckpt: dict[str, Any] | None = None
    data_default: str | None = None
    variant: str | None = None
    if from_onnx:
        meta = get_metadata(load_onnx(src))
        info = parse_metadata(meta, source=str(src))
        if info.precision != "fp32":
            raise ExportError(f"the source must be an fp32 export, this one is "
                              f"{info.precision}", path=src, field="precision")
        arch = str(info.arch.get("arch"))
        source = {"onnx": str(src), "sha256": info.source_sha256, "version": info.version,
                  "note": "exported earlier; parity with PyTorch not re-checked"}
    else:
        from facedistill.nn.checkpoint import load_checkpoint

        ckpt = load_checkpoint(src)
        note = check_checkpoint_version(ckpt.get("version"), ckpt["path"])
        arch = str(ckpt["arch"]["arch"])
        data_default = (ckpt.get("data") or {}).get("root")
        variant = (ckpt.get("data") or {}).get("variant") or "aligned"
        source = {"checkpoint": ckpt["path"], "sha256": sha256_file(ckpt["path"]),
                  "version": ckpt.get("version"), "note": note}
    where = src
    eval_root = None
    if eval_split is not None:  # --data, else the run's data
        eval_root = _resolve_data(eval_data, data_default, "evaluation data", where)
    calib_root = None
    if "int8" in wanted:  # --calib-data, else the run's data, else --data
        fallback = data_default
        if calib_data is None and eval_data is not None and not (
                data_default and Path(data_default).exists()):
            fallback = str(eval_data)
        calib_root = _resolve_data(calib_data, fallback, "calibration data", where,
                                   "--calib-data or --data")
    _check_writable(out)  # created only now: a bad source or data folder leaves no empty --out

    cpu = cpu_record()
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "arch": None,
        "out_dir": str(out),
        "opset": opset,
        "precisions": wanted,
        "int8_recipes": int8_plan,
        "machine": {**cpu, "onnxruntime": _ort_version()},
        "data": {},
        "variants": {},
        "engines": {},
        "gate": {"enabled": bool(gate), "max_drop_points": max_drop},
        "seconds": {},
    }
    report_path = out / REPORT_NAME
    steps = _Steps(report)
    paths: dict[str, Path] = {}
    variants: dict[str, dict[str, Any]] = report["variants"]

    # -- FP32 (the source of everything else: its failure ends the export) -------------------
    fp32 = out / f"{arch}.fp32.onnx"
    _step(progress, "export fp32", 0, 1)
    try:
        if from_onnx:
            t0 = time.perf_counter()
            check_onnx(src)  # before the copy: a bad source never replaces a good fp32
            if src.resolve() != fp32.resolve():
                from facedistill.io import atomic_path

                with atomic_path(fp32) as tmp:
                    shutil.copyfile(src, tmp)
            variants["fp32"] = {**file_record(fp32), "precision": "fp32", "checker": True,
                                "parity": None, "seconds": {"copy": time.perf_counter() - t0}}
        else:
            from facedistill.export.onnx import export_onnx

            assert ckpt is not None
            rec = export_onnx(ckpt, fp32, opset=opset, parity_batches=(1, max(2, profile[2])))
            variants["fp32"] = {k: rec[k] for k in (
                "path", "size_bytes", "sha256", "precision", "opset", "checker", "parity",
                "parity_logits", "seconds")}
        info = parse_metadata(get_metadata(load_onnx(fp32)), source=str(fp32))
    except Exception as exc:
        steps.fail("variants", "fp32", exc)
        report["seconds"]["total"] = time.perf_counter() - t_start
        atomic_write_json(report_path, report)
        raise
    variants["fp32"]["status"] = "ok"
    paths["fp32"] = fp32
    report["arch"] = info.arch
    _step(progress, "export fp32", 1, 1)

    # -- FP16 ----------------------------------------------------------------------------------
    if "fp16" in wanted:
        _step(progress, "convert fp16", 0, 1)
        fp16 = out / f"{arch}.fp16.onnx"
        rec = steps.run("variants", "fp16", lambda: convert_fp16(fp32, fp16))
        if rec is not None:
            variants["fp16"] = {**rec, "status": "ok"}
            paths["fp16"] = fp16
        _step(progress, "convert fp16", 1, 1)

    # -- INT8 (into candidate files until the gate has passed) -----------------------------
    finals = {name: out / f"{arch}.{name}.onnx" for name in int8_plan}
    candidates = {name: out / f".{arch}.{name}.onnx.candidate" for name in int8_plan}
    if int8_plan:
        assert calib_root is not None
        t0 = time.perf_counter()
        try:
            images = preprocess_images(
                info.preprocess, calibration_images(calib_root, calib_n, variant=variant),
                progress=lambda d, t: _step(progress, "calibration images", d, t))
        except Exception as exc:  # noqa: BLE001 - every INT8 variant fails with it
            images = None
            for name in int8_plan:
                steps.fail("variants", name, exc)
        t_images = time.perf_counter() - t0
        if images is not None:
            report["data"]["calibration"] = {"root": str(calib_root), "split": "train",
                                             "n_images": len(images), "method": calib_method}
        for name, recipe in int8_plan.items() if images is not None else ():
            _step(progress, f"quantize {name} ({recipe}, {calib_method})", 0, 1)
            rec = steps.run("variants", name, lambda n=name, r=recipe: quantize_int8(
                fp32, candidates[n], images, method=calib_method, recipe=r))
            if rec is not None:
                rec["seconds"] = {"calibration_images": t_images, **rec["seconds"]}
                rec["path"] = str(finals[name])
                rec["calibration"].update(data=str(calib_root), split="train", seed=0)
                variants[name] = {**rec, "status": "pending"}
                paths[name] = candidates[name]
            _step(progress, f"quantize {name} ({recipe}, {calib_method})", 1, 1)

    # -- accuracy of every variant, the INT8 gate ----------------------------------------------
    try:
        emulated = {name for name in paths if name in int8_plan and _gate_kernels(
            INT8_RECIPES[int8_plan[name]], str(cpu["int8_class"])) == "emulated"}
        if eval_root is not None:
            _score(paths, info, eval_root, str(eval_split), variant, emulated, report, steps,
                   progress)
        for name in list(paths):
            if name in int8_plan and variants[name].get("status") != "failed":
                _gate(name, variants[name], report, gate, max_drop, emulated, cpu, steps,
                      finals[name], str(eval_split))
        # -- record accuracy in each file's metadata, finalise INT8 ---------------------------
        for p in list(paths):
            if variants[p].get("status") == "failed":
                if p in int8_plan:
                    paths[p].unlink(missing_ok=True)
                del paths[p]
                continue
            changes = {}
            if "accuracy" in variants[p]:
                changes["accuracy"] = json.dumps(variants[p]["accuracy"])
            if "int8_gate" in variants[p]:
                changes["int8_gate"] = json.dumps(variants[p]["int8_gate"])
            if changes:
                update_metadata(paths[p], **changes)
            if p in int8_plan:
                os.replace(paths[p], finals[p])
                paths[p] = finals[p]
            variants[p].update(file_record(paths[p]))
            variants[p]["status"] = "ok"
    finally:
        for cand in candidates.values():
            cand.unlink(missing_ok=True)

    # -- TensorRT ------------------------------------------------------------------------------
    if trt:
        _build_engines(paths, arch, out, profile, workspace_mb, wanted, report, steps,
                       progress)

    report["seconds"]["total"] = time.perf_counter() - t_start
    atomic_write_json(report_path, report)
    steps.raise_if_failed(report_path)
    return report


def _ort_version() -> str | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    return str(ort.__version__)


def _score(paths: dict[str, Path], info: ModelInfo, eval_root: Path, split: str,
           variant: str | None, emulated: set[str], report: dict[str, Any], steps: _Steps,
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


def _gate(name: str, v: dict[str, Any], report: dict[str, Any], gate: bool, max_drop: float,
          emulated: set[str], cpu: dict[str, Any], steps: _Steps, final: Path,
          split: str) -> None:
    """Apply the INT8 gate to variant ``name`` and record where and how it was measured."""
    acc = v.get("accuracy")
    kernels = "emulated" if name in emulated else "integer"
    v["int8_gate"] = {
        "recipe": v["recipe"]["name"], "kernels": kernels, "cpu": cpu.get("model"),
        "int8_class": cpu.get("int8_class"), "onnxruntime": report["machine"]["onnxruntime"],
        "split": acc["split"] if acc else None,
        "drop_points": None if acc is None else -100.0 * acc["delta_to_fp32"],
        "max_drop_points": max_drop if gate else None,
        "max_abs_diff_integer_vs_emulated": v.get("max_abs_diff_integer_vs_emulated")}
    if acc is None:
        return
    drop = -100.0 * acc["delta_to_fp32"]
    passed = drop <= max_drop
    report["gate"].setdefault("results", {})[name] = {"drop_points": drop, "passed": passed,
                                                      "kernels": kernels}
    if name == "int8":  # the keys earlier reports had
        report["gate"].update(int8_drop_points=drop, passed=passed)
    if gate and not passed:
        base = 100 * (acc["mean_balanced"] - acc["delta_to_fp32"])
        why = (f"mean balanced accuracy drops {drop:.2f} points (fp32 {base:.2f}% -> "
               f"{name} {100 * acc['mean_balanced']:.2f}%, {kernels} kernels), more than "
               f"max_drop {max_drop:g}")
        steps.fail("variants", name, ExportError(
            f"INT8 rejected: {why} on {split}; try another --calib-method, more --calib-n, "
            "or --no-gate", path=final), gate=True)
        v.update(error=why, rejected_by_gate=True)


def _build_engines(paths: dict[str, Path], arch: str, out: Path, profile: tuple[int, int, int],
                   workspace_mb: int | None, wanted: Sequence[str], report: dict[str, Any],
                   steps: _Steps, progress: StepProgress | None) -> None:
    """One engine per precision: fp32/fp16 from their ONNX, int8 from the TensorRT recipe."""
    from facedistill.export.tensorrt import build_engine
    from facedistill.runtime.engine import sidecar_path

    sources = {p: paths.get(p) for p in wanted if p != "int8"}
    if "int8" in wanted:
        sources["int8"] = paths.get("int8-trt")
    for p, onnx_path in sources.items():
        if onnx_path is None:
            why = ("no int8-trt file (the TensorRT recipe): add 'tensorrt' to --int8-recipe"
                   if p == "int8" and "int8-trt" not in report["variants"]
                   else f"its ONNX variant failed: {report['variants'][_source_of(p)]['error']}")
            steps.fail("engines", p, ExportError(f"{p} engine not built: {why}"))
            continue
        _step(progress, f"build {p} engine", 0, 1)
        engine = out / f"{arch}.{p}.engine"
        t0 = time.perf_counter()
        side = steps.run("engines", p, lambda o=onnx_path, e=engine: build_engine(
            o, e, batches=profile, workspace_mb=workspace_mb))
        if side is not None:
            report["engines"][p] = {
                "path": str(engine), "sidecar": str(sidecar_path(engine)),
                "onnx": str(onnx_path), "status": "ok",
                "size_bytes": engine.stat().st_size, "sha256": side["engine_sha256"],
                **{k: side[k] for k in ("trt_version", "gpu_name", "compute_capability",
                                        "precision", "profile", "built_at", "build")},
                "seconds": time.perf_counter() - t0}
        _step(progress, f"build {p} engine", 1, 1)


def _source_of(precision: str) -> str:
    return "int8-trt" if precision == "int8" else precision
