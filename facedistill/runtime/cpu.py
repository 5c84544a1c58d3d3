"""What this CPU's integer kernels do with an INT8 model (torch-free, numpy-free).

ONNX Runtime's x86 INT8 convolution/GEMM kernels multiply unsigned 8-bit activations by
signed 8-bit weights. Without VNNI they use ``vpmaddubsw``, which adds two such products
into a *saturating 16-bit* lane: ``255 * (|w1| + |w2|)`` overflows 32767 as soon as two
neighbouring weights sum past 128 in magnitude, which full-range (8-bit, +-127) weights do.
With VNNI (``vpdpbusd``, AVX512-VNNI or AVX-VNNI, and AMX) the products go straight into 32-bit
sums, as do Arm's dot-product (``sdot``/``udot``) kernels; other Arm cores are not measured
here and are treated as saturating. Weights kept to 7 bits (``reduce_range``, +-64) cannot
saturate anywhere: ``255 * 128 = 32640``.

Measured on an AVX2-only AMD EPYC (ONNX Runtime 1.32): a 2-epoch SNet3 exported with 8-bit
weights gave probabilities up to 0.27 away from ONNX Runtime's own float emulation of the
same Q/DQ graph, already 56% off in the first convolution; with 7-bit weights the integer
kernels match that emulation to 1e-7 (``docs/export.md``).

:func:`int8_class` names the class of a CPU from its ``/proc/cpuinfo`` flags;
:func:`saturates_full_range` says whether that class saturates 8-bit weights.
"""

from __future__ import annotations

import logging
import os
import platform
import re
from collections.abc import Iterable
from pathlib import Path

ROOT = Path("/")
_log = logging.getLogger("facedistill")
_warned: set[str] = set()

VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
INT8_CLASSES = ("x86-vnni", "x86-avx512", "x86-avx2", "x86", "arm64-dotprod", "arm64",
                "unknown")
"""From the safest to the least known; ``x86-avx512`` means AVX-512 *without* VNNI."""


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpuinfo_blocks(root: Path = ROOT) -> list[dict[str, str]]:
    """``/proc/cpuinfo`` (under ``root``) as one ``{field: value}`` map per CPU."""
    text = _read(root / "proc/cpuinfo")
    blocks = []
    for chunk in re.split(r"\n\s*\n", text):
        fields = {}
        for line in chunk.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip().lower()] = value.strip()
        if fields:
            blocks.append(fields)
    return blocks


def cpu_flags(root: Path = ROOT) -> set[str]:
    """CPU feature flags (x86 ``flags``, aarch64 ``Features``) of the first CPU."""
    for b in cpuinfo_blocks(root):
        text = b.get("flags") or b.get("features")
        if text:
            return set(text.split())
    return set()


def int8_class(flags: Iterable[str] | None = None, machine: str | None = None) -> str:
    """This CPU's INT8 kernel class, one of :data:`INT8_CLASSES` (arguments for tests)."""
    flags = cpu_flags() if flags is None else set(flags)
    machine = (machine or platform.machine() or "").lower()
    if machine in ("x86_64", "amd64", "i686", "x86"):
        if flags & set(VNNI_FLAGS):
            return "x86-vnni"
        if "avx512bw" in flags or "avx512f" in flags:
            return "x86-avx512"
        if "avx2" in flags:
            return "x86-avx2"
        return "x86" if flags else "unknown"
    if machine in ("aarch64", "arm64"):
        return "arm64-dotprod" if "asimddp" in flags else "arm64"
    return "unknown"


def saturates_full_range(cls: str) -> bool:
    """Whether ONNX Runtime's integer kernels on CPU class ``cls`` saturate 8-bit weights
    (x86 without VNNI; an unknown class is assumed to)."""
    return cls not in ("x86-vnni", "arm64-dotprod")


def cpu_record(root: Path = ROOT) -> dict[str, object]:
    """``{"int8_class", "vnni", "model"}`` of this machine, for reports and metadata."""
    flags = cpu_flags(root)
    cls = int8_class(flags)
    model = next((b["model name"] for b in cpuinfo_blocks(root) if b.get("model name")),
                 platform.processor() or None)
    return {"int8_class": cls, "vnni": sorted(flags & set(VNNI_FLAGS)), "model": model,
            "machine": platform.machine(), "cores": os.cpu_count()}


def int8_warning(weight_bits: int | None, recipe: str | None, source: str,
                 cls: str | None = None) -> str | None:
    """The one-line warning for running an INT8 file with ``weight_bits``-bit weights through
    ONNX Runtime's CPU kernels on CPU class ``cls`` (default: this one), or None when safe."""
    if weight_bits is None or weight_bits <= 7:
        return None
    cls = cls or int8_class()
    if not saturates_full_range(cls):
        return None
    what = f"recipe {recipe!r}" if recipe else "exported before INT8 recipes"
    return (f"warning: {source}: INT8 with 8-bit weights ({what}) saturates in ONNX Runtime's "
            f"integer kernels on this CPU ({cls}, no VNNI): expect wrong probabilities; "
            "export it with --int8-recipe cpu for this machine")


def warn_int8(weight_bits: int | None, recipe: str | None, source: str) -> str | None:
    """Log :func:`int8_warning` once per file and process; returns it."""
    msg = int8_warning(weight_bits, recipe, source)
    if msg and msg not in _warned:
        _warned.add(msg)
        _log.warning(msg)
    return msg
