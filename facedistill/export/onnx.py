"""Checkpoint -> one self-contained ONNX file, checked and compared with PyTorch.

The exported graph takes ``input`` (float32 NCHW, dynamic batch axis ``batch``) and returns
``probabilities`` (the sigmoid of the logits) and ``logits``, both float32 ``[batch, A]``. Its
``metadata_props`` are :func:`facedistill.runtime.metadata.build_metadata`'s map, so the runtime
knows the preprocessing, the attribute names and the decision thresholds without the checkpoint.

torch is imported only inside :func:`export_onnx`; the helpers here (reading, writing, checking,
metadata, ONNX Runtime sessions) need only ``onnx`` and ``onnxruntime`` and are shared by the
FP16/INT8 conversions and the TensorRT builder, which start from an ONNX file.

Exporter facts (torch 2.13, docs/export.md): the dynamo exporter needs ``dynamic_shapes``
for a dynamic batch and ``external_data=False`` for one file, and it always emits opset >= 18;
opsets below 18 (TensorRT 8.5 on JetPack 5) go through the TorchScript exporter instead.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facedistill import __version__
from facedistill.errors import UserError
from facedistill.io import atomic_path, sha256_file
from facedistill.runtime.backends import open_session
from facedistill.runtime.errors import ModelError
from facedistill.runtime.metadata import INPUT_NAME, OUTPUT_NAMES, build_metadata

DEFAULT_OPSET = 18
MIN_OPSET = 13
PARITY_TOLERANCE = 1e-4
PARITY_SEED = 0


class ExportError(UserError):
    """An export step failed in a way the user can act on (bad file, failed check, gate)."""


# ---------------------------------------------------------------------------------------
# Versions
# ---------------------------------------------------------------------------------------
def _major_minor(version: str) -> tuple[int, int] | None:
    found = re.match(r"^\s*v?(\d+)\.(\d+)", str(version))
    return (int(found.group(1)), int(found.group(2))) if found else None


def check_checkpoint_version(written_by: str | None, path: str | os.PathLike[str] | None = None,
                             current: str = __version__) -> str:
    """The rule for checkpoints written by another facedistill version (returns a note).

    * same ``major.minor``, or an older one: accepted (the checkpoint format is versioned on
      its own, ``facedistill.checkpoint/v1``, and :func:`load_checkpoint` checks its keys);
      the note says which version wrote it when it differs.
    * a newer ``major.minor`` than this package: refused, since what that version stores may
      mean something this one does not know; the message says to upgrade.
    * no version, or one that is not ``X.Y...``: refused.
    """
    if written_by is None:
        raise ExportError("the checkpoint does not say which facedistill version wrote it",
                          path=path, field="version")
    theirs, ours = _major_minor(written_by), _major_minor(current)
    if theirs is None:
        raise ExportError(f"unreadable facedistill version {written_by!r}", path=path,
                          field="version")
    if ours is not None and theirs > ours:
        raise ExportError(f"written by facedistill {written_by}, newer than this {current}; "
                          "upgrade facedistill to export it", path=path, field="version")
    return "" if written_by == current else f"written by facedistill {written_by}"


# ---------------------------------------------------------------------------------------
# ONNX files: read, write, check, metadata (no torch)
# ---------------------------------------------------------------------------------------
def load_onnx(path: str | os.PathLike[str]) -> Any:
    """Read an ONNX file (one self-contained file) as a ``ModelProto``; bad files are
    :class:`ExportError` naming the file."""
    import onnx
    from google.protobuf.message import DecodeError

    p = Path(path)
    if not p.is_file():
        raise ExportError("no such ONNX file", path=p)
    try:
        model = onnx.load(str(p), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"not a readable ONNX file (truncated or corrupt?): {first}",
                          path=p) from None
    if not model.graph.node:
        raise ExportError("not a readable ONNX file (truncated or corrupt?): the graph is empty",
                          path=p)
    return model


def save_onnx(model: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` as ONE file (weights inside, no ``.data``), atomically."""
    import onnx

    with atomic_path(path) as tmp:
        onnx.save_model(model, str(tmp), save_as_external_data=False)
    return Path(path)


def check_onnx(path: str | os.PathLike[str]) -> None:
    """``onnx.checker.check_model(full_check=True)`` (with shape inference) on a file."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"fails the ONNX checker: {first}", path=path) from None


def get_metadata(model: Any) -> dict[str, str]:
    """A ``ModelProto``'s ``metadata_props`` as a dict."""
    return {p.key: p.value for p in model.metadata_props}


def set_metadata(model: Any, meta: Mapping[str, str]) -> None:
    """Replace a ``ModelProto``'s ``metadata_props`` with ``meta`` (in place)."""
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = str(key), str(value)


def update_metadata(path: str | os.PathLike[str], **changes: str | None) -> dict[str, str]:
    """Rewrite an ONNX file with some metadata keys changed (``None`` removes a key)."""
    model = load_onnx(path)
    meta = get_metadata(model)
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    set_metadata(model, meta)
    save_onnx(model, path)
    return meta


def strip_node_metadata(model: Any) -> None:
    """Drop the exporter's per-node ``metadata_props`` (stack traces with local paths, FX node
    dumps): they help nobody at deploy time and leak the build machine's paths."""
    for node in model.graph.node:
        del node.metadata_props[:]
    for value in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        del value.metadata_props[:]


def file_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Path, size and sha256 of an artifact."""
    p = Path(path)
    return {"path": str(p), "size_bytes": p.stat().st_size, "sha256": sha256_file(p)}


def ort_session(path_or_bytes: str | os.PathLike[str] | bytes, threads: int | None = None,
                *, emulate_qdq: bool = False) -> Any:
    """The runtime's ONNX Runtime session (:func:`facedistill.runtime.backends.open_session`)
    on the CPU, warnings off; a model it cannot load is an ExportError.

    ``emulate_qdq`` keeps ONNX Runtime from fusing Q/DQ pairs into its integer kernels: the
    INT8 gate then scores what a kernel with 32-bit sums computes (TensorRT, VNNI) on any CPU.
    """
    try:
        return open_session(path_or_bytes, device="cpu", threads=threads,
                            emulate_qdq=emulate_qdq, quiet=True)
    except ModelError as exc:
        raise ExportError(f"ONNX Runtime: {exc.message}", path=exc.path) from None


def parity_inputs(batch: int, size: Sequence[int], seed: int = PARITY_SEED) -> np.ndarray:
    """Deterministic float32 NCHW inputs for parity checks (standard normal, like normalised
    images)."""
    rng = np.random.default_rng(seed + batch)
    return rng.standard_normal((batch, 3, int(size[0]), int(size[1]))).astype(np.float32)


# ---------------------------------------------------------------------------------------
# Quiet export
# ---------------------------------------------------------------------------------------
_EXPORTER_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "torch.__trace",
                     "onnxscript", "torch.fx.experimental")


@contextlib.contextmanager
def quiet(loggers: Sequence[str] = _EXPORTER_LOGGERS) -> Iterator[io.StringIO]:
    """Silence a chatty tool (by default torch's exporter): stdout/stderr prints, warnings and
    the named loggers (``""`` is the root logger); yields what was printed (for errors)."""
    buf = io.StringIO()
    found = [logging.getLogger(n) for n in loggers]
    levels = [lg.level for lg in found]
    for lg in found:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf), \
                contextlib.redirect_stderr(buf):
            warnings.simplefilter("ignore")
            yield buf
    finally:
        for lg, level in zip(found, levels, strict=True):
            lg.setLevel(level)


def check_opset(opset: int) -> int:
    """``opset`` when this onnx package supports it (``MIN_OPSET`` ..), else ExportError."""
    import onnx.defs

    top = onnx.defs.onnx_opset_version()
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= top:
        raise ExportError(f"opset must be an integer from {MIN_OPSET} to {top}, got {opset!r}",
                          field="opset")
    return opset


def _torch_export(model: Any, example: Any, opset: int, path: Path) -> Any:
    """Export ``model`` to ``path`` (one file); returns the loaded ``ModelProto``."""
    import onnx
    import torch

    kwargs: dict[str, Any] = {
        "input_names": [INPUT_NAME],
        "output_names": list(OUTPUT_NAMES),
        "opset_version": opset,
        "verbose": False,
    }
    if opset >= 18:
        kwargs.update(dynamo=True, external_data=False,
                      dynamic_shapes=({0: torch.export.Dim("batch")},))
    else:  # the dynamo exporter emits opset 18 at least
        kwargs.update(dynamo=False, dynamic_axes={n: {0: "batch"}
                                                  for n in (INPUT_NAME, *OUTPUT_NAMES)})
    with quiet() as printed:
        try:
            torch.onnx.export(model, (example,), str(path), **kwargs)
        except Exception as exc:
            tail = " | ".join(printed.getvalue().strip().splitlines()[-3:])
            raise RuntimeError(f"torch.onnx.export failed: {exc}"
                               + (f" (exporter said: {tail})" if tail else "")) from exc
    extra = Path(str(path) + ".data")
    if extra.exists():  # never expected with external_data=False; keep the one-file promise
        proto = onnx.load(str(path), load_external_data=True, base_dir=str(path.parent))
        extra.unlink()
    else:
        proto = onnx.load(str(path))
    got = {o.domain: o.version for o in proto.opset_import}.get("")
    if got != opset:
        from onnx import version_converter

        proto = version_converter.convert_version(proto, opset)
    return proto


def _dim_names(value_info: Any) -> list[str | int]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_param or d.dim_value for d in dims]


def export_onnx(
    checkpoint: str | os.PathLike[str] | dict[str, Any],
    out: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    parity_batches: Sequence[int] = (1, 8),
    tolerance: float = PARITY_TOLERANCE,
    threads: int | None = None,
) -> dict[str, Any]:
    """Export a checkpoint (run folder, ``.pt`` or an already loaded checkpoint dict) to
    ``out`` as FP32 ONNX and verify it.

    Verification: ``onnx.checker`` (full check), graph input/outputs by name with the
    dynamic ``batch`` axis, and parity with PyTorch through ONNX Runtime at each of
    ``parity_batches``: the largest absolute difference of the probabilities must be at most
    ``tolerance``, else the file is removed and :class:`ExportError` raised.

    Returns ``{"path", "size_bytes", "sha256", "opset", "checker", "parity", "parity_logits",
    "seconds", "checkpoint", "checkpoint_sha256", "arch", "note"}``; ``parity`` maps each batch
    size (as a string) to the max abs difference of the probabilities.
    """
    import torch

    from facedistill.nn.checkpoint import load_checkpoint, model_from_checkpoint
    from facedistill.runtime.preprocess import Preprocess

    check_opset(opset)
    batches = sorted({int(b) for b in parity_batches})
    if not batches or batches[0] < 1:
        raise ExportError(f"parity batch sizes must be >= 1, got {list(parity_batches)}")
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    ckpt = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    ckpt_path = Path(ckpt["path"])
    note = check_checkpoint_version(ckpt.get("version"), ckpt_path)
    net = model_from_checkpoint(ckpt)
    preprocess = Preprocess.from_record(ckpt["preprocess"])
    val_balanced = ckpt.get("val_balanced")  # absent in checkpoints written before it
    if val_balanced is not None and len(val_balanced) != len(ckpt["attributes"]):
        raise ExportError(f"the checkpoint has {len(val_balanced)} val_balanced values for "
                          f"{len(ckpt['attributes'])} attributes", path=ckpt_path)
    meta = build_metadata(
        version=__version__, arch=ckpt["arch"], preprocess=ckpt["preprocess"],
        attributes=list(ckpt["attributes"]), logit_thresholds=list(ckpt["thresholds"]),
        precision="fp32", source_sha256=sha256_file(ckpt_path), val_balanced=val_balanced,
        regions=getattr(net, "fixed_regions", lambda: None)())
    seconds["load"] = time.perf_counter() - t0

    class WithProbabilities(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.net = inner

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.net(x)
            return torch.sigmoid(logits), logits

    wrapped = WithProbabilities(net).eval()
    out = Path(out)
    t0 = time.perf_counter()
    example = torch.from_numpy(parity_inputs(2, preprocess.size))
    with atomic_path(out) as raw:
        proto = _torch_export(wrapped, example, opset, raw)
        strip_node_metadata(proto)
        proto.doc_string = f"facedistill {__version__}: {ckpt['arch']['arch']} from {ckpt_path.name}"
        set_metadata(proto, meta)
        import onnx

        onnx.save_model(proto, str(raw), save_as_external_data=False)
    seconds["export"] = time.perf_counter() - t0

    try:
        t0 = time.perf_counter()
        check_onnx(out)
        _check_signature(proto, out, len(ckpt["attributes"]))
        seconds["check"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        session = ort_session(out, threads)
        parity: dict[str, float] = {}
        parity_logits: dict[str, float] = {}
        for b in batches:
            x = parity_inputs(b, preprocess.size)
            with torch.inference_mode():
                ref_p, ref_l = (t.numpy() for t in wrapped(torch.from_numpy(x)))
            got_p, got_l = session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
            if got_p.shape != ref_p.shape:
                raise ExportError(f"ONNX Runtime returned shape {got_p.shape} at batch {b}, "
                                  f"PyTorch {ref_p.shape}", path=out)
            parity[str(b)] = float(np.max(np.abs(got_p - ref_p)))
            parity_logits[str(b)] = float(np.max(np.abs(got_l - ref_l)))
            if not parity[str(b)] <= tolerance:
                raise ExportError(f"ONNX Runtime and PyTorch differ by {parity[str(b)]:.3g} in "
                                  f"the probabilities at batch {b} (tolerance {tolerance:g})",
                                  path=out)
        seconds["parity"] = time.perf_counter() - t0
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return {
        **file_record(out),
        "precision": "fp32",
        "opset": opset,
        "checker": True,
        "parity": parity,
        "parity_logits": parity_logits,
        "seconds": seconds,
        "checkpoint": str(ckpt_path),
        "checkpoint_sha256": meta["source_sha256"],
        "checkpoint_version": ckpt.get("version"),
        "arch": dict(ckpt["arch"]),
        "note": note,
    }


def _check_signature(proto: Any, path: Path, num_attrs: int) -> None:
    """The graph has input ``input`` [batch, 3, H, W] and outputs probabilities/logits
    [batch, A]."""
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    if inputs != [INPUT_NAME] or outputs != list(OUTPUT_NAMES):
        raise ExportError(f"unexpected graph signature {inputs} -> {outputs}", path=path)
    if _dim_names(proto.graph.input[0])[0] != "batch":
        raise ExportError("the batch axis of the input is not dynamic", path=path)
    for o in proto.graph.output:
        if _dim_names(o) != ["batch", num_attrs]:
            raise ExportError(f"output {o.name} has shape {_dim_names(o)}, expected "
                              f"['batch', {num_attrs}]", path=path)
