"""TensorRT engines at run time: sidecar checks and a small runner. No torch.

An engine file (``<arch>.<precision>.engine``) only runs on the TensorRT version and the GPU
it was built for, so every engine has a sidecar JSON next to it, ``<engine>.json`` (e.g.
``snet3.int8.engine.json``):

=======================  ======================================================================
key                      value
=======================  ======================================================================
``format``               ``facedistill.engine/v1``
``engine``               the engine's file name; ``engine_sha256`` its sha256
``trt_version``          TensorRT version that built it (``tensorrt.__version__``)
``gpu_name``             the GPU it was built on (``cudaGetDeviceProperties().name``)
``compute_capability``   ``"major.minor"`` of that GPU
``device``               (optional) that GPU's identity: ``sm_count``, ``total_memory_mib``,
                         ``integrated``, ``jetson`` and, on a Jetson, ``device_tree_model``
                         (``/proc/device-tree/model``): AGX Orin and Orin Nano both say "Orin"
``precision``            ``fp32`` | ``fp16`` | ``int8`` (the ONNX variant it was built from)
``profile``              ``{"min", "opt", "max"}`` batch sizes of the optimization profile
``onnx``                 the ONNX file name; ``onnx_sha256`` its sha256
``built_at``             UTC time of the build (ISO 8601)
``build``                how it was built: strongly typed or flags, TF32, workspace, timing cache
``metadata``             the ONNX's ``metadata_props`` map, copied (see
                         :mod:`facedistill.runtime.metadata`): preprocessing, attributes,
                         thresholds
=======================  ======================================================================

``device`` was added within format v1: a sidecar without it (or without one of its fields)
still loads, the missing values count as unknown, not as a mismatch.

:func:`check_sidecar` is pure: it compares a sidecar with the running TensorRT version and
GPU and raises :class:`EngineMismatchError` (a one-line :class:`UserError` naming the field)
on any mismatch; :func:`check_onnx_sibling` refuses a stale engine whose ONNX (beside it)
changed since the build. :class:`TrtRunner` loads an engine after those checks and runs it
with the name-based TensorRT >= 10 API and cuda-python (``cuda.bindings.runtime``).

``tensorrt`` and ``cuda-python`` are imported lazily; without them, :func:`require_tensorrt`
and :func:`require_cudart` raise a one-line :class:`TensorRTMissingError` saying what to install.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facedistill.errors import UserError
from facedistill.io import sha256_file
from facedistill.runtime.metadata import ModelInfo, parse_metadata

SIDECAR_FORMAT = "facedistill.engine/v1"
SIDECAR_KEYS = ("format", "engine", "engine_sha256", "trt_version", "gpu_name",
                "compute_capability", "device", "precision", "profile", "onnx", "onnx_sha256",
                "built_at", "build", "metadata")
REQUIRED_SIDECAR_KEYS = ("format", "trt_version", "gpu_name", "compute_capability",
                         "precision", "profile", "onnx_sha256", "built_at", "metadata")
DEVICE_KEYS = ("sm_count", "total_memory_mib", "integrated", "jetson", "device_tree_model")
MIN_TRT_MAJOR = 10
MAX_CONTEXTS = 8
INSTALL_HINT = ("pip install 'facedistill[trt-cu13]' (driver >= 580) or "
                "'facedistill[trt-cu12]' (driver >= 535); on Jetson (JetPack 6): apt install "
                "python3-libnvinfer, make the venv with --system-site-packages, then pip install "
                "'facedistill[trt-jetson]' (cuda-python 12.x); see docs/jetson.md")
REBUILD = "rebuild the engine on this machine (facedistill export RUN --trt)"
SYSTEM_ROOT = Path("/")
TEGRA_RELEASE = "etc/nv_tegra_release"
DEVICE_TREE_MODEL = "proc/device-tree/model"
INSUFFICIENT_DRIVER = 35  # cudaErrorInsufficientDriver


class EngineMismatchError(UserError):
    """An engine does not fit this machine, or its sidecar is missing or inconsistent."""


class TensorRTMissingError(UserError):
    """``tensorrt`` or ``cuda-python`` cannot be imported, or no CUDA GPU is visible."""


class CudaError(RuntimeError):
    """A cuda-python call returned an error; ``code`` and ``error`` (its text) say which."""

    def __init__(self, what: str, code: int, error: str) -> None:
        self.what, self.code, self.error = what, code, error
        super().__init__(f"CUDA error in {what}: {error}")


# ---------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------
def sidecar_path(engine: str | os.PathLike[str]) -> Path:
    """The sidecar of an engine file: ``<engine>.json``."""
    return Path(os.fspath(engine) + ".json")


def parse_profile(spec: str | int | Sequence[int]) -> tuple[int, int, int]:
    """Batch sizes ``(min, opt, max)`` of an optimization profile.

    ``"1,8,32"`` -> (1, 8, 32); two values ``"1,32"`` -> (1, 32, 32) (optimised for the
    largest); one value ``"8"`` or ``8`` -> (8, 8, 8) (a fixed batch, e.g. for CUDA graphs).
    Sizes must be integers with ``1 <= min <= opt <= max``; anything else is a UserError
    naming the field ``trt_profile`` (the option that sets it).
    """
    if isinstance(spec, bool):
        raise UserError(f"batch sizes must be integers, got {spec!r}", field="trt_profile")
    if isinstance(spec, (int, np.integer)):
        values: list[Any] = [int(spec)]
    elif isinstance(spec, str):
        values = [v.strip() for v in spec.split(",")]
    else:
        values = list(spec)
    try:
        nums = [int(v) for v in values]
        if any(isinstance(v, float) and not float(v).is_integer() for v in values):
            raise ValueError
    except (TypeError, ValueError):
        raise UserError(f"batch sizes must be integers like 1,8,32; got {spec!r}",
                        field="trt_profile") from None
    if not 1 <= len(nums) <= 3:
        raise UserError(f"give 1 to 3 batch sizes (min,opt,max), got {len(nums)}",
                        field="trt_profile")
    if len(nums) == 1:
        nums = nums * 3
    elif len(nums) == 2:
        nums = [nums[0], nums[1], nums[1]]
    lo, opt, hi = nums
    if lo < 1 or not lo <= opt <= hi:
        raise UserError(f"batch sizes must satisfy 1 <= min <= opt <= max, got {lo},{opt},{hi}",
                        field="trt_profile")
    return lo, opt, hi


def plan_chunks(n: int, lo: int, hi: int) -> list[tuple[int, int, int]]:
    """How ``n`` items run on a profile ``[lo, hi]``: ``(start, stop, batch)`` per chunk.

    Chunks hold at most ``hi`` items; a chunk smaller than ``lo`` runs padded to ``batch = lo``
    (its outputs are sliced back to ``stop - start``). ``plan_chunks(35, 4, 32)`` is
    ``[(0, 32, 32), (32, 35, 4)]``.
    """
    if n < 1 or lo < 1 or hi < lo:
        raise ValueError(f"need n >= 1 and 1 <= lo <= hi, got n={n}, lo={lo}, hi={hi}")
    return [(start, min(start + hi, n), max(min(hi, n - start), lo))
            for start in range(0, n, hi)]


def version_tuple(version: str) -> tuple[int, ...]:
    """``"10.3.0.26"`` -> (10, 3, 0, 26); non-numeric tails are ignored."""
    found = re.match(r"^\s*(\d+(?:\.\d+)*)", str(version))
    if not found:
        raise ValueError(f"not a version string: {version!r}")
    return tuple(int(p) for p in found.group(1).split("."))


def same_trt_version(a: str, b: str) -> bool:
    """Engines are tied to TensorRT's major.minor.patch (a 4th, build, component is ignored)."""
    try:
        return version_tuple(a)[:3] == version_tuple(b)[:3]
    except ValueError:
        return str(a).strip() == str(b).strip()


def cuda_version_text(version: int) -> str:
    """CUDA's integer version as ``major.minor``: 12060 -> ``"12.6"``."""
    return f"{version // 1000}.{(version % 1000) // 10}"


def _norm_cc(cc: Any) -> str:
    if isinstance(cc, (tuple, list)) and len(cc) == 2:
        return f"{int(cc[0])}.{int(cc[1])}"
    return str(cc).strip()


def _check_device(built: Any, here: Mapping[str, Any] | None,
                  path: str | os.PathLike[str] | None) -> None:
    """Refuse another SM count or Jetson model; a value missing on either side is unknown."""
    if not isinstance(built, Mapping) or here is None:
        return
    sm_built, sm_here = built.get("sm_count"), here.get("sm_count")
    if isinstance(sm_built, int) and isinstance(sm_here, int) and sm_built != sm_here:
        raise EngineMismatchError(f"built on a GPU with {sm_built} SMs, this one has {sm_here} "
                                  f"(TensorRT tunes its kernels for the SM count); {REBUILD}",
                                  path=path, field="device.sm_count")
    dt_built, dt_here = built.get("device_tree_model"), here.get("device_tree_model")
    if dt_built and dt_here and str(dt_built).strip() != str(dt_here).strip():
        raise EngineMismatchError(f"built on {dt_built}, this is {dt_here}; {REBUILD}",
                                  path=path, field="device.device_tree_model")


def check_sidecar(
    sidecar: Mapping[str, Any],
    *,
    trt_version: str,
    gpu_name: str,
    compute_capability: str | tuple[int, int],
    engine_sha256: str | None = None,
    device: Mapping[str, Any] | None = None,
    path: str | os.PathLike[str] | None = None,
) -> None:
    """Refuse an engine that was not built for this TensorRT and GPU (pure; no TensorRT).

    Checks in order: ``format``, the required keys, ``trt_version`` (same major.minor.patch),
    ``compute_capability``, ``gpu_name``, then, when ``device`` (this GPU's
    :meth:`GpuInfo.record`) is given, the SM count and the Jetson device-tree model (either
    unknown on one side: not compared), and, when ``engine_sha256`` is given, that the engine
    file is the one the sidecar describes. Raises :class:`EngineMismatchError` naming the
    field, with what to do about it.
    """
    if not isinstance(sidecar, Mapping):
        raise EngineMismatchError("the sidecar is not a JSON object", path=path)
    fmt = sidecar.get("format")
    if fmt != SIDECAR_FORMAT:
        raise EngineMismatchError(f"unknown sidecar format {fmt!r} (expected "
                                  f"{SIDECAR_FORMAT!r})", path=path, field="format")
    for key in REQUIRED_SIDECAR_KEYS:
        if key not in sidecar:
            raise EngineMismatchError(f"the sidecar lacks {key}", path=path, field=key)
    if not isinstance(sidecar["metadata"], Mapping):
        raise EngineMismatchError("expected the ONNX metadata map", path=path, field="metadata")
    built = str(sidecar["trt_version"])
    if not same_trt_version(built, trt_version):
        raise EngineMismatchError(f"built with TensorRT {built}, this is TensorRT {trt_version}; "
                                  f"{REBUILD}", path=path, field="trt_version")
    built_cc, here_cc = _norm_cc(sidecar["compute_capability"]), _norm_cc(compute_capability)
    if built_cc != here_cc:
        raise EngineMismatchError(f"built for compute capability {built_cc} "
                                  f"({sidecar['gpu_name']}), this GPU is {here_cc} ({gpu_name}); "
                                  f"{REBUILD}", path=path, field="compute_capability")
    if str(sidecar["gpu_name"]).strip() != str(gpu_name).strip():
        raise EngineMismatchError(f"built on {sidecar['gpu_name']}, this GPU is {gpu_name}; "
                                  f"{REBUILD}", path=path, field="gpu_name")
    _check_device(sidecar.get("device"), device, path)
    if engine_sha256 is not None:
        want = sidecar.get("engine_sha256")
        if not want:
            raise EngineMismatchError("the sidecar lacks engine_sha256", path=path,
                                      field="engine_sha256")
        if want != engine_sha256:
            raise EngineMismatchError("the engine file changed since the sidecar was written "
                                      f"(sha256 {engine_sha256[:12]}..., sidecar says "
                                      f"{str(want)[:12]}...); {REBUILD}", path=path,
                                      field="engine_sha256")
    profile = sidecar["profile"]
    if not isinstance(profile, Mapping) or any(k not in profile for k in ("min", "opt", "max")):
        raise EngineMismatchError("expected {\"min\", \"opt\", \"max\"}", path=path,
                                  field="profile")


def check_onnx_sibling(sidecar: Mapping[str, Any], engine: str | os.PathLike[str]) -> None:
    """Refuse a stale engine: the ONNX the sidecar names lies beside the engine and its sha256
    is not the sidecar's ``onnx_sha256`` (the ONNX was re-exported, the engine was not).

    Nothing is checked when that ONNX file is absent (engines travel without it).
    """
    name, want = sidecar.get("onnx"), sidecar.get("onnx_sha256")
    if not name or not want:
        return
    onnx = Path(engine).parent / Path(str(name)).name
    if not onnx.is_file():
        return
    got = sha256_file(onnx)
    if got != want:
        raise EngineMismatchError(f"stale engine: {onnx.name} beside it changed since the build "
                                  f"(sha256 {got[:12]}..., sidecar says {str(want)[:12]}...); "
                                  "rebuild with facedistill export --trt",
                                  path=sidecar_path(engine), field="onnx_sha256")


def read_sidecar(engine: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the sidecar of ``engine``; missing or unreadable is :class:`EngineMismatchError`."""
    side = sidecar_path(engine)
    if not Path(engine).is_file():
        raise EngineMismatchError("no such engine file", path=engine)
    if not side.is_file():
        raise EngineMismatchError(f"no sidecar {side.name} next to the engine (it says which "
                                  "TensorRT/GPU the engine is for); rebuild the engine",
                                  path=engine, field="sidecar")
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise EngineMismatchError(f"unreadable sidecar: {reason}", path=side) from None
    if not isinstance(data, dict):
        raise EngineMismatchError("the sidecar is not a JSON object", path=side)
    return data


def sidecar_info(sidecar: Mapping[str, Any], source: str | None = None) -> ModelInfo:
    """The :class:`ModelInfo` of the ONNX metadata copied into a sidecar."""
    return parse_metadata(dict(sidecar["metadata"]), source=source)


# ---------------------------------------------------------------------------------------
# Jetson detection (files under a root, injectable for tests)
# ---------------------------------------------------------------------------------------
def read_device_tree_model(path: str | os.PathLike[str]) -> str | None:
    """``/proc/device-tree/model`` as text, its NUL terminator stripped; None if unreadable."""
    try:
        raw = Path(path).read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b"").decode("utf-8", "replace").strip() or None


def is_jetson(tegra_release: str | os.PathLike[str], device_tree_model: str | os.PathLike[str],
              integrated: bool | None = None) -> bool:
    """Whether this is a Jetson: ``tegra_release`` (``/etc/nv_tegra_release``) exists, the
    device-tree model names an "NVIDIA Jetson", or the GPU is integrated
    (``cudaDevAttrIntegrated``)."""
    if Path(tegra_release).is_file():
        return True
    model = read_device_tree_model(device_tree_model)
    return bool(model and "nvidia jetson" in model.lower()) or bool(integrated)


def jetson_files(root: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
    """``(nv_tegra_release, device-tree model)`` paths under ``root`` (default ``/``)."""
    base = Path(root) if root is not None else SYSTEM_ROOT
    return base / TEGRA_RELEASE, base / DEVICE_TREE_MODEL


# ---------------------------------------------------------------------------------------
# Lazy imports
# ---------------------------------------------------------------------------------------
def require_tensorrt() -> Any:
    """``import tensorrt`` (>= 10), or a one-line :class:`TensorRTMissingError` saying what to
    install."""
    try:
        import tensorrt as trt
    except Exception as exc:  # noqa: BLE001 - a broken install raises OSError, RuntimeError...
        why = "" if isinstance(exc, ModuleNotFoundError) else f" ({type(exc).__name__}: {exc})"
        raise TensorRTMissingError(f"TensorRT is not installed{why}; {INSTALL_HINT}") from None
    version = getattr(trt, "__version__", "0")
    try:
        major = version_tuple(version)[0]
    except ValueError:
        major = 0
    if major < MIN_TRT_MAJOR:
        raise TensorRTMissingError(f"TensorRT {version} is too old: facedistill needs TensorRT "
                                   f">= {MIN_TRT_MAJOR} (JetPack 6 or newer on Jetson)")
    return trt


def require_cudart() -> Any:
    """cuda-python's runtime module (``cuda.bindings.runtime``, or the older
    ``cuda.cudart``), or a one-line :class:`TensorRTMissingError`."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[no-redef]  # cuda-python < 12.6
        except ImportError:
            raise TensorRTMissingError(f"cuda-python is not installed; {INSTALL_HINT}") from None
    return cudart


# ---------------------------------------------------------------------------------------
# CUDA errors and the GPU's identity
# ---------------------------------------------------------------------------------------
def _error_code(err: Any) -> int:
    """cuda-python's ``cudaError_t`` (an enum) or a plain int, as an int."""
    return int(getattr(err, "value", err))


def _cuda_string(result: Any) -> str | None:
    """The text of ``cudaGetErrorName``/``cudaGetErrorString`` results (``(err, bytes)``)."""
    if isinstance(result, tuple):
        if len(result) < 2 or _error_code(result[0]) != 0:
            return None
        result = result[1]
    if isinstance(result, (bytes, bytearray)):
        result = bytes(result).decode("utf-8", "replace")
    text = "" if result is None else str(result).strip()
    return text or None


def cuda_error_text(err: Any, cudart: Any = None) -> str:
    """``"cudaErrorMemoryAllocation (2): out of memory"``: the error's name (from
    ``cudaGetErrorName``, else the enum's name), its code and ``cudaGetErrorString``."""
    code = _error_code(err)
    name = desc = None
    if cudart is not None:
        enum = err
        if not hasattr(err, "value") and hasattr(cudart, "cudaError_t"):
            with contextlib.suppress(Exception):
                enum = cudart.cudaError_t(code)
        with contextlib.suppress(Exception):
            name = _cuda_string(cudart.cudaGetErrorName(enum))
        with contextlib.suppress(Exception):
            desc = _cuda_string(cudart.cudaGetErrorString(enum))
    name = name or getattr(err, "name", None) or "cudaError"
    return f"{name} ({code})" + (f": {desc}" if desc else "")


def cuda_check(result: Any, what: str, cudart: Any = None) -> Any:
    """Unpack a cuda-python ``(err, *values)`` result; raise :class:`CudaError` naming ``what``
    and the error (name and description need ``cudart``) on an error code."""
    if not isinstance(result, tuple):
        result = (result,)
    err, values = result[0], result[1:]
    code = _error_code(err)
    if code != 0:
        hint = _driver_hint(code, cudart) if cudart is not None else ""
        raise CudaError(what, code, cuda_error_text(err, cudart) + hint)
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def cuda_api_version(cudart: Any, fn: str) -> tuple[str | None, str | None]:
    """``cudaDriverGetVersion`` / ``cudaRuntimeGetVersion`` as (``major.minor``, None), or
    (None, why not)."""
    try:
        err, version = getattr(cudart, fn)()[:2]
    except Exception as exc:  # noqa: BLE001 - old bindings, no driver library
        return None, f"{fn} failed: {exc}"
    code = _error_code(err)
    if code != 0:
        return None, f"{fn} returned {cuda_error_text(err, cudart)}"
    if int(version) <= 0:
        return None, "no CUDA driver"
    return cuda_version_text(int(version)), None


def _driver_hint(code: int, cudart: Any) -> str:
    """What to do about ``cudaErrorInsufficientDriver``: match cuda-python to the driver."""
    if code != INSUFFICIENT_DRIVER:
        return ""
    driver = cuda_api_version(cudart, "cudaDriverGetVersion")[0] or "unknown"
    runtime = cuda_api_version(cudart, "cudaRuntimeGetVersion")[0] or "unknown"
    have = f" (driver: CUDA {driver}, cuda-python: CUDA {runtime})"
    return (f"{have}: cuda-python's major version must match the driver's CUDA major, e.g. "
            "cuda-python 12.x on JetPack 6 (pip install 'cuda-python>=12,<13')")


def _device_count(cudart: Any) -> int:
    result = cudart.cudaGetDeviceCount()
    err = result[0] if isinstance(result, tuple) else result
    code = _error_code(err)
    if code != 0:
        raise TensorRTMissingError(f"no CUDA GPU is visible: cudaGetDeviceCount failed with "
                                   f"{cuda_error_text(err, cudart)}{_driver_hint(code, cudart)}")
    count = int(result[1])
    if count == 0:
        raise TensorRTMissingError("no CUDA GPU is visible (cudaGetDeviceCount found none; "
                                   "TensorRT needs an NVIDIA GPU and driver)")
    return count


def _device_attribute(cudart: Any, name: str, device: int) -> int:
    attr = getattr(cudart.cudaDeviceAttr, name)
    return int(cuda_check(cudart.cudaDeviceGetAttribute(attr, device),
                          f"cudaDeviceGetAttribute({name})", cudart))


@dataclass(frozen=True)
class GpuInfo:
    """Who a CUDA device is: what an engine's sidecar records and checks."""

    name: str
    compute_capability: str
    sm_count: int
    total_memory_mib: int | None
    integrated: bool
    jetson: bool
    device_tree_model: str | None

    def record(self) -> dict[str, Any]:
        """The sidecar's ``device`` object."""
        return {k: getattr(self, k) for k in DEVICE_KEYS}


def probe_gpu(device: int = 0, cudart: Any = None,
              root: str | os.PathLike[str] | None = None) -> GpuInfo:
    """Name, compute capability, SM count, memory, integrated flag and (on a Jetson, read
    under ``root``) the device-tree model of CUDA device ``device``."""
    cudart = cudart or require_cudart()
    count = _device_count(cudart)
    if not 0 <= device < count:
        raise UserError(f"GPU {device} does not exist ({count} visible)", field="device")
    props = cuda_check(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties",
                       cudart)
    name = props.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\0", 1)[0].decode("utf-8", "replace")
    integrated = bool(_device_attribute(cudart, "cudaDevAttrIntegrated", device))
    memory = getattr(props, "totalGlobalMem", None)
    release, model = jetson_files(root)
    jetson = is_jetson(release, model, integrated)
    return GpuInfo(
        name=str(name).strip(), compute_capability=f"{props.major}.{props.minor}",
        sm_count=_device_attribute(cudart, "cudaDevAttrMultiProcessorCount", device),
        total_memory_mib=int(memory) >> 20 if memory else None, integrated=integrated,
        jetson=jetson, device_tree_model=read_device_tree_model(model) if jetson else None)


def gpu_identity(device: int = 0, cudart: Any = None) -> tuple[str, str]:
    """``(gpu_name, "major.minor")`` of CUDA device ``device``."""
    info = probe_gpu(device, cudart)
    return info.name, info.compute_capability


# ---------------------------------------------------------------------------------------
# Runner
# ---------------------------------------------------------------------------------------
class _Pinned:
    """A page-locked host buffer viewed as a flat numpy array."""

    def __init__(self, cudart: Any, nbytes: int, dtype: np.dtype) -> None:
        self.cudart = cudart
        self.ptr = int(cuda_check(cudart.cudaMallocHost(nbytes), "cudaMallocHost", cudart))
        self.nbytes = nbytes
        buf = (ctypes.c_byte * nbytes).from_address(self.ptr)
        self.array = np.frombuffer(buf, dtype=dtype)

    def free(self) -> None:
        if self.ptr:
            self.cudart.cudaFreeHost(self.ptr)
            self.ptr = 0


@dataclass
class _Buffer:
    """One I/O tensor: device memory and a pinned host copy for the profile's largest batch."""

    dev: int
    host: _Pinned
    dtype: np.dtype
    per_item: int  # elements per batch item


@dataclass
class _Slot:
    """One batch size: its own execution context, shapes set once, and its CUDA graph."""

    batch: int
    context: Any
    out_shapes: dict[str, tuple[int, ...]]
    graph: Any = None


class TrtRunner:
    """Load a TensorRT engine (after :func:`check_sidecar` and :func:`check_onnx_sibling`)
    and run it on numpy batches.

    ``info`` is the model's :class:`ModelInfo` (from the sidecar's copy of the ONNX
    metadata); ``profile`` the (min, opt, max) batch sizes. :meth:`run` takes float32 NCHW
    and returns the outputs by name (``probabilities``, ``logits``) as float32 arrays.

    Every batch size gets its own execution context (at most ``max_contexts``, the least
    recently used one is dropped beyond that), whose input shape and tensor addresses are set
    once, so alternating batch sizes never pay a shape change; with ``cuda_graph=True`` each
    context also captures its own CUDA graph once and replays it. A batch above the profile's
    maximum runs in chunks, a chunk below its minimum is zero-padded to it (outputs sliced
    back). ``gpu_compute_ms`` is the GPU time of the last :meth:`run` (CUDA events around the
    enqueues, transfers excluded).

    Design: TensorRT >= 10 lets several contexts share one optimization profile (the
    ``PROFILE_SHARING_0806`` preview feature of 8.6 is always on since 10.0, and every new
    context starts on profile 0), so one profile serves all contexts and engines need no
    profile per bench batch size. All contexts run one after another on the runner's single
    stream (synchronised after each chunk), so they share the I/O device buffers: a graph
    captures those fixed addresses and never overlaps another context's work.
    """

    def __init__(self, engine_path: str | os.PathLike[str], device: int = 0, *,
                 cuda_graph: bool = False, verify_sha: bool = True,
                 max_contexts: int = MAX_CONTEXTS) -> None:
        self._closed = True
        self.path = Path(engine_path)
        self.sidecar = read_sidecar(self.path)
        check_onnx_sibling(self.sidecar, self.path)
        trt, cudart = require_tensorrt(), require_cudart()
        self._trt, self._cudart = trt, cudart
        self.device, self.cuda_graph = device, cuda_graph
        self.max_contexts = max(1, int(max_contexts))
        self.gpu_compute_ms: float | None = None
        gpu = probe_gpu(device, cudart)
        self._set_device()
        check_sidecar(self.sidecar, trt_version=trt.__version__, gpu_name=gpu.name,
                      compute_capability=gpu.compute_capability, device=gpu.record(),
                      engine_sha256=sha256_file(self.path) if verify_sha else None,
                      path=sidecar_path(self.path))
        self.gpu = gpu
        self.gpu_name, self.compute_capability = gpu.name, gpu.compute_capability
        self.info = sidecar_info(self.sidecar, source=str(sidecar_path(self.path)))
        prof = self.sidecar["profile"]
        self.profile = (int(prof["min"]), int(prof["opt"]), int(prof["max"]))
        self._load_engine()
        self._slots: OrderedDict[int, _Slot] = OrderedDict()
        self._buffers: dict[str, _Buffer] = {}
        self._closed = False
        try:
            self._allocate()
        except BaseException:
            self.close()
            raise

    # -- setup ------------------------------------------------------------------------------
    def _set_device(self) -> None:
        cuda_check(self._cudart.cudaSetDevice(self.device), "cudaSetDevice", self._cudart)

    def _load_engine(self) -> None:
        trt = self._trt
        self._logger = trt.Logger(trt.Logger.ERROR)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise EngineMismatchError("TensorRT cannot deserialize this engine (corrupt, or "
                                      "built by another TensorRT)", path=self.path)
        engine = self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise EngineMismatchError(f"expected one input tensor, the engine has {inputs}",
                                      path=self.path)
        self.input_name = inputs[0]
        if self.info.input_name and self.info.input_name != self.input_name:
            raise EngineMismatchError(f"the engine's input is {self.input_name!r}, its metadata "
                                      f"says {self.info.input_name!r}", path=self.path,
                                      field="input_name")
        self._outputs = [n for n in names if n != self.input_name]
        self._names = names
        self.input_shape = self._item_shape()

    def _item_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one input item: the engine's, checked against the metadata's size."""
        h, w = self.info.preprocess.size
        want = (3, int(h), int(w))
        dims = [int(d) for d in self._engine.get_tensor_shape(self.input_name)]
        if len(dims) != 4 or any(d > 0 and d != e for d, e in zip(dims[1:], want, strict=True)):
            raise EngineMismatchError(f"the engine's input shape {dims} does not fit the "
                                      f"metadata's [N, {', '.join(map(str, want))}]",
                                      path=self.path, field="input_size")
        return want

    def _per_item(self, name: str) -> int:
        if name == self.input_name:
            return int(np.prod(self.input_shape))
        dims = [int(d) for d in self._engine.get_tensor_shape(name)][1:]
        if any(d < 0 for d in dims):
            raise EngineMismatchError(f"output {name!r} has a dynamic non-batch shape {dims}",
                                      path=self.path)
        return int(np.prod(dims)) if dims else 1

    def _allocate(self) -> None:
        cudart, max_b = self._cudart, self.profile[2]
        for name in self._names:
            dtype = np.dtype(self._trt.nptype(self._engine.get_tensor_dtype(name)))
            per_item = self._per_item(name)
            nbytes = max_b * per_item * dtype.itemsize
            dev = int(cuda_check(cudart.cudaMalloc(nbytes), "cudaMalloc", cudart))
            try:
                host = _Pinned(cudart, nbytes, dtype)
            except BaseException:
                cudart.cudaFree(dev)
                raise
            self._buffers[name] = _Buffer(dev, host, dtype, per_item)
        self._stream = cuda_check(cudart.cudaStreamCreate(), "cudaStreamCreate", cudart)
        self._start = cuda_check(cudart.cudaEventCreate(), "cudaEventCreate", cudart)
        self._stop = cuda_check(cudart.cudaEventCreate(), "cudaEventCreate", cudart)

    # -- one context per batch size -----------------------------------------------------------
    def _slot(self, batch: int) -> _Slot:
        """The context for ``batch``, made (shape, addresses, graph) on first use."""
        slot = self._slots.get(batch)
        if slot is not None:
            self._slots.move_to_end(batch)
            return slot
        while len(self._slots) >= self.max_contexts:
            self._drop(self._slots.popitem(last=False)[1])
        slot = self._new_slot(batch)
        self._slots[batch] = slot
        return slot

    def _new_slot(self, batch: int) -> _Slot:
        context = self._engine.create_execution_context()
        if context is None:
            raise RuntimeError("TensorRT could not create an execution context (out of device "
                               "memory?)")
        shape = (batch, *self.input_shape)
        if not context.set_input_shape(self.input_name, shape):
            raise UserError(f"TensorRT refused input shape {list(shape)}", field="batch")
        for name, buf in self._buffers.items():
            if not context.set_tensor_address(name, buf.dev):
                raise RuntimeError(f"TensorRT refused the address of tensor {name!r}")
        out_shapes = {n: tuple(int(d) for d in context.get_tensor_shape(n))
                      for n in self._outputs}
        slot = _Slot(batch, context, out_shapes)
        if self.cuda_graph:
            self._capture(slot)
        return slot

    def _capture(self, slot: _Slot) -> None:
        """Capture ``slot``'s enqueue into a CUDA graph; TensorRT needs one plain enqueue after
        the shape is set (it allocates then), so that runs first."""
        cudart, stream = self._cudart, self._stream
        self._execute(slot.context)
        cuda_check(cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize", cudart)
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        cuda_check(cudart.cudaStreamBeginCapture(stream, mode), "cudaStreamBeginCapture", cudart)
        ok = slot.context.execute_async_v3(int(stream))
        graph = cuda_check(cudart.cudaStreamEndCapture(stream), "cudaStreamEndCapture", cudart)
        try:
            if not ok:
                raise RuntimeError("TensorRT execute_async_v3 failed during graph capture")
            slot.graph = cuda_check(cudart.cudaGraphInstantiate(graph, 0),
                                    "cudaGraphInstantiate", cudart)
        finally:
            cudart.cudaGraphDestroy(graph)

    def _drop(self, slot: _Slot) -> None:
        if slot.graph is not None:
            self._cudart.cudaGraphExecDestroy(slot.graph)
            slot.graph = None
        slot.context = None

    def prepare(self, batch: int) -> None:
        """Make the contexts (and graphs) a batch of ``batch`` items runs on, so that the
        first :meth:`run` of that size pays no setup."""
        self._require_open()
        self._set_device()
        for _start, _stop, size in plan_chunks(int(batch), self.profile[0], self.profile[2]):
            self._slot(size)

    # -- running ----------------------------------------------------------------------------
    def _require_open(self) -> None:
        if self._closed:
            raise RuntimeError("the runner is closed")

    def _check_input(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype != np.float32:
            raise UserError(f"input must be float32, got {x.dtype}")
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape or x.shape[0] < 1:
            raise UserError(f"input must be [N >= 1, {', '.join(map(str, self.input_shape))}], "
                            f"got {list(x.shape)}")
        return np.ascontiguousarray(x)

    def _execute(self, context: Any) -> None:
        if not context.execute_async_v3(int(self._stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed")

    def _copy_in(self, x: np.ndarray, batch: int) -> None:
        """``x`` into the input buffer, zero-padded to ``batch`` items, then to the device."""
        cudart, buf = self._cudart, self._buffers[self.input_name]
        n, total = x.size, batch * buf.per_item
        buf.host.array[:n] = x.reshape(-1)
        buf.host.array[n:total] = 0
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        cuda_check(cudart.cudaMemcpyAsync(buf.dev, buf.host.ptr, total * buf.dtype.itemsize, h2d,
                                          self._stream), "cudaMemcpyAsync", cudart)

    def _copy_out(self, slot: _Slot) -> None:
        cudart = self._cudart
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name in self._outputs:
            buf = self._buffers[name]
            nbytes = int(np.prod(slot.out_shapes[name])) * buf.dtype.itemsize
            cuda_check(cudart.cudaMemcpyAsync(buf.host.ptr, buf.dev, nbytes, d2h, self._stream),
                       "cudaMemcpyAsync", cudart)

    def _run_chunk(self, x: np.ndarray, batch: int) -> tuple[dict[str, np.ndarray], float]:
        cudart = self._cudart
        slot = self._slot(batch)
        self._copy_in(x, batch)
        cuda_check(cudart.cudaEventRecord(self._start, self._stream), "cudaEventRecord", cudart)
        if slot.graph is not None:
            cuda_check(cudart.cudaGraphLaunch(slot.graph, self._stream), "cudaGraphLaunch",
                       cudart)
        else:
            self._execute(slot.context)
        cuda_check(cudart.cudaEventRecord(self._stop, self._stream), "cudaEventRecord", cudart)
        self._copy_out(slot)
        cuda_check(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize", cudart)
        ms = float(cuda_check(cudart.cudaEventElapsedTime(self._start, self._stop),
                              "cudaEventElapsedTime", cudart))
        out = {}
        for name in self._outputs:
            shape = slot.out_shapes[name]
            flat = self._buffers[name].host.array[:int(np.prod(shape))]
            out[name] = flat.reshape(shape)[:x.shape[0]].astype(np.float32, copy=True)
        return out, ms

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs by name for float32 NCHW ``x``; ``gpu_compute_ms`` is set to the GPU time.

        Sets the runner's CUDA device in the calling thread first (cheap), so a runner made in
        one thread runs in another; calls must still not overlap (wrap it in a lock)."""
        self._require_open()
        self._set_device()
        x = self._check_input(x)
        parts: list[dict[str, np.ndarray]] = []
        total_ms = 0.0
        for start, stop, batch in plan_chunks(x.shape[0], self.profile[0], self.profile[2]):
            out, ms = self._run_chunk(x[start:stop], batch)
            parts.append(out)
            total_ms += ms
        self.gpu_compute_ms = total_ms
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    __call__ = run

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        """The batch sizes that have a context now, least recently used first."""
        return tuple(self.__dict__.get("_slots", {}))

    # -- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        """Free graphs, contexts, device memory, pinned buffers, events and the stream
        (idempotent)."""
        cudart = self.__dict__.get("_cudart")
        slots = self.__dict__.pop("_slots", {})
        for slot in slots.values():
            if cudart is not None:
                self._drop(slot)
        if cudart is not None:
            for buf in self.__dict__.pop("_buffers", {}).values():
                cudart.cudaFree(buf.dev)
                buf.host.free()
            for attr in ("_start", "_stop"):
                event = self.__dict__.pop(attr, None)
                if event is not None:
                    cudart.cudaEventDestroy(event)
            stream = self.__dict__.pop("_stream", None)
            if stream is not None:
                cudart.cudaStreamDestroy(stream)
        self._engine = None
        self._closed = True

    def __enter__(self) -> TrtRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        with contextlib.suppress(Exception):
            self.close()
