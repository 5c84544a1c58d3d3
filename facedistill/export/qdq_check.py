"""Does an INT8 Q/DQ ONNX follow TensorRT's explicit-quantization rules? (no torch, no GPU)

TensorRT builds a Q/DQ graph only when (TensorRT 10.x/11.x developer guide, "Explicit
Quantization"; its ONNX parser):

* every ``QuantizeLinear``/``DequantizeLinear`` is **int8** with a zero point that is present,
  int8 and **0** (a missing zero point means uint8 in ONNX);
* no ``DequantizeLinear`` reads an **INT32** tensor: ONNX Runtime's ``QuantizeBias=True``
  writes each Conv/Gemm bias that way and the parser rejects it (NVIDIA/TensorRT#4542);
* scales are positive and finite; activations are quantized **per tensor** (scalar scale);
* weights are quantized per tensor or **per output channel**: axis 0 of a Conv kernel (and of
  a Gemm ``B`` with ``transB=1``), one scale per output channel;
* Q/DQ sit where TensorRT fuses them: a ``QuantizeLinear`` feeds only ``DequantizeLinear``
  nodes, and a Conv/Gemm/MatMul reads either both its data and its weights through
  ``DequantizeLinear`` or neither (one without the other runs in float, paying the Q/DQ).

:func:`check_tensorrt_qdq` returns one readable line per broken rule (empty: conforms).
Fresh models hide several of these (zero biases, identity BatchNorm): the tests run it on
trained exports.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

LINEAR_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
WEIGHT_INPUT = 1  # the weight input of every op in LINEAR_OPS


def _load(model: Any) -> Any:
    if isinstance(model, (str, os.PathLike)):
        import onnx

        return onnx.load(os.fspath(model))
    return model


def _attr(node: Any, name: str, default: Any = None) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


class _Graph:
    """Lookups over one ONNX graph: initializers (and Constant nodes), producers, consumers."""

    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        g = model.graph
        self.nodes = list(g.node)
        self.values: dict[str, np.ndarray] = {
            i.name: numpy_helper.to_array(i) for i in g.initializer}
        self.types: dict[str, int] = {i.name: i.data_type for i in g.initializer}
        for n in self.nodes:
            if n.op_type == "Constant" and n.output:
                t = _attr(n, "value")
                if t is not None:
                    self.values[n.output[0]] = numpy_helper.to_array(t)
                    self.types[n.output[0]] = t.data_type
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.consumers: dict[str, list[Any]] = {}
        for n in self.nodes:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in g.output}

    def dtype_name(self, name: str) -> str | None:
        from onnx import TensorProto

        t = self.types.get(name)
        return None if t is None else TensorProto.DataType.Name(t)


def _name(node: Any) -> str:
    return node.name or f"{node.op_type}({', '.join(node.output)})"


def _check_qdq_node(g: _Graph, n: Any, out: list[str]) -> None:
    """Types, zero point and scale of one QuantizeLinear/DequantizeLinear."""
    where = f"{n.op_type} {_name(n)}"
    if n.op_type == "DequantizeLinear" and g.dtype_name(n.input[0]) == "INT32":
        out.append(f"{where}: dequantizes an INT32 tensor {n.input[0]!r} (a quantized bias; "
                   "TensorRT's parser rejects it: quantize with QuantizeBias off)")
        return
    if len(n.input) < 3 or not n.input[2]:
        out.append(f"{where}: no zero point (ONNX then means uint8; TensorRT needs int8, 0)")
    else:
        zp_type = g.dtype_name(n.input[2])
        zp = g.values.get(n.input[2])
        if zp_type not in (None, "INT8"):
            out.append(f"{where}: zero point is {zp_type}, TensorRT needs INT8")
        if zp is None:
            out.append(f"{where}: zero point {n.input[2]!r} is not a constant")
        elif np.any(zp != 0):
            out.append(f"{where}: zero point is not 0 (TensorRT quantizes symmetrically)")
    scale = g.values.get(n.input[1])
    if scale is None:
        out.append(f"{where}: scale {n.input[1]!r} is not a constant")
    elif not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        out.append(f"{where}: scale has values <= 0 or non-finite")


def _weight_axis(op: Any) -> int:
    """The output-channel axis of the weight input of ``op``."""
    if op.op_type == "Gemm":
        return 0 if _attr(op, "transB", 0) else 1
    if op.op_type == "MatMul":
        return 1
    if op.op_type == "ConvTranspose":
        return 1
    return 0


def _check_weight_dq(g: _Graph, dq: Any, op: Any, out: list[str]) -> None:
    """A DequantizeLinear feeding a linear op's weights: per tensor or per output channel."""
    where = f"DequantizeLinear {_name(dq)} (weights of {op.op_type} {_name(op)})"
    w = g.values.get(dq.input[0])
    scale = g.values.get(dq.input[1])
    if w is None or scale is None:
        return  # a weight computed at run time: not a rule of ours to judge
    if g.dtype_name(dq.input[0]) not in ("INT8", None):
        out.append(f"{where}: weights are {g.dtype_name(dq.input[0])}, expected INT8")
    if scale.size <= 1:
        return
    axis = int(_attr(dq, "axis", 1))
    axis = axis + w.ndim if axis < 0 else axis
    want = _weight_axis(op)
    if axis != want:
        out.append(f"{where}: per-channel scales on axis {axis}, TensorRT needs the output-"
                   f"channel axis {want}")
    elif scale.size != w.shape[want]:
        out.append(f"{where}: {scale.size} scales for {w.shape[want]} output channels")


def check_tensorrt_qdq(model: Any) -> list[str]:
    """The broken TensorRT Q/DQ rules of ``model`` (an ``onnx.ModelProto`` or a path), one
    line each naming the node; an empty list when it conforms."""
    g = _Graph(_load(model))
    out: list[str] = []
    weight_dqs: set[str] = set()
    for op in g.nodes:
        if op.op_type not in LINEAR_OPS or len(op.input) <= WEIGHT_INPUT:
            continue
        fed = [g.producer.get(i) for i in op.input[:2]]
        dq = [p is not None and p.op_type == "DequantizeLinear" for p in fed]
        if any(dq) and not all(dq):
            which = "data" if not dq[0] else "weights"
            out.append(f"{op.op_type} {_name(op)}: its {which} input is not dequantized while "
                       "the other is (TensorRT cannot fuse it into an INT8 kernel)")
        if dq[1]:
            weight_dqs.add(fed[1].output[0])
            _check_weight_dq(g, fed[1], op, out)
    for n in g.nodes:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        _check_qdq_node(g, n, out)
        if n.op_type == "QuantizeLinear":
            users = g.consumers.get(n.output[0], [])
            if n.output[0] in g.outputs or any(u.op_type != "DequantizeLinear" for u in users):
                out.append(f"QuantizeLinear {_name(n)}: its output goes elsewhere than a "
                           "DequantizeLinear (TensorRT needs Q -> DQ pairs)")
        scale = g.values.get(n.input[1])
        is_weight = n.op_type == "DequantizeLinear" and n.output[0] in weight_dqs
        if not is_weight and scale is not None and scale.size > 1 and not (
                n.op_type == "DequantizeLinear" and n.input[0] in g.values):
            out.append(f"{n.op_type} {_name(n)}: activations quantized per channel "
                       "(TensorRT needs one scale per activation tensor)")
    return out
