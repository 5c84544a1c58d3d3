"""Fake ``tensorrt`` and ``cuda-python`` modules: enough of both APIs to drive the TensorRT
runner and builder on a machine without a GPU, recording every call that matters; and
:func:`write_engine`, a stand-in engine with its sibling ONNX and sidecar.

"Device" memory is host memory (ctypes buffers addressed like device pointers), copies run at
once, and the fake engine computes something checkable per batch item:
``probabilities[i, j] = (j + 1) * sum(x[i])`` and ``logits[i, j] = -sum(x[i])``. Stream capture
records enqueues instead of running them; a launched graph replays what it recorded. Like
TensorRT, a context refuses shapes outside the profile, and the first enqueue after a shape
change cannot be captured.
"""

from __future__ import annotations

import ctypes
import enum
import itertools
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from facedistill.runtime import engine as engine_mod
from facedistill.runtime.engine import sidecar_path
from facedistill.runtime.metadata import build_metadata
from facedistill.runtime.preprocess import Preprocess

OK = 0


class CudaErr(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100


ERROR_TEXT = {
    0: b"no error", 2: b"out of memory",
    35: b"CUDA driver version is insufficient for CUDA runtime version",
    100: b"no CUDA-capable device is detected",
}


class Handle:
    """A stream / event / graph handle: ``int()`` gives its address-like id."""

    _ids = itertools.count(0x1000)

    def __init__(self, kind: str) -> None:
        self.kind, self.id = kind, next(self._ids)
        self.capture: list[Any] | None = None  # streams: ops recorded while capturing
        self.ops: list[Any] = []  # graphs

    def __int__(self) -> int:
        return self.id


class Props:
    def __init__(self, name: bytes, cc: tuple[int, int], memory: int) -> None:
        self.name, (self.major, self.minor), self.totalGlobalMem = name, cc, memory


class FakeCudart:
    """``cuda.bindings.runtime``: results are ``(cudaError_t, *values)`` tuples."""

    cudaError_t = CudaErr

    class cudaDeviceAttr(enum.IntEnum):
        cudaDevAttrMultiProcessorCount = 16
        cudaDevAttrIntegrated = 18

    class cudaMemcpyKind(enum.IntEnum):
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    class cudaStreamCaptureMode(enum.IntEnum):
        cudaStreamCaptureModeGlobal = 0
        cudaStreamCaptureModeThreadLocal = 1

    def __init__(self, *, name: bytes = b"Orin (nvgpu)", cc: tuple[int, int] = (8, 7),
                 sm_count: int = 16, integrated: bool = False, memory_mib: int = 61440,
                 device_count: int = 1, count_error: int = OK, malloc_error: int = OK,
                 driver: int = 12060, runtime: int = 12060) -> None:
        self.props = Props(name, cc, memory_mib << 20)
        self.sm_count, self.integrated = sm_count, integrated
        self.device_count, self.count_error, self.malloc_error = (device_count, count_error,
                                                                  malloc_error)
        self.driver, self.runtime = driver, runtime
        self.calls: list[tuple[Any, ...]] = []
        self.memory: dict[int, Any] = {}
        self.streams: dict[int, Handle] = {}
        self.current_device: int | None = None

    # -- errors and versions ----------------------------------------------------------------
    def cudaGetErrorName(self, err: Any) -> tuple[Any, bytes]:
        return CudaErr.cudaSuccess, CudaErr(int(err)).name.encode()

    def cudaGetErrorString(self, err: Any) -> tuple[Any, bytes]:
        return CudaErr.cudaSuccess, ERROR_TEXT[int(err)]

    def cudaDriverGetVersion(self) -> tuple[Any, int]:
        return CudaErr.cudaSuccess, self.driver

    def cudaRuntimeGetVersion(self) -> tuple[Any, int]:
        return CudaErr.cudaSuccess, self.runtime

    # -- devices --------------------------------------------------------------------------------
    def cudaGetDeviceCount(self) -> tuple[Any, int]:
        if self.count_error:
            return CudaErr(self.count_error), 0
        return CudaErr.cudaSuccess, self.device_count

    def cudaSetDevice(self, device: int) -> tuple[Any]:
        self.calls.append(("cudaSetDevice", device, threading.get_ident()))
        self.current_device = device
        return (CudaErr.cudaSuccess,)

    def cudaGetDeviceProperties(self, device: int) -> tuple[Any, Props]:
        return CudaErr.cudaSuccess, self.props

    def cudaDeviceGetAttribute(self, attr: Any, device: int) -> tuple[Any, int]:
        if attr == self.cudaDeviceAttr.cudaDevAttrMultiProcessorCount:
            return CudaErr.cudaSuccess, self.sm_count
        return CudaErr.cudaSuccess, int(self.integrated)

    # -- memory ---------------------------------------------------------------------------------
    def _alloc(self, what: str, nbytes: int) -> tuple[Any, int]:
        if self.malloc_error:
            return CudaErr(self.malloc_error), 0
        buf = ctypes.create_string_buffer(nbytes)
        ptr = ctypes.addressof(buf)
        self.memory[ptr] = buf
        self.calls.append((what, nbytes))
        return CudaErr.cudaSuccess, ptr

    def cudaMalloc(self, nbytes: int) -> tuple[Any, int]:
        return self._alloc("cudaMalloc", nbytes)

    def cudaMallocHost(self, nbytes: int) -> tuple[Any, int]:
        return self._alloc("cudaMallocHost", nbytes)

    def cudaFree(self, ptr: int) -> tuple[Any]:
        self.calls.append(("cudaFree", ptr))
        return (CudaErr.cudaSuccess,)

    def cudaFreeHost(self, ptr: int) -> tuple[Any]:
        self.calls.append(("cudaFreeHost", ptr))
        return (CudaErr.cudaSuccess,)

    def cudaMemcpyAsync(self, dst: int, src: int, nbytes: int, kind: Any, stream: Any
                        ) -> tuple[Any]:
        self.calls.append(("cudaMemcpyAsync", self.cudaMemcpyKind(kind).name, nbytes))
        ctypes.memmove(dst, src, nbytes)
        return (CudaErr.cudaSuccess,)

    # -- streams, events, graphs ----------------------------------------------------------------
    def cudaStreamCreate(self) -> tuple[Any, Handle]:
        stream = Handle("stream")
        self.streams[int(stream)] = stream
        return CudaErr.cudaSuccess, stream

    def cudaStreamDestroy(self, stream: Handle) -> tuple[Any]:
        self.calls.append(("cudaStreamDestroy",))
        return (CudaErr.cudaSuccess,)

    def cudaStreamSynchronize(self, stream: Handle) -> tuple[Any]:
        return (CudaErr.cudaSuccess,)

    def cudaEventCreate(self) -> tuple[Any, Handle]:
        return CudaErr.cudaSuccess, Handle("event")

    def cudaEventDestroy(self, event: Handle) -> tuple[Any]:
        return (CudaErr.cudaSuccess,)

    def cudaEventRecord(self, event: Handle, stream: Handle) -> tuple[Any]:
        return (CudaErr.cudaSuccess,)

    def cudaEventElapsedTime(self, start: Handle, stop: Handle) -> tuple[Any, float]:
        return CudaErr.cudaSuccess, 0.25

    def stream(self, handle: int) -> Handle | None:
        """The stream object behind an ``int()`` handle (the fake context's view)."""
        return self.streams.get(handle)

    def cudaStreamBeginCapture(self, stream: Handle, mode: Any) -> tuple[Any]:
        self.calls.append(("cudaStreamBeginCapture", self.cudaStreamCaptureMode(mode).name))
        stream.capture = []
        return (CudaErr.cudaSuccess,)

    def cudaStreamEndCapture(self, stream: Handle) -> tuple[Any, Handle]:
        graph = Handle("graph")
        graph.ops, stream.capture = stream.capture or [], None
        self.calls.append(("cudaStreamEndCapture", graph.id))
        return CudaErr.cudaSuccess, graph

    def cudaGraphInstantiate(self, graph: Handle, flags: int) -> tuple[Any, Handle]:
        exe = Handle("graph_exec")
        exe.ops = list(graph.ops)
        self.calls.append(("cudaGraphInstantiate", exe.id))
        return CudaErr.cudaSuccess, exe

    def cudaGraphDestroy(self, graph: Handle) -> tuple[Any]:
        return (CudaErr.cudaSuccess,)

    def cudaGraphExecDestroy(self, exe: Handle) -> tuple[Any]:
        self.calls.append(("cudaGraphExecDestroy", exe.id))
        return (CudaErr.cudaSuccess,)

    def cudaGraphLaunch(self, exe: Handle, stream: Handle) -> tuple[Any]:
        self.calls.append(("cudaGraphLaunch", exe.id))
        for op in exe.ops:
            op()
        return (CudaErr.cudaSuccess,)

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == name]


# -- tensorrt -------------------------------------------------------------------------------------
class TensorIOMode(enum.Enum):
    INPUT = 1
    OUTPUT = 2


class FakeContext:
    """An execution context: shapes, addresses, and the fake model's arithmetic."""

    def __init__(self, engine: FakeEngine, index: int) -> None:
        self.engine, self.index = engine, index
        self.batch: int | None = None
        self.addresses: dict[str, int] = {}
        self.ready = False  # enqueued since the last shape change (TensorRT needs that first)

    def _log(self, *what: Any) -> None:
        self.engine.calls.append((what[0], self.index, *what[1:]))

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self._log("set_input_shape", tuple(shape))
        lo, hi = self.engine.profile
        if name != self.engine.input_name or tuple(shape[1:]) != self.engine.chw:
            return False
        if not lo <= shape[0] <= hi:
            return False
        self.batch, self.ready = int(shape[0]), False
        return True

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self._log("set_tensor_address", name)
        self.addresses[name] = int(ptr)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        assert self.batch is not None
        if name == self.engine.input_name:
            return (self.batch, *self.engine.chw)
        return (self.batch, self.engine.n_attrs)

    def execute_async_v3(self, stream_handle: int) -> bool:
        stream = self.engine.cudart.stream(int(stream_handle))
        if stream is not None and stream.capture is not None:
            self._log("capture_enqueue")
            if not self.ready:
                return False
            stream.capture.append(self.compute)
            return True
        self._log("execute_async_v3")
        self.compute()
        self.ready = True
        return True

    def compute(self) -> None:
        """Outputs from the input buffer; logs ``("compute", context, batch, item sums)``."""
        e, b = self.engine, int(self.batch or 0)
        size = b * int(np.prod(e.chw))
        x = np.frombuffer((ctypes.c_float * size).from_address(self.addresses[e.input_name]),
                          dtype=np.float32).reshape(b, -1)
        total = x.sum(axis=1, dtype=np.float64).astype(np.float32)
        self.engine.calls.append(("compute", self.index, b, tuple(float(t) for t in total)))
        for name, values in (("probabilities", total[:, None] * np.arange(1, e.n_attrs + 1)),
                             ("logits", np.repeat(-total[:, None], e.n_attrs, axis=1))):
            out = np.frombuffer((ctypes.c_float * (b * e.n_attrs)).from_address(
                self.addresses[name]), dtype=np.float32)
            out[:] = values.astype(np.float32).reshape(-1)


class FakeEngine:
    def __init__(self, cudart: FakeCudart, *, input_name: str = "input",
                 chw: tuple[int, int, int] = (3, 4, 4), n_attrs: int = 2,
                 profile: tuple[int, int] = (1, 8)) -> None:
        self.cudart, self.input_name, self.chw, self.n_attrs = cudart, input_name, chw, n_attrs
        self.profile = profile
        self.names = [input_name, "probabilities", "logits"]
        self.contexts: list[FakeContext] = []
        self.calls: list[tuple[Any, ...]] = []

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode.INPUT if name == self.input_name else TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> str:
        return "float32"

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (-1, *self.chw) if name == self.input_name else (-1, self.n_attrs)

    def create_execution_context(self) -> FakeContext:
        ctx = FakeContext(self, len(self.contexts))
        self.contexts.append(ctx)
        self.calls.append(("create_execution_context", ctx.index))
        return ctx

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == name]


class Logger:
    ERROR, WARNING = 1, 2

    def __init__(self, level: int) -> None:
        self.level = level


class BuilderFlag(enum.IntEnum):
    FP16 = 0
    INT8 = 1
    TF32 = 6


class NetworkDefinitionCreationFlag(enum.IntEnum):
    STRONGLY_TYPED = 1


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0


class FakeConfig:
    def __init__(self) -> None:
        self.flags = {BuilderFlag.TF32}  # TensorRT's default: TF32 allowed
        self.pools: dict[Any, int] = {}
        self.profiles: list[Any] = []
        self.calls: list[tuple[Any, ...]] = []

    def set_flag(self, flag: Any) -> None:
        self.calls.append(("set_flag", BuilderFlag(flag).name))
        self.flags.add(BuilderFlag(flag))

    def clear_flag(self, flag: Any) -> None:
        self.calls.append(("clear_flag", BuilderFlag(flag).name))
        self.flags.discard(BuilderFlag(flag))

    def get_flag(self, flag: Any) -> bool:
        return BuilderFlag(flag) in self.flags

    def set_memory_pool_limit(self, pool: Any, nbytes: int) -> None:
        self.pools[pool] = nbytes

    def add_optimization_profile(self, profile: Any) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, blob: bytes) -> Any:
        return Cache()

    def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool:
        self.cache = cache
        return True

    def get_timing_cache(self) -> Any:
        return self.cache


class Cache:
    def serialize(self) -> bytes:
        return b"timing cache"


class Tensor:
    def __init__(self, name: str) -> None:
        self.name = name


class Network:
    def __init__(self, flags: int, input_names: list[str]) -> None:
        self.flags, self.inputs = flags, [Tensor(n) for n in input_names]

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, i: int) -> Tensor:
        return self.inputs[i]


class Profile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[Any, ...]] = {}

    def set_shape(self, name: str, lo: Any, opt: Any, hi: Any) -> None:
        self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))


class FakeTrt:
    """The ``tensorrt`` module: a runtime deserialising ``engine``, and a builder whose network
    has ``network_inputs``; ``configs`` / ``networks`` keep what the builder made."""

    Logger = Logger
    TensorIOMode = TensorIOMode
    BuilderFlag = BuilderFlag
    NetworkDefinitionCreationFlag = NetworkDefinitionCreationFlag
    MemoryPoolType = MemoryPoolType

    def __init__(self, engine: FakeEngine | None = None, *, version: str = "10.3.0",
                 network_inputs: tuple[str, ...] = ("input",)) -> None:
        self.__version__ = version
        self.engine = engine
        self.network_inputs = list(network_inputs)
        self.configs: list[FakeConfig] = []
        self.networks: list[Network] = []

    @staticmethod
    def nptype(dtype: Any) -> Any:
        return np.dtype(dtype).type

    # -- runtime --------------------------------------------------------------------------------
    def Runtime(self, logger: Logger) -> Any:  # noqa: N802 - the tensorrt spelling
        trt = self

        class _Runtime:
            def deserialize_cuda_engine(self, blob: bytes) -> FakeEngine | None:
                return trt.engine

        return _Runtime()

    # -- builder --------------------------------------------------------------------------------
    def Builder(self, logger: Logger) -> Any:  # noqa: N802
        trt = self

        class _Builder:
            def create_network(self, flags: int) -> Network:
                trt.networks.append(Network(flags, trt.network_inputs))
                return trt.networks[-1]

            def create_builder_config(self) -> FakeConfig:
                trt.configs.append(FakeConfig())
                return trt.configs[-1]

            def create_optimization_profile(self) -> Profile:
                return Profile()

            def build_serialized_network(self, network: Network, config: FakeConfig) -> bytes:
                return b"serialized engine"

        return _Builder()

    def OnnxParser(self, network: Network, logger: Logger) -> Any:  # noqa: N802
        class _Parser:
            num_errors = 0

            def parse(self, blob: bytes) -> bool:
                return True

        return _Parser()


def install(monkeypatch: Any, trt: FakeTrt, cudart: FakeCudart, root: Path) -> None:
    """Make ``require_tensorrt`` / ``require_cudart`` return the fakes (in the runtime and the
    builder) and read Jetson files under ``root``."""
    from facedistill.export import tensorrt as export_trt

    for module in (engine_mod, export_trt):
        monkeypatch.setattr(module, "require_tensorrt", lambda: trt)
        monkeypatch.setattr(module, "require_cudart", lambda: cudart)
    monkeypatch.setattr(engine_mod, "SYSTEM_ROOT", root)


# -- engines on disk -------------------------------------------------------------------------
CHW = (3, 4, 4)
ITEM = int(np.prod(CHW))
AGX = "NVIDIA Jetson AGX Orin Developer Kit"
NANO = "NVIDIA Jetson Orin Nano Developer Kit"


def metadata(input_name: str = "input") -> dict[str, str]:
    """ONNX metadata of a 2-attribute model on ``CHW`` inputs."""
    meta = build_metadata(
        version="test", arch={"arch": "snet3", "width": 1.0, "num_attrs": 2},
        preprocess=Preprocess(size=CHW[1:]).to_record(), attributes=["Smiling", "Young"],
        logit_thresholds=[0.0, 0.0], precision="fp32", source_sha256="0" * 64)
    meta["input_name"] = input_name
    return meta


def write_engine(folder: Path, *, profile: tuple[int, int, int] = (1, 8, 32),
                 device: dict[str, Any] | None = None, input_name: str = "input") -> Path:
    """A stand-in engine file, its sibling ONNX and the sidecar the builder would write."""
    from facedistill.export.tensorrt import build_sidecar

    folder.mkdir(parents=True, exist_ok=True)
    engine, onnx = folder / "snet3.fp32.engine", folder / "snet3.fp32.onnx"
    engine.write_bytes(b"serialized engine")
    onnx.write_bytes(b"the onnx it was built from")
    side = build_sidecar(engine=engine, onnx_path=onnx, trt_version="10.3.0",
                         gpu_name="Orin (nvgpu)", compute_capability="8.7", precision="fp32",
                         profile=profile, metadata=metadata(input_name), device=device,
                         build={"strongly_typed": True, "tf32": False})
    sidecar_path(engine).write_text(json.dumps(side))
    return engine


def batch(n: int, seed: int = 0) -> np.ndarray:
    """``n`` random float32 items of shape ``CHW``."""
    return np.random.default_rng(seed).standard_normal((n, *CHW)).astype(np.float32)


def expected(x: np.ndarray) -> dict[str, np.ndarray]:
    """What the fake engine computes for ``x``."""
    total = x.reshape(len(x), -1).sum(axis=1, dtype=np.float64).astype(np.float32)
    return {"probabilities": total[:, None] * np.arange(1, 3, dtype=np.float32),
            "logits": np.repeat(-total[:, None], 2, axis=1)}
