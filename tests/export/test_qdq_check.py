"""TensorRT's Q/DQ rules, one hand-built graph per rule: a conforming Conv passes, and each
way of breaking a rule is named (the trained exports are checked in test_matrix and
test_export_model)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from facedistill.export.qdq_check import check_tensorrt_qdq  # noqa: E402


def _init(name: str, value: Any) -> Any:
    return numpy_helper.from_array(np.asarray(value), name)


ZERO = np.int8(0)


def _conv_graph(*, act_zp: Any = ZERO, w_scale: Any = None, w_axis: int = 0,
                bias_int32: bool = False, weight_dq: bool = True, extra: list[Any] = (),
                q_to_output: bool = False) -> Any:
    """input -> Q -> DQ -> Conv(DQ(int8 weights) [, bias]) -> output, 4 output channels."""
    w = np.arange(4 * 3 * 3 * 3, dtype=np.int64).reshape(4, 3, 3, 3) % 200 - 100
    inits = [_init("x_scale", np.float32(0.05)), _init("w_q", w.astype(np.int8)),
             _init("w_scale", np.full(4, 0.01, np.float32) if w_scale is None else w_scale),
             _init("w_zp", np.zeros(np.shape(w_scale) if w_scale is not None else 4, np.int8)),
             _init("w_f", w.astype(np.float32) * 0.01)]
    if act_zp is not None:
        inits.append(_init("x_zp", act_zp))
    nodes = [helper.make_node("QuantizeLinear", ["input", "x_scale"] + (
                 ["x_zp"] if act_zp is not None else []), ["xq"], name="q_in"),
             helper.make_node("DequantizeLinear", ["xq", "x_scale"] + (
                 ["x_zp"] if act_zp is not None else []), ["xd"], name="dq_in")]
    if weight_dq:
        nodes.append(helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["wd"],
                                      name="dq_w", axis=w_axis))
    conv_in = ["xd", "wd" if weight_dq else "w_f"]
    if bias_int32:
        inits += [_init("b_q", np.array([5, -3, 0, 7], np.int32)),
                  _init("b_scale", np.full(4, 5e-4, np.float32)),
                  _init("b_zp", np.zeros(4, np.int32))]
        nodes.append(helper.make_node("DequantizeLinear", ["b_q", "b_scale", "b_zp"], ["bd"],
                                      name="dq_b", axis=0))
        conv_in.append("bd")
    nodes.append(helper.make_node("Conv", conv_in, ["output"], name="conv", pads=[1] * 4))
    nodes.extend(extra)
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 8, 8])]
    if q_to_output:
        outputs.append(helper.make_tensor_value_info("xq", TensorProto.INT8, [1, 3, 8, 8]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "input", TensorProto.FLOAT, [1, 3, 8, 8])], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _one(model: Any, needle: str) -> str:
    problems = check_tensorrt_qdq(model)
    assert len(problems) >= 1 and any(needle in p for p in problems), problems
    return next(p for p in problems if needle in p)


def test_conforming_graph_passes_and_runs() -> None:
    import onnxruntime as ort

    model = _conv_graph()
    onnx.checker.check_model(model, full_check=True)
    assert check_tensorrt_qdq(model) == []
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": np.ones((1, 3, 8, 8), np.float32)})[0]
    assert out.shape == (1, 4, 8, 8) and np.isfinite(out).all()


def test_int32_bias_dequantization_is_named() -> None:
    msg = _one(_conv_graph(bias_int32=True), "INT32")
    assert msg.startswith("DequantizeLinear dq_b:") and "QuantizeBias" in msg


def test_zero_points_must_be_present_int8_and_zero() -> None:
    assert "no zero point" in _one(_conv_graph(act_zp=None), "no zero point")
    _one(_conv_graph(act_zp=np.uint8(0)), "UINT8")
    _one(_conv_graph(act_zp=np.int8(3)), "not 0")


def test_weight_scales_per_output_channel_on_axis_0() -> None:
    _one(_conv_graph(w_scale=np.full(3, 0.01, np.float32), w_axis=1), "axis 1")
    _one(_conv_graph(w_scale=np.full(2, 0.01, np.float32)), "2 scales for 4 output channels")
    # a per-tensor weight scale is allowed by TensorRT
    assert check_tensorrt_qdq(_conv_graph(w_scale=np.float32(0.01))) == []


def test_scales_must_be_positive_and_finite() -> None:
    _one(_conv_graph(w_scale=np.array([0.01, -0.01, 0.01, 0.01], np.float32)), "<= 0")
    _one(_conv_graph(w_scale=np.array([0.01, np.inf, 0.01, 0.01], np.float32)), "non-finite")


def test_placement_rules() -> None:
    _one(_conv_graph(weight_dq=False), "weights input is not dequantized")
    _one(_conv_graph(q_to_output=True), "Q -> DQ pairs")
    relu = helper.make_node("Relu", ["xq"], ["r"], name="relu_on_int8")
    _one(_conv_graph(extra=[relu]), "Q -> DQ pairs")


def test_per_channel_activation_scale_is_refused() -> None:
    model = _conv_graph()
    for t in model.graph.initializer:
        if t.name == "x_scale":
            t.CopyFrom(_init("x_scale", np.full(3, 0.05, np.float32)))
    for n in model.graph.node:
        if n.name in ("q_in", "dq_in"):
            n.attribute.append(helper.make_attribute("axis", 1))
    for t in model.graph.initializer:
        if t.name == "x_zp":
            t.CopyFrom(_init("x_zp", np.zeros(3, np.int8)))
    _one(model, "activations quantized per channel")
