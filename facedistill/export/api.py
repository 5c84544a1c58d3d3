"""``export_model``: a checkpoint to FP32/FP16/INT8 ONNX (+ TensorRT engines), each variant
checked, scored on the validation split and recorded in ``export_report.json``.

Files written to ``out_dir`` (``<arch>`` is the checkpoint's architecture, e.g. ``snet3``):

* ``<arch>.fp32.onnx`` - always (it is the source of the other variants and the reference
  of their accuracy deltas); parity with PyTorch checked at batch 1 and the largest batch;
* ``<arch>.fp16.onnx``, ``<arch>.int8.onnx`` - when asked for;
* ``<arch>.<precision>.engine`` + ``<arch>.<precision>.engine.json`` - with ``trt=True``,
  plus the shared ``trt_timing.cache``;
* ``export_report.json`` - per variant: path, size, sha256, checker, parity (fp32),
  accuracy ``{split, mean_balanced, delta_to_fp32, n_images}`` (fractions, as in
  ``facedistill eval``), largest probability difference to fp32, seconds per step.

The INT8 gate: INT8 is kept only if its mean balanced accuracy is at most ``max_drop``
percentage points below FP32's on ``eval_split`` (``gate=False`` keeps it anyway). A failing
INT8 file is not left behind (a previous good one is not touched), the report marks it
``failed`` and :class:`~facedistill.export.onnx.ExportError` is raised after everything else
is written.

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


def _evaluate(paths: dict[str, Path], info: ModelInfo, images: Any, labels: np.ndarray,
              names: list[str], split: str, progress: StepProgress | None
              ) -> tuple[dict[str, dict[str, Any]], dict[str, float], dict[str, float]]:
    """Score every variant in one pass over the images (each decoded once)."""
    from facedistill.bench.accuracy import balanced_accuracy, predict_images

    order = list(paths)
    sessions = {p: ort_session(paths[p]) for p in order}
    spent = dict.fromkeys(order, 0.0)
    width = len(info.attributes)

    def run_all(x: np.ndarray) -> np.ndarray:
        outs = []
        for p in order:
            t0 = time.perf_counter()
            outs.append(sessions[p].run(["probabilities"], {INPUT_NAME: x})[0])
            spent[p] += time.perf_counter() - t0
        return np.concatenate(outs, axis=1)

    probs = predict_images(run_all, info.preprocess, images, batch_size=64,
                           progress=lambda d, t: _step(progress, f"evaluate on {split}", d, t))
    results: dict[str, dict[str, Any]] = {}
    diffs: dict[str, float] = {}
    ref = probs[:, :width] if "fp32" in order else None
    for k, p in enumerate(order):
        part = probs[:, k * width:(k + 1) * width]
        results[p] = balanced_accuracy(part, labels, info.thresholds, names)
        if ref is not None:
            diffs[p] = float(np.max(np.abs(part - ref)))
    return results, spent, diffs


def export_model(
    checkpoint: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    precisions: Sequence[str] = ("fp32", "fp16", "int8"),
    opset: int = 18,
    calib_data: str | os.PathLike[str] | None = None,
    calib_n: int = 512,
    calib_method: str = "entropy",
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
    ``max_drop`` is in percentage points of mean balanced accuracy. ``batches`` are the
    TensorRT profile's (min, opt, max) and the FP32 parity check runs at batch 1 and the max.
    ``progress(step, done, total)`` is called as work proceeds.
    """
    from facedistill.export.quantize import (
        CALIBRATION_METHODS,
        calibration_images,
        convert_fp16,
        preprocess_images,
        quantize_int8,
    )
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
    max_drop = float(max_drop)
    if math.isnan(max_drop):
        raise UserError("max drop is NaN", field="max_drop")
    profile = parse_profile(batches if isinstance(batches, str) else list(batches))
    if workspace_mb is not None:
        from facedistill.export.tensorrt import workspace_bytes

        workspace_bytes(workspace_mb)
    if eval_split is not None:
        from facedistill.pipeline.data.celeba import split_id

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
    _check_writable(out)

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
        from facedistill.pipeline.checkpoint import load_checkpoint

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

    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "arch": None,
        "out_dir": str(out),
        "opset": opset,
        "precisions": wanted,
        "data": {},
        "variants": {},
        "engines": {},
        "gate": {"enabled": bool(gate), "max_drop_points": max_drop},
        "seconds": {},
    }
    paths: dict[str, Path] = {}
    variants: dict[str, dict[str, Any]] = report["variants"]

    # -- FP32 ----------------------------------------------------------------------------------
    fp32 = out / f"{arch}.fp32.onnx"
    _step(progress, "export fp32", 0, 1)
    if from_onnx:
        t0 = time.perf_counter()
        if src.resolve() != fp32.resolve():
            from facedistill.io import atomic_path

            with atomic_path(fp32) as tmp:
                shutil.copyfile(src, tmp)
        check_onnx(fp32)
        variants["fp32"] = {**file_record(fp32), "precision": "fp32", "checker": True,
                            "parity": None, "seconds": {"copy": time.perf_counter() - t0}}
    else:
        from facedistill.export.onnx import export_onnx

        assert ckpt is not None
        rec = export_onnx(ckpt, fp32, opset=opset, parity_batches=(1, max(2, profile[2])))
        variants["fp32"] = {k: rec[k] for k in ("path", "size_bytes", "sha256", "precision",
                                                "opset", "checker", "parity", "parity_logits",
                                                "seconds")}
    variants["fp32"]["status"] = "ok"
    paths["fp32"] = fp32
    info = parse_metadata(get_metadata(load_onnx(fp32)), source=str(fp32))
    report["arch"] = info.arch
    _step(progress, "export fp32", 1, 1)

    # -- FP16 ----------------------------------------------------------------------------------
    if "fp16" in wanted:
        _step(progress, "convert fp16", 0, 1)
        fp16 = out / f"{arch}.fp16.onnx"
        variants["fp16"] = {**convert_fp16(fp32, fp16), "status": "ok"}
        paths["fp16"] = fp16
        _step(progress, "convert fp16", 1, 1)

    # -- INT8 (into a candidate file until the gate has passed) ----------------------------
    int8_final = out / f"{arch}.int8.onnx"
    if "int8" in wanted:
        assert calib_root is not None
        t0 = time.perf_counter()
        calib = calibration_images(calib_root, calib_n, variant=variant)
        images = preprocess_images(
            info.preprocess, calib,
            progress=lambda d, t: _step(progress, "calibration images", d, t))
        t_images = time.perf_counter() - t0
        candidate = out / f".{arch}.int8.onnx.candidate"
        _step(progress, f"quantize int8 ({calib_method})", 0, 1)
        rec = quantize_int8(fp32, candidate, images, method=calib_method)
        rec["seconds"] = {"calibration_images": t_images, **rec["seconds"]}
        rec["path"] = str(int8_final)
        rec["calibration"].update(data=str(calib_root), split="train", seed=0)
        variants["int8"] = {**rec, "status": "pending"}
        paths["int8"] = candidate
        report["data"]["calibration"] = {"root": str(calib_root), "split": "train",
                                         "n_images": len(calib), "method": calib_method}
        _step(progress, f"quantize int8 ({calib_method})", 1, 1)

    # -- accuracy of every variant ---------------------------------------------------------
    gate_error: ExportError | None = None
    try:
        if eval_root is not None:
            from facedistill.bench.accuracy import split_images

            t0 = time.perf_counter()
            images_eval, labels, names = split_images(eval_root, eval_split, variant)
            _check_attributes(names, info, eval_root)
            results, spent, diffs = _evaluate(paths, info, images_eval, labels, names,
                                              str(eval_split), progress)
            elapsed = time.perf_counter() - t0
            decode = max(0.0, elapsed - sum(spent.values()))
            base = results["fp32"]["mean_balanced"]
            report["data"]["eval"] = {"root": str(eval_root), "split": eval_split,
                                      "n_images": len(images_eval)}
            for p in paths:
                acc = {"split": str(eval_split), "mean_balanced": results[p]["mean_balanced"],
                       "delta_to_fp32": results[p]["mean_balanced"] - base,
                       "n_images": results[p]["n_images"]}
                variants[p]["accuracy"] = acc
                variants[p]["max_abs_diff_to_fp32"] = diffs.get(p)
                variants[p]["seconds"]["evaluate"] = spent[p] + decode / len(paths)
            if "int8" in paths:
                drop = 100.0 * (base - results["int8"]["mean_balanced"])
                report["gate"].update(int8_drop_points=drop, passed=drop <= max_drop)
                if gate and drop > max_drop:
                    variants["int8"]["status"] = "failed"
                    variants["int8"]["error"] = (
                        f"mean balanced accuracy drops {drop:.2f} points (fp32 "
                        f"{100 * base:.2f}% -> int8 "
                        f"{100 * results['int8']['mean_balanced']:.2f}%), more than "
                        f"max_drop {max_drop:g}")
                    gate_error = ExportError(
                        f"INT8 rejected: {variants['int8']['error']} on {eval_split}; try "
                        "another --calib-method, more --calib-n, or --no-gate "
                        f"(report: {out / REPORT_NAME})", path=int8_final)
        # -- record accuracy in each file's metadata, finalise INT8 ---------------------------
        for p in list(paths):
            if variants[p].get("status") == "failed":
                paths[p].unlink(missing_ok=True)
                for key in ("size_bytes", "sha256"):
                    variants[p].pop(key, None)
                del paths[p]
                continue
            if "accuracy" in variants[p]:
                update_metadata(paths[p], accuracy=json.dumps(variants[p]["accuracy"]))
            if p == "int8":
                os.replace(paths[p], int8_final)
                paths[p] = int8_final
            variants[p].update(file_record(paths[p]))
            variants[p]["status"] = "ok"
    finally:
        cand = out / f".{arch}.int8.onnx.candidate"
        cand.unlink(missing_ok=True)

    # -- TensorRT ------------------------------------------------------------------------------
    if trt:
        from facedistill.export.tensorrt import build_engine
        from facedistill.runtime.engine import sidecar_path

        for p, onnx_path in paths.items():
            _step(progress, f"build {p} engine", 0, 1)
            engine = out / f"{arch}.{p}.engine"
            t0 = time.perf_counter()
            side = build_engine(onnx_path, engine, batches=profile, workspace_mb=workspace_mb)
            report["engines"][p] = {
                "path": str(engine), "sidecar": str(sidecar_path(engine)),
                "size_bytes": engine.stat().st_size, "sha256": side["engine_sha256"],
                **{k: side[k] for k in ("trt_version", "gpu_name", "compute_capability",
                                        "precision", "profile", "built_at", "build")},
                "seconds": time.perf_counter() - t0}
            _step(progress, f"build {p} engine", 1, 1)

    report["seconds"]["total"] = time.perf_counter() - t_start
    atomic_write_json(out / REPORT_NAME, report)
    if gate_error is not None:
        raise gate_error
    return report
