"""Backends that run an exported model on a preprocessed NCHW float32 batch.

* :class:`OrtBackend`: an ``.onnx`` file through ONNX Runtime (CPU, or CUDA / TensorRT
  execution providers when installed and the device asks for a GPU).
* :class:`~facedistill.runtime.openvino.OvBackend`: an ``.onnx`` file through OpenVINO's CPU
  plugin (imported only when asked for: ``backend="ov"`` or a tuned setting);
* :class:`TrtBackend`: a TensorRT ``.engine`` through
  :class:`facedistill.runtime.engine.TrtRunner` (imported only when used); the engine's
  sidecar is checked against this machine's GPU and TensorRT first.

All read the model's metadata (:func:`facedistill.runtime.metadata.parse_metadata`) and
expose it as ``info``; ``run(x)`` returns the probabilities ``[N, A]``. None imports torch.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from facedistill.errors import ConfigError
from facedistill.runtime.cpu import warn_int8
from facedistill.runtime.errors import ModelError
from facedistill.runtime.metadata import MetadataError, ModelInfo, parse_metadata
from facedistill.runtime.tuning import Setting

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
BACKENDS = ("auto", "ort", "ov", "trt")
PROBABILITIES = "probabilities"
INSTALL_ORT = "onnxruntime is not installed: pip install onnxruntime (or onnxruntime-gpu)"

Device = str | int | None


class Backend(Protocol):
    """What :class:`~facedistill.runtime.predictor.Predictor` needs from a backend."""

    name: str
    info: ModelInfo
    #: the batch size the model needs exactly (static ONNX batch), else None
    fixed_batch: int | None
    #: the smallest batch it takes (TensorRT profile min; smaller batches are padded)
    min_batch: int
    #: the largest batch it takes in one call (TensorRT profile max), else None
    max_batch: int | None
    #: whether ``run`` may be called from several threads at once
    thread_safe: bool

    def run(self, x: np.ndarray) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def parse_device(device: Device) -> tuple[str, int]:
    """``"auto"``/None, ``"cpu"``, ``"cuda"``/``"gpu"``, ``"cuda:N"`` or an int N to
    (kind, index) with kind ``auto``, ``cpu`` or ``cuda``."""
    if device is None:
        return "auto", 0
    if isinstance(device, int) and not isinstance(device, bool):
        if device < 0:
            raise ConfigError(f"GPU index must be >= 0, got {device}", field="device")
        return "cuda", device
    text = str(device).strip().lower()
    if text in ("auto", "cpu"):
        return text, 0
    kind, _, index = text.partition(":")
    if kind in ("cuda", "gpu") and (not index or index.isdigit()):
        return "cuda", int(index or 0)
    raise ConfigError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or an int",
                      field="device")


def resolve_backend(path: Path, backend: str) -> str:
    """Which backend runs ``path``: ``ort`` for ``.onnx`` (or ``ov``, OpenVINO, when asked),
    ``trt`` for ``.engine``/``.plan``."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}: one of {', '.join(BACKENDS)}",
                          field="backend")
    suffix = path.suffix.lower()
    kind = "ort" if suffix in ONNX_SUFFIXES else "trt" if suffix in ENGINE_SUFFIXES else None
    if kind is None:
        raise ModelError(
            f"unknown model file type {suffix or '(no suffix)'!r}: expected .onnx (ONNX Runtime) "
            "or .engine (TensorRT)", path=path)
    if backend == "ov" and kind == "ort":
        return "ov"
    if backend != "auto" and backend != kind:
        hint = ("build an engine with 'facedistill export --trt' and pass the .engine"
                if backend == "trt" else "pass the .onnx file the engine was built from")
        raise ModelError(f"backend '{backend}' cannot run a {suffix} file: {hint}", path=path)
    return kind


def check_model_file(path: str | os.PathLike[str]) -> Path:
    """The path as a Path; a missing file or a folder is a :class:`ModelError`."""
    p = Path(path)
    if p.is_dir():
        raise ModelError("is a folder: pass the .onnx or .engine file itself", path=p)
    if not p.is_file():
        raise ModelError("no such model file", path=p)
    return p


def _ort_trt_cache() -> str:
    root = os.environ.get("FACEDISTILL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "facedistill")
    return os.path.join(root, "ort-trt")


def ort_providers(ort: Any, device: Device) -> list[Any]:
    """The execution providers for ``device``: CPU; or TensorRT, CUDA, CPU where installed."""
    kind, index = parse_device(device)
    available = set(ort.get_available_providers())
    gpu = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
    if kind == "cpu" or (kind == "auto" and not gpu):
        return ["CPUExecutionProvider"]
    if not gpu:
        raise ConfigError(
            f"device {device!r} asks for a GPU, but this onnxruntime has no CUDA or TensorRT "
            "execution provider (pip install onnxruntime-gpu), or use --device cpu",
            field="device")
    chosen: list[Any] = []
    if "TensorrtExecutionProvider" in gpu:
        chosen.append(("TensorrtExecutionProvider", {
            "device_id": index, "trt_engine_cache_enable": True,
            "trt_engine_cache_path": _ort_trt_cache()}))
    if "CUDAExecutionProvider" in gpu:
        chosen.append(("CUDAExecutionProvider", {"device_id": index}))
    return [*chosen, "CPUExecutionProvider"]


OPT_LEVELS = ("all", "extended", "basic", "disable")
"""ONNX Runtime's graph optimization levels, most to least (``all`` is its default)."""


def open_session(source: str | os.PathLike[str] | bytes, *, device: Device = "auto",
                 threads: int | None = None, providers: list[Any] | None = None,
                 spin: bool = False, emulate_qdq: bool = False, quiet: bool = False,
                 opt_level: str = "all") -> Any:
    """The one way facedistill opens an ONNX Runtime session: what ``predict`` runs, what
    ``bench`` times and what ``export`` scores.

    * ``threads``: intra-op threads (None or 0: ONNX Runtime's default, one per physical core);
      one inter-op thread;
    * ``spin``: whether the intra-op pool spins between runs; off by default. Spinning workers
      keep cores busy after every call and starve a second model run next (measured on 2 cores,
      benchmarks/results/ort_spinning.md: two alternating sessions 1.5-2.1x slower when they
      spin); one model called back to back is up to 1.4x faster with it;
    * ``emulate_qdq`` (export's INT8 gate): Q/DQ pairs are not fused into integer kernels
      (``session.disable_quant_qdq``), so each runs in float32, which is what a kernel with
      32-bit sums computes (TensorRT, VNNI) on any CPU class;
    * ``quiet``: ONNX Runtime's own warnings off;
    * ``opt_level``: one of :data:`OPT_LEVELS`; ``extended`` skips the layout rewrites
      (NCHWc blocked convolutions and the reorders around them) that ``all`` adds.

    A model ONNX Runtime cannot load is a one-line :class:`ModelError`.
    """
    where = None if isinstance(source, bytes) else source
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModelError(INSTALL_ORT, path=where) from None
    if threads is not None and threads < 0:
        raise ConfigError(f"threads must be >= 0, got {threads}", field="threads")
    if opt_level not in OPT_LEVELS:
        raise ConfigError(f"unknown graph optimization level {opt_level!r}: one of "
                          f"{', '.join(OPT_LEVELS)}", field="opt_level")
    options = ort.SessionOptions()
    level = ort.GraphOptimizationLevel
    options.graph_optimization_level = {
        "all": level.ORT_ENABLE_ALL, "extended": level.ORT_ENABLE_EXTENDED,
        "basic": level.ORT_ENABLE_BASIC, "disable": level.ORT_DISABLE_ALL}[opt_level]
    if threads:
        options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if emulate_qdq:
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    if quiet:
        options.log_severity_level = 3
    asked = providers or ort_providers(ort, device)
    src = source if isinstance(source, bytes) else os.fspath(source)
    try:
        session = ort.InferenceSession(src, sess_options=options, providers=asked)
    except Exception as exc:  # ORT raises its own pybind types (InvalidProtobuf, Fail, ...)
        raise ModelError(f"not a loadable ONNX model: {_first_line(exc)}", path=where) from None
    return session


def session_summary(session: Any) -> dict[str, Any]:
    """How an ONNX Runtime session was set up, read back from the session itself: providers,
    threads, spinning, Q/DQ emulation (what bench records and tests compare)."""
    opts = session.get_session_options()

    def entry(key: str) -> str | None:
        try:
            return opts.get_session_config_entry(key)
        except RuntimeError:  # ONNX Runtime raises for a key that was never set
            return None

    level = str(opts.graph_optimization_level).rsplit(".", 1)[-1]
    names = {"ORT_ENABLE_ALL": "all", "ORT_ENABLE_EXTENDED": "extended",
             "ORT_ENABLE_BASIC": "basic", "ORT_DISABLE_ALL": "disable"}
    return {"providers": session.get_providers(),
            "intra_op_threads": opts.intra_op_num_threads,
            "inter_op_threads": opts.inter_op_num_threads,
            "spinning": entry("session.intra_op.allow_spinning") != "0",
            "emulate_qdq": entry("session.disable_quant_qdq") == "1",
            "opt_level": names.get(level, level)}


class OrtBackend:
    """An ONNX model in an ``onnxruntime.InferenceSession``.

    ``threads`` sets ONNX Runtime's intra-op threads (None: its default, one per physical
    core). ``session.run`` may be called from several threads at once (ONNX Runtime
    documents it as thread-safe), so one backend serves a whole thread pool.
    """

    name = "ort"
    thread_safe = True
    min_batch = 1
    max_batch = None

    def __init__(self, path: str | os.PathLike[str], device: Device = "auto",
                 threads: int | None = None, providers: list[Any] | None = None,
                 spin: bool = False, opt_level: str = "all", io_binding: bool = False) -> None:
        self.path = check_model_file(path)
        self.session = open_session(self.path, device=device, threads=threads,
                                    providers=providers, spin=spin, opt_level=opt_level)
        #: run through an I/O binding with a pre-allocated output per (thread, batch size)
        #: instead of ``session.run`` (CPU only: the output is a host buffer)
        self.io_binding = bool(io_binding) and \
            self.session.get_providers()[0] == "CPUExecutionProvider"
        self._bound = threading.local()
        meta = self.session.get_modelmeta().custom_metadata_map
        self.info = parse_metadata(meta, source=os.fspath(self.path))
        self.fixed_batch = self._check_io()
        self._outputs = [PROBABILITIES]
        self.int8_warning = None
        if self.info.precision == "int8" and \
                self.session.get_providers()[0] == "CPUExecutionProvider":
            self.int8_warning = warn_int8(self.info.int8_weight_bits, self.info.int8_recipe,
                                          os.fspath(self.path))

    def _check_io(self) -> int | None:
        return check_onnx_io(self.session, self.info, self.path)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Probabilities ``[N, A]`` for the preprocessed batch ``x`` (float32 NCHW)."""
        if not self.io_binding:
            return self.session.run(self._outputs, {self.info.input_name: x})[0]
        binding, out = self._binding(x.shape[0])
        binding.bind_cpu_input(self.info.input_name, np.ascontiguousarray(x, np.float32))
        self.session.run_with_iobinding(binding)
        return out.copy()  # the bound buffer is reused by the next call

    def _binding(self, n: int) -> tuple[Any, np.ndarray]:
        cache = getattr(self._bound, "by_batch", None)
        if cache is None:
            cache = self._bound.by_batch = {}
        if n not in cache:
            out = np.empty((n, self.info.num_attrs), dtype=np.float32)
            binding = self.session.io_binding()
            binding.bind_output(PROBABILITIES, "cpu", 0, np.float32, list(out.shape),
                                out.ctypes.data)
            cache[n] = (binding, out)
        return cache[n]

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, **session_summary(self.session),
                "io_binding": self.io_binding, "path": os.fspath(self.path)}

    def close(self) -> None:
        """Nothing to free explicitly (the session goes with the object)."""


class TrtBackend:
    """A TensorRT engine through :class:`facedistill.runtime.engine.TrtRunner`.

    The runner checks the engine's sidecar (TensorRT version, GPU, compute capability, engine
    sha256) before deserialising it; a mismatch is a one-line
    :class:`~facedistill.runtime.engine.EngineMismatchError`. The runner's execution context
    and buffers are not shared between threads, so calls are serialised with a lock. Batches
    below the profile's minimum are padded; the runner splits those above its maximum.
    """

    name = "trt"
    thread_safe = False

    def __init__(self, path: str | os.PathLike[str], device: Device = "auto") -> None:
        self.path = check_model_file(path)
        kind, index = parse_device(device)
        if kind == "cpu":
            raise ConfigError("a TensorRT engine runs on a GPU only: use the .onnx file for the "
                              "CPU", field="device")
        from facedistill.runtime.engine import TrtRunner  # tensorrt itself is imported lazily

        self.runner = TrtRunner(self.path, device=index)
        self.info: ModelInfo = self.runner.info
        self.fixed_batch = None
        self.min_batch, _, self.max_batch = (int(b) for b in self.runner.profile)
        self._lock = threading.Lock()

    def run(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        if n < self.min_batch:
            x = np.concatenate([x, np.zeros((self.min_batch - n, *x.shape[1:]), x.dtype)])
        with self._lock:
            out = self.runner.run(x)
        return np.asarray(out[PROBABILITIES])[:n]

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "path": os.fspath(self.path),
                "gpu": self.runner.gpu_name, "profile": list(self.runner.profile)}

    def close(self) -> None:
        """Free the engine's device memory and stream."""
        self.runner.close()


def open_backend(path: str | os.PathLike[str], backend: str = "auto", device: Device = "auto",
                 threads: int | None = None, spin: bool = False) -> Backend:
    """The backend for ``path`` (see :func:`resolve_backend`); ``threads`` are intra-op threads
    (ONNX Runtime's or OpenVINO's), ``spin`` ONNX Runtime's (:func:`open_session`)."""
    p = check_model_file(path)
    kind = resolve_backend(p, backend)
    if kind == "ort":
        return OrtBackend(p, device=device, threads=threads, spin=spin)
    if kind == "ov":
        if parse_device(device)[0] == "cuda":
            raise ConfigError("the OpenVINO backend runs on the CPU here: use --device cpu, or "
                              "--backend ort / trt for a GPU", field="device")
        return open_setting(p, Setting(backend="ov", threads=threads))
    return TrtBackend(p, device=device)


def open_setting(path: str | os.PathLike[str], setting: Setting,
                 device: Device = "cpu") -> Backend:
    """A CPU backend for an ONNX file as ``setting`` says (a tuned or a candidate setting):
    ONNX Runtime, or OpenVINO (:mod:`facedistill.runtime.openvino`, imported only here)."""
    if setting.backend == "ov":
        from facedistill.runtime.openvino import OvBackend

        return OvBackend(path, threads=setting.threads, hint=setting.hint)
    return OrtBackend(path, device=device, threads=setting.threads, spin=setting.spin,
                      opt_level=setting.opt_level, io_binding=setting.io_binding)


def check_onnx_io(session: Any, info: ModelInfo, path: str | os.PathLike[str]) -> int | None:
    """:func:`check_io` for an ONNX Runtime session."""
    return check_io({i.name: i.shape for i in session.get_inputs()},
                    {o.name: o.shape for o in session.get_outputs()}, info, path)


def check_io(inputs: Mapping[str, Any], outputs: Mapping[str, Any], info: ModelInfo,
             path: str | os.PathLike[str]) -> int | None:
    """That a graph (``{name: shape}`` of its inputs and outputs, a dimension an int when
    static) is the one its metadata describes: the named input of shape ``[batch, 3, H, W]``
    (H, W of the preprocessing), an output ``probabilities`` of shape ``[batch, attributes]``.
    Returns the fixed batch size, or None when it is dynamic. What predict loads and what bench
    times are checked alike, whichever runtime opened the file."""
    where = os.fspath(path)
    if info.input_name not in inputs:
        raise MetadataError(f"the model has no input named {info.input_name!r} "
                            f"(it has {', '.join(inputs)})", path=where, field="input_name")
    if PROBABILITIES not in outputs:
        raise MetadataError(f"the model has no output named {PROBABILITIES!r}", path=where,
                            field="output_names")
    shape = inputs[info.input_name]
    height, width = info.preprocess.size
    if len(shape) != 4 or any(isinstance(d, int) and d != want
                              for d, want in zip(shape[1:], (3, height, width), strict=True)):
        raise MetadataError(f"input shape {shape} does not match the preprocessing's "
                            f"3x{height}x{width}", path=where, field="input_size")
    out = outputs[PROBABILITIES]
    if out is not None and (len(out) != 2 or (isinstance(out[1], int)
                                              and out[1] != info.num_attrs)):
        raise MetadataError(f"output {PROBABILITIES!r} has shape {out}, expected [batch, "
                            f"{info.num_attrs}] for the metadata's {info.num_attrs} attributes: "
                            "the metadata does not describe this graph", path=where,
                            field="output_names")
    return shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
