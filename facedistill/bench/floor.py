"""The machine's floors, measured through the runtime that runs the models, in the same run.

Two numbers bound what any model can reach on a CPU:

* the **per-call floor**: the wall time of one call of an *empty* graph (one ``Identity``)
  on an input of the model's shape, through a session opened exactly like the model's
  (threads, spinning). Nothing a model does can make a call cheaper than that;
* the **arithmetic peak**: the rate of a large matrix product through the same runtime (its
  default threads, spinning), fp32 (``MatMul``, 512 x 512 x 512) and int8 (``MatMulInteger``, uint8 x int8 with
  int32 sums, the integer kernels ONNX Runtime's INT8 convolutions use).

Per timed row, :func:`row_floor` then gives ``floor_ms`` (the floor at that input shape),
``x_floor`` (median latency over the floor), ``bound_ms`` (floor + the model's FLOPs at the
peak: the fastest the call could be) and ``peak_pct`` (the FLOPs per second the model reached,
as a percentage of the machine's peak of its precision, the fastest runtime's; a MAC counts as
2 FLOPs). The floors are measured through ONNX Runtime and, when installed, OpenVINO.

The graphs are built with the ``onnx`` package (``facedistill[train]``); without it the floors
are left out with that reason. On a GPU backend, or torch, they are left out too: these are CPU
floors.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

GEMM_N = 512
"""The peak's matrix side: 0.27 GFLOP per fp32 call, about 1-2 ms on 2 cores (a 1024-side
product was no faster per FLOP on the 2-core AVX2 machine these were chosen on: 181 vs 205
GFLOP/s), short enough to sit in every interleaved round."""
OPSET = 17
INSTALL_ONNX = "floors need the onnx package: pip install 'facedistill[train]'"


def _model(nodes: list[Any], inputs: list[Any], outputs: list[Any],
           initializers: list[Any] = ()) -> bytes:
    from onnx import helper

    graph = helper.make_graph(nodes, "floor", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="facedistill.floor")
    model.ir_version = 8
    return model.SerializeToString()


def identity_graph(height: int, width: int) -> bytes:
    """An ONNX model whose one node copies ``x`` [batch, 3, height, width] to ``y``."""
    from onnx import TensorProto, helper

    shape = ["batch", 3, int(height), int(width)]
    return _model([helper.make_node("Identity", ["x"], ["y"])],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])


def gemm_graph(n: int = GEMM_N, int8: bool = False, seed: int = 0) -> bytes:
    """``y = a @ b`` with ``b`` a constant [n, n]: fp32 ``MatMul``, or ``MatMulInteger`` of
    uint8 ``a`` by int8 ``b`` (7-bit values, as the CPU INT8 recipe writes them)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    if int8:
        b = rng.integers(-64, 64, (n, n), dtype=np.int8)
        a_type, y_type, op = TensorProto.UINT8, TensorProto.INT32, "MatMulInteger"
    else:
        b = rng.standard_normal((n, n)).astype(np.float32)
        a_type, y_type, op = TensorProto.FLOAT, TensorProto.FLOAT, "MatMul"
    return _model([helper.make_node(op, ["a", "b"], ["y"])],
                  [helper.make_tensor_value_info("a", a_type, [n, n])],
                  [helper.make_tensor_value_info("y", y_type, [n, n])],
                  [numpy_helper.from_array(b, "b")])


def gemm_input(n: int = GEMM_N, int8: bool = False, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if int8:
        return rng.integers(0, 256, (n, n), dtype=np.uint8)
    return rng.standard_normal((n, n)).astype(np.float32)


@dataclass(frozen=True)
class FloorProbe:
    """One floor measurement to put in the interleaved rounds: ``kind`` is ``identity`` (with
    the input's ``size`` and ``batch``), ``fp32`` or ``int8``; ``call`` runs it once."""

    runtime: str
    kind: str
    call: Callable[[], None]
    size: tuple[int, int] | None = None
    batch: int | None = None
    flops: float | None = None  # per call, for the GEMMs

    @property
    def key(self) -> str:
        if self.kind == "identity":
            assert self.size is not None
            return f"{self.runtime}:identity:{self.size[0]}x{self.size[1]}:b{self.batch}"
        return f"{self.runtime}:{self.kind}"


def have_onnx() -> bool:
    return importlib.util.find_spec("onnx") is not None


def ort_probes(shapes: list[tuple[tuple[int, int], int]], threads: int | None) -> list[FloorProbe]:
    """The ONNX Runtime probes: an identity per (input size, batch) in ``shapes``, in a session
    opened as the bench opens a model's (``threads``, no spinning), and both GEMMs with ONNX
    Runtime's default threads, spinning: without spinning a second worker barely joins a 1-2 ms
    call (the 512-side fp32 product reached 111-163 GFLOP/s in the 2-core AVX-512 machine's
    rotated runs, 221 alone with spinning), and a peak is what the machine can reach."""
    from facedistill.runtime.backends import open_session

    probes: list[FloorProbe] = []
    sessions: dict[tuple[int, int], Any] = {}
    for size, batch in shapes:
        if size not in sessions:
            sessions[size] = open_session(identity_graph(*size), device="cpu", threads=threads,
                                          quiet=True)
        x = np.zeros((batch, 3, *size), dtype=np.float32)
        probes.append(FloorProbe("ort", "identity", _runner(sessions[size], "x", x),
                                 size=size, batch=batch))
    for int8 in (False, True):  # the peak is the machine's: ONNX Runtime's defaults, spinning
        sess = open_session(gemm_graph(int8=int8), device="cpu", threads=None, spin=True,
                            quiet=True)
        probes.append(FloorProbe("ort", "int8" if int8 else "fp32",
                                 _runner(sess, "a", gemm_input(int8=int8)),
                                 flops=2.0 * GEMM_N ** 3))
    return probes


def ov_probes(shapes: list[tuple[tuple[int, int], int]], threads: int | None) -> list[FloorProbe]:
    """The same probes through OpenVINO's CPU plugin, compiled as the bench compiles a model
    (:func:`facedistill.runtime.openvino.compile_model`: ``threads``, f32, its default hint)."""
    from facedistill.runtime.openvino import compile_model, read_onnx_bytes

    probes: list[FloorProbe] = []
    compiled: dict[tuple[int, int], Any] = {}
    for size, batch in shapes:
        if size not in compiled:
            compiled[size] = compile_model(read_onnx_bytes(identity_graph(*size)), threads)
        x = np.zeros((batch, 3, *size), dtype=np.float32)
        probes.append(FloorProbe("ov", "identity", _ov_runner(compiled[size], x),
                                 size=size, batch=batch))
    for int8 in (False, True):
        model = compile_model(read_onnx_bytes(gemm_graph(int8=int8)), threads)
        probes.append(FloorProbe("ov", "int8" if int8 else "fp32",
                                 _ov_runner(model, gemm_input(int8=int8)),
                                 flops=2.0 * GEMM_N ** 3))
    return probes


def _ov_runner(compiled: Any, x: np.ndarray) -> Callable[[], None]:
    request = compiled.create_infer_request()
    feed = {0: x}

    def once() -> None:
        request.infer(feed, share_inputs=True)

    return once


def _runner(session: Any, name: str, x: np.ndarray) -> Callable[[], None]:
    feed = {name: x}

    def once() -> None:
        session.run(None, feed)

    return once


def summarize(probes: list[FloorProbe], medians_ms: list[float]) -> dict[str, Any]:
    """The floors record of a bench result: ``{runtime: {"identity_ms": {"HxW:bB": ms},
    "fp32_gflops": .., "int8_gops": ..}}`` plus ``gemm_n``."""
    out: dict[str, Any] = {"gemm_n": GEMM_N}
    for p, ms in zip(probes, medians_ms, strict=True):
        rec = out.setdefault(p.runtime, {"identity_ms": {}})
        if p.kind == "identity":
            assert p.size is not None
            rec["identity_ms"][f"{p.size[0]}x{p.size[1]}:b{p.batch}"] = ms
        elif ms > 0 and p.flops:
            rec["fp32_gflops" if p.kind == "fp32" else "int8_gops"] = p.flops / (ms * 1e6)
    return out


def machine_peak(floors: Mapping[str, Any], precision: str) -> float | None:
    """The machine's arithmetic peak for ``precision`` (GFLOP/s or GOP/s): the fastest of the
    runtimes' GEMM rates in the run. OpenVINO, for one, has no integer kernel for a bare
    ``MatMulInteger`` (193 GOP/s against ONNX Runtime's 690-810 on the 2-core AVX2 machine), so
    a runtime's own rate is not the machine's."""
    key = "int8_gops" if precision == "int8" else "fp32_gflops"
    rates = [rec[key] for rec in floors.values() if isinstance(rec, Mapping) and rec.get(key)]
    return max(rates) if rates else None


def row_floor(floors: Mapping[str, Any], runtime: str, size: tuple[int, int], batch: int,
              precision: str, macs: int | None, median_ms: float) -> dict[str, float | None]:
    """``floor_ms``, ``x_floor``, ``bound_ms`` and ``peak_pct`` of one timed row (None where
    the floors or the model's MACs are unknown). INT8 rows are held to the int8 peak, every
    other precision to the fp32 one (a CPU computes fp16 graphs in fp32)."""
    rec = floors.get(runtime) or {}
    floor = (rec.get("identity_ms") or {}).get(f"{size[0]}x{size[1]}:b{batch}")
    peak = machine_peak(floors, precision)
    flops = None if macs is None else 2.0 * macs * batch
    out: dict[str, float | None] = {"floor_ms": floor, "x_floor": None, "bound_ms": None,
                                    "peak_pct": None}
    if floor and median_ms > 0:
        out["x_floor"] = median_ms / floor
    if flops is not None and peak:
        arith_ms = flops / (peak * 1e6)
        out["peak_pct"] = 100.0 * arith_ms / median_ms if median_ms > 0 else None
        if floor is not None:
            out["bound_ms"] = floor + arith_ms
    return out
