"""OpenVINO as a second CPU backend: the same ``.onnx`` file (fp32, fp16 or Q/DQ int8) through
OpenVINO's ONNX frontend and its CPU plugin. No torch, no onnx; ``openvino`` is imported here
only, so a runtime without it still works and says what to install when asked for it
(``pip install 'facedistill[openvino]'``).

* The metadata is the file's own ``metadata_props``, which OpenVINO's ONNX frontend keeps in the
  model's ``rt_info["framework"]``; the graph is checked against it as ONNX Runtime's is
  (:func:`~facedistill.runtime.backends.check_io`).
* Float files run at **f32**: OpenVINO's CPU plugin otherwise picks a lower inference precision
  where it can (it reports ``bfloat16`` on an AVX2-only AMD EPYC, and moved SNet3's probabilities
  by 4e-4 there against 3e-7 at f32), which is not what the export's accuracy gate measured.
  INT8 files keep their integer kernels (the hint only concerns float operations).
* ``threads`` is ``INFERENCE_NUM_THREADS`` (None: OpenVINO's default, one per core) and ``hint``
  its ``PERFORMANCE_HINT`` (``latency`` | ``throughput``; None: its default). The effective
  values, read back from the compiled model, are in :meth:`OvBackend.describe`.
* ``run`` may be called from several threads: each thread gets its own infer request.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import threading
from typing import Any

import numpy as np

from facedistill.errors import ConfigError
from facedistill.runtime.backends import PROBABILITIES, check_io, check_model_file
from facedistill.runtime.errors import ModelError
from facedistill.runtime.metadata import ModelInfo, parse_metadata

INSTALL_OV = "OpenVINO is not installed: pip install 'facedistill[openvino]' (or openvino)"
HINTS = ("latency", "throughput")
F32 = "f32"


def have_openvino() -> bool:
    """Whether ``openvino`` is importable (without importing it)."""
    try:
        return importlib.util.find_spec("openvino") is not None
    except (ImportError, ValueError):  # a finder that refuses it, a half-removed package
        return False


def require_openvino() -> Any:
    """The ``openvino`` module, or a one-line :class:`ModelError` saying what to install."""
    try:
        import openvino
    except ImportError:
        raise ModelError(INSTALL_OV) from None
    return openvino


@functools.lru_cache(maxsize=1)
def _core() -> Any:
    return require_openvino().Core()


@functools.lru_cache(maxsize=1)
def _onnx_frontend() -> Any:
    require_openvino()
    from openvino.frontend import FrontEndManager

    return FrontEndManager().load_by_framework("onnx")


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception from", "Check '"))]
    return (useful or lines or [type(exc).__name__])[-1]


def read_onnx(path: str | os.PathLike[str]) -> Any:
    """The ONNX file as an ``openvino.Model`` through the ONNX frontend only (a file of another
    format is an error, not a guess); a file it cannot parse is a one-line :class:`ModelError`."""
    frontend = _onnx_frontend()
    try:
        return frontend.convert(frontend.load(os.fspath(path)))
    except Exception as exc:  # OpenVINO raises its own types (GeneralFailure, OpConversionFailure)
        raise ModelError(f"OpenVINO cannot load it as ONNX: {_first_line(exc)}",
                         path=path) from None


def model_metadata(model: Any) -> dict[str, str]:
    """The ONNX ``metadata_props`` the frontend kept in ``rt_info["framework"]`` ({} if none)."""
    if not model.has_rt_info(["framework"]):
        return {}
    props = model.get_rt_info(["framework"]).astype(dict)
    return {str(k): v.astype(str) if hasattr(v, "astype") else str(v) for k, v in props.items()}


def read_onnx_bytes(data: bytes) -> Any:
    """An in-memory ONNX model (bench's floor graphs) as an ``openvino.Model``."""
    import io

    return _core().read_model(io.BytesIO(data))


def compile_model(model: Any, threads: int | None = None, hint: str | None = None,
                  path: str | os.PathLike[str] | None = None, *,
                  perf_count: bool = False) -> Any:
    """``model`` compiled for the CPU at f32 float precision, with ``threads``
    (``INFERENCE_NUM_THREADS``; None or 0: OpenVINO's default) and ``hint``
    (``PERFORMANCE_HINT``; None: its default); ``perf_count`` turns on OpenVINO's per-node
    profiling (``InferRequest.profiling_info``)."""
    if threads is not None and threads < 0:
        raise ConfigError(f"threads must be >= 0, got {threads}", field="threads")
    if hint is not None and hint not in HINTS:
        raise ConfigError(f"unknown OpenVINO hint {hint!r}: one of {', '.join(HINTS)}",
                          field="hint")
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": F32}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    if hint is not None:
        config["PERFORMANCE_HINT"] = hint.upper()
    if perf_count:
        config["PERF_COUNT"] = True
    try:
        return _core().compile_model(model, "CPU", config)
    except Exception as exc:
        raise ModelError(f"OpenVINO cannot compile it for the CPU: {_first_line(exc)}",
                         path=path) from None


def _shape(port: Any) -> list[int | None]:
    return [d.get_length() if d.is_static else None for d in port.get_partial_shape()]


def port_shapes(ports: Any) -> dict[str, list[int | None]]:
    """``{name: shape}`` of a model's inputs or outputs (None for a dynamic dimension); a port
    with several names is listed under each."""
    return {name: _shape(p) for p in ports for name in p.get_names()}


class OvBackend:
    """An ONNX model compiled by OpenVINO for the CPU (see the module docstring)."""

    name = "ov"
    thread_safe = True
    min_batch = 1
    max_batch = None

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None,
                 hint: str | None = None) -> None:
        self.path = check_model_file(path)
        model = read_onnx(self.path)
        self.info: ModelInfo = parse_metadata(model_metadata(model), source=os.fspath(self.path))
        self.fixed_batch = check_io(port_shapes(model.inputs), port_shapes(model.outputs),
                                    self.info, self.path)
        self.compiled = compile_model(model, threads=threads, hint=hint, path=self.path)
        self._output = self.compiled.output(PROBABILITIES)
        self._local = threading.local()
        self.int8_warning = None

    def _request(self) -> Any:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        return request

    def run(self, x: np.ndarray) -> np.ndarray:
        """Probabilities ``[N, A]`` for the preprocessed batch ``x`` (float32 NCHW); a copy,
        not the request's buffer."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        result = self._request().infer({self.info.input_name: x}, share_inputs=True,
                                       share_outputs=False)
        return np.asarray(result[self._output])

    def describe(self) -> dict[str, Any]:
        def prop(key: str) -> Any:
            try:
                value = self.compiled.get_property(key)
            except Exception:  # a property this plugin version does not report
                return None
            if hasattr(value, "get_type_name"):  # an element type (inference precision)
                return value.get_type_name()
            return value if isinstance(value, int | str | list) else str(value)

        return {"backend": self.name, "openvino": require_openvino().__version__,
                "device": "CPU", "threads": prop("INFERENCE_NUM_THREADS"),
                "hint": prop("PERFORMANCE_HINT"), "streams": prop("NUM_STREAMS"),
                "inference_precision": prop("INFERENCE_PRECISION_HINT"),
                "path": os.fspath(self.path)}

    def close(self) -> None:
        """Nothing to free explicitly (the compiled model goes with the object)."""
