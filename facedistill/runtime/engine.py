"""TensorRT engines at run time: sidecar checks and a small runner. No torch.

An engine file (``<arch>.<precision>.engine``) only runs on the TensorRT version and the GPU
(compute capability) it was built for, so every engine has a sidecar JSON next to it,
``<engine>.json`` (e.g. ``snet3.int8.engine.json``):

=======================  ======================================================================
key                      value
=======================  ======================================================================
``format``               ``facedistill.engine/v1``
``engine``               the engine's file name; ``engine_sha256`` its sha256
``trt_version``          TensorRT version that built it (``tensorrt.__version__``)
``gpu_name``             the GPU it was built on (``cudaGetDeviceProperties().name``)
``compute_capability``   ``"major.minor"`` of that GPU
``precision``            ``fp32`` | ``fp16`` | ``int8`` (the ONNX variant it was built from)
``profile``              ``{"min", "opt", "max"}`` batch sizes of the optimization profile
``onnx``                 the ONNX file name; ``onnx_sha256`` its sha256
``built_at``             UTC time of the build (ISO 8601)
``build``                how it was built: strongly typed or flags, workspace, timing cache
``metadata``             the ONNX's ``metadata_props`` map, copied (see
                         :mod:`facedistill.runtime.metadata`): preprocessing, attributes,
                         thresholds
=======================  ======================================================================

:func:`check_sidecar` is pure: it compares a sidecar with the running TensorRT version and
GPU and raises :class:`EngineMismatchError` (a one-line :class:`UserError` naming the field)
on any mismatch. :class:`TrtRunner` loads an engine after that check and runs it with the
name-based TensorRT >= 10 API (``num_io_tensors``, ``get_tensor_name``, ``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``) and cuda-python (``cuda.bindings.runtime``) for
device memory, streams, events and optional CUDA graphs.

``tensorrt`` and ``cuda-python`` are imported lazily; without them, :func:`require_tensorrt`
and :func:`require_cudart` raise a one-line :class:`TensorRTMissingError` saying what to install.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facedistill.errors import UserError
from facedistill.io import sha256_file
from facedistill.runtime.metadata import INPUT_NAME, ModelInfo, parse_metadata

SIDECAR_FORMAT = "facedistill.engine/v1"
SIDECAR_KEYS = ("format", "engine", "engine_sha256", "trt_version", "gpu_name",
                "compute_capability", "precision", "profile", "onnx", "onnx_sha256",
                "built_at", "build", "metadata")
REQUIRED_SIDECAR_KEYS = ("format", "trt_version", "gpu_name", "compute_capability",
                         "precision", "profile", "onnx_sha256", "built_at", "metadata")
MIN_TRT_MAJOR = 10
INSTALL_HINT = ("pip install 'facedistill[trt]' (on Jetson, TensorRT comes with JetPack: "
                "use JetPack's python3-libnvinfer, e.g. a venv made with "
                "--system-site-packages)")


class EngineMismatchError(UserError):
    """An engine does not fit this machine, or its sidecar is missing or inconsistent."""


class TensorRTMissingError(UserError):
    """``tensorrt`` or ``cuda-python`` cannot be imported, or no CUDA GPU is visible."""


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
    naming the field ``batch``.
    """
    if isinstance(spec, bool):
        raise UserError(f"batch sizes must be integers, got {spec!r}", field="batch")
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
                        field="batch") from None
    if not 1 <= len(nums) <= 3:
        raise UserError(f"give 1 to 3 batch sizes (min,opt,max), got {len(nums)}", field="batch")
    if len(nums) == 1:
        nums = nums * 3
    elif len(nums) == 2:
        nums = [nums[0], nums[1], nums[1]]
    lo, opt, hi = nums
    if lo < 1 or not lo <= opt <= hi:
        raise UserError(f"batch sizes must satisfy 1 <= min <= opt <= max, got {lo},{opt},{hi}",
                        field="batch")
    return lo, opt, hi


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


def _norm_cc(cc: Any) -> str:
    if isinstance(cc, (tuple, list)) and len(cc) == 2:
        return f"{int(cc[0])}.{int(cc[1])}"
    return str(cc).strip()


def check_sidecar(
    sidecar: Mapping[str, Any],
    *,
    trt_version: str,
    gpu_name: str,
    compute_capability: str | tuple[int, int],
    engine_sha256: str | None = None,
    path: str | os.PathLike[str] | None = None,
) -> None:
    """Refuse an engine that was not built for this TensorRT and GPU (pure; no TensorRT).

    Checks in order: ``format``, the required keys, ``trt_version`` (same major.minor.patch),
    ``compute_capability``, ``gpu_name``, and, when ``engine_sha256`` is given, that the engine
    file is the one the sidecar describes. Raises :class:`EngineMismatchError` naming the
    field, with what to do about it.
    """
    rebuild = "rebuild the engine on this machine (facedistill export RUN --trt)"
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
                                  f"{rebuild}", path=path, field="trt_version")
    built_cc, here_cc = _norm_cc(sidecar["compute_capability"]), _norm_cc(compute_capability)
    if built_cc != here_cc:
        raise EngineMismatchError(f"built for compute capability {built_cc} "
                                  f"({sidecar['gpu_name']}), this GPU is {here_cc} ({gpu_name}); "
                                  f"{rebuild}", path=path, field="compute_capability")
    if str(sidecar["gpu_name"]).strip() != str(gpu_name).strip():
        raise EngineMismatchError(f"built on {sidecar['gpu_name']}, this GPU is {gpu_name}; "
                                  f"{rebuild}", path=path, field="gpu_name")
    if engine_sha256 is not None:
        want = sidecar.get("engine_sha256")
        if not want:
            raise EngineMismatchError("the sidecar lacks engine_sha256", path=path,
                                      field="engine_sha256")
        if want != engine_sha256:
            raise EngineMismatchError("the engine file changed since the sidecar was written "
                                      f"(sha256 {engine_sha256[:12]}..., sidecar says "
                                      f"{str(want)[:12]}...); {rebuild}", path=path,
                                      field="engine_sha256")
    profile = sidecar["profile"]
    if not isinstance(profile, Mapping) or any(k not in profile for k in ("min", "opt", "max")):
        raise EngineMismatchError("expected {\"min\", \"opt\", \"max\"}", path=path,
                                  field="profile")


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


def _error_code(err: Any) -> int:
    """cuda-python's ``cudaError_t`` (an enum) or a plain int, as an int."""
    return int(getattr(err, "value", err))


def cuda_check(result: Any, what: str) -> Any:
    """Unpack a cuda-python ``(err, *values)`` result; raise on an error code."""
    if not isinstance(result, tuple):
        result = (result,)
    err, values = result[0], result[1:]
    if _error_code(err) != 0:
        raise RuntimeError(f"CUDA error in {what}: {err}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def gpu_identity(device: int = 0, cudart: Any = None) -> tuple[str, str]:
    """``(gpu_name, "major.minor")`` of CUDA device ``device``."""
    cudart = cudart or require_cudart()
    err, count = cudart.cudaGetDeviceCount()
    if _error_code(err) != 0 or count == 0:
        raise TensorRTMissingError("no CUDA GPU is visible (TensorRT needs an NVIDIA GPU and "
                                   "driver)")
    if not 0 <= device < count:
        raise UserError(f"GPU {device} does not exist ({count} visible)", field="device")
    props = cuda_check(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\0", 1)[0].decode("utf-8", "replace")
    return str(name).strip(), f"{props.major}.{props.minor}"


# ---------------------------------------------------------------------------------------
# Runner
# ---------------------------------------------------------------------------------------
class _Pinned:
    """A page-locked host buffer viewed as a flat numpy array."""

    def __init__(self, cudart: Any, nbytes: int, dtype: np.dtype) -> None:
        self.cudart = cudart
        self.ptr = int(cuda_check(cudart.cudaMallocHost(nbytes), "cudaMallocHost"))
        self.nbytes = nbytes
        buf = (ctypes.c_byte * nbytes).from_address(self.ptr)
        self.array = np.frombuffer(buf, dtype=dtype)

    def free(self) -> None:
        if self.ptr:
            self.cudart.cudaFreeHost(self.ptr)
            self.ptr = 0


class TrtRunner:
    """Load a TensorRT engine (after :func:`check_sidecar`) and run it on numpy batches.

    ``info`` is the model's :class:`ModelInfo` (from the sidecar's copy of the ONNX
    metadata); ``profile`` the (min, opt, max) batch sizes. :meth:`run` takes float32 NCHW
    and returns the outputs by name (``probabilities``, ``logits``) as float32 arrays; a batch
    larger than the profile's max runs in chunks. ``gpu_compute_ms`` is the GPU time of the
    last :meth:`run` (CUDA events around the enqueue, transfers excluded). With
    ``cuda_graph=True`` each batch size is captured once into a CUDA graph and replayed.
    """

    def __init__(self, engine_path: str | os.PathLike[str], device: int = 0, *,
                 cuda_graph: bool = False, verify_sha: bool = True) -> None:
        self.path = Path(engine_path)
        self.sidecar = read_sidecar(self.path)
        trt = require_tensorrt()
        cudart = require_cudart()
        self._trt, self._cudart = trt, cudart
        self._closed = True
        gpu_name, cc = gpu_identity(device, cudart)
        check_sidecar(self.sidecar, trt_version=trt.__version__, gpu_name=gpu_name,
                      compute_capability=cc,
                      engine_sha256=sha256_file(self.path) if verify_sha else None,
                      path=sidecar_path(self.path))
        self.info = sidecar_info(self.sidecar, source=str(sidecar_path(self.path)))
        prof = self.sidecar["profile"]
        self.profile = (int(prof["min"]), int(prof["opt"]), int(prof["max"]))
        self.device = device
        self.gpu_name, self.compute_capability = gpu_name, cc
        self.cuda_graph = cuda_graph
        self.gpu_compute_ms: float | None = None

        cuda_check(cudart.cudaSetDevice(device), "cudaSetDevice")
        self._logger = trt.Logger(trt.Logger.ERROR)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise EngineMismatchError("TensorRT cannot deserialize this engine (corrupt, or "
                                      "built by another TensorRT)", path=self.path)
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._inputs = [n for n in names
                        if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if n not in self._inputs]
        if self._inputs != [self.info.input_name or INPUT_NAME]:
            raise EngineMismatchError(f"engine inputs {self._inputs}, expected "
                                      f"[{self.info.input_name!r}]", path=self.path)
        self._closed = False
        self._buffers: dict[str, tuple[int, _Pinned, np.dtype]] = {}
        self._graphs: dict[int, Any] = {}
        h, w = self.info.preprocess.size
        self.input_shape = (3, int(h), int(w))
        max_b = self.profile[2]
        try:
            for name in names:
                dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
                if name in self._inputs:
                    per_item = int(np.prod(self.input_shape))
                else:
                    shape = list(self._engine.get_tensor_shape(name))
                    per_item = int(np.prod([d for d in shape[1:]])) if len(shape) > 1 else 1
                nbytes = max_b * per_item * dtype.itemsize
                dev = int(cuda_check(cudart.cudaMalloc(nbytes), "cudaMalloc"))
                host = _Pinned(cudart, nbytes, dtype)
                self._buffers[name] = (dev, host, dtype)
                self._context.set_tensor_address(name, dev)
            self._stream = cuda_check(cudart.cudaStreamCreate(), "cudaStreamCreate")
            self._start = cuda_check(cudart.cudaEventCreate(), "cudaEventCreate")
            self._stop = cuda_check(cudart.cudaEventCreate(), "cudaEventCreate")
        except BaseException:
            self.close()
            raise

    # -- running ----------------------------------------------------------------------------
    def _check_input(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype != np.float32:
            raise UserError(f"input must be float32, got {x.dtype}")
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise UserError(f"input must be [N, {', '.join(map(str, self.input_shape))}], got "
                            f"{list(x.shape)}")
        if x.shape[0] < self.profile[0]:
            raise UserError(f"batch {x.shape[0]} is below the engine's minimum "
                            f"{self.profile[0]}", field="batch")
        return np.ascontiguousarray(x)

    def _enqueue(self, batch: int) -> None:
        cudart = self._cudart
        if self.cuda_graph and batch in self._graphs:
            cuda_check(cudart.cudaGraphLaunch(self._graphs[batch], self._stream),
                       "cudaGraphLaunch")
            return
        if not self._context.execute_async_v3(int(self._stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        if self.cuda_graph and batch not in self._graphs:
            # TensorRT needs one enqueue after a shape change before capture; this was it.
            mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
            cuda_check(cudart.cudaStreamBeginCapture(self._stream, mode),
                       "cudaStreamBeginCapture")
            ok = self._context.execute_async_v3(int(self._stream))
            graph = cuda_check(cudart.cudaStreamEndCapture(self._stream), "cudaStreamEndCapture")
            if not ok:
                raise RuntimeError("TensorRT execute_async_v3 failed during graph capture")
            self._graphs[batch] = cuda_check(cudart.cudaGraphInstantiate(graph, 0),
                                             "cudaGraphInstantiate")
            cudart.cudaGraphDestroy(graph)

    def _run_chunk(self, x: np.ndarray) -> tuple[dict[str, np.ndarray], float]:
        cudart = self._cudart
        b = x.shape[0]
        if not self._context.set_input_shape(self._inputs[0], tuple(x.shape)):
            raise UserError(f"TensorRT refused input shape {list(x.shape)}", field="batch")
        dev_in, host_in, _ = self._buffers[self._inputs[0]]
        host_in.array[:x.size] = x.reshape(-1)
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        cuda_check(cudart.cudaMemcpyAsync(dev_in, host_in.ptr, x.nbytes, h2d, self._stream),
                   "cudaMemcpyAsync")
        cuda_check(cudart.cudaEventRecord(self._start, self._stream), "cudaEventRecord")
        self._enqueue(b)
        cuda_check(cudart.cudaEventRecord(self._stop, self._stream), "cudaEventRecord")
        shapes = {n: tuple(self._context.get_tensor_shape(n)) for n in self._outputs}
        for name in self._outputs:
            dev, host, dtype = self._buffers[name]
            nbytes = int(np.prod(shapes[name])) * dtype.itemsize
            cuda_check(cudart.cudaMemcpyAsync(host.ptr, dev, nbytes, d2h, self._stream),
                       "cudaMemcpyAsync")
        cuda_check(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        ms = float(cuda_check(cudart.cudaEventElapsedTime(self._start, self._stop),
                              "cudaEventElapsedTime"))
        out = {}
        for name in self._outputs:
            _dev, host, _dtype = self._buffers[name]
            n = int(np.prod(shapes[name]))
            out[name] = host.array[:n].reshape(shapes[name]).astype(np.float32, copy=True)
        return out, ms

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs by name for float32 NCHW ``x``; ``gpu_compute_ms`` is set to the GPU time."""
        if self._closed:
            raise RuntimeError("the runner is closed")
        x = self._check_input(x)
        max_b = self.profile[2]
        parts: list[dict[str, np.ndarray]] = []
        total_ms = 0.0
        for start in range(0, x.shape[0], max_b):
            out, ms = self._run_chunk(x[start:start + max_b])
            parts.append(out)
            total_ms += ms
        self.gpu_compute_ms = total_ms
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    __call__ = run

    # -- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        """Free device memory, pinned buffers, graphs, events and the stream (idempotent)."""
        cudart = self.__dict__.get("_cudart")
        if cudart is not None:
            for graph in self.__dict__.pop("_graphs", {}).values():
                cudart.cudaGraphExecDestroy(graph)
            for dev, host, _dtype in self.__dict__.pop("_buffers", {}).values():
                cudart.cudaFree(dev)
                host.free()
            for attr in ("_start", "_stop"):
                event = self.__dict__.pop(attr, None)
                if event is not None:
                    cudart.cudaEventDestroy(event)
            stream = self.__dict__.pop("_stream", None)
            if stream is not None:
                cudart.cudaStreamDestroy(stream)
        self._context = self._engine = None
        self._closed = True

    def __enter__(self) -> TrtRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        with contextlib.suppress(Exception):
            self.close()
