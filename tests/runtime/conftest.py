"""Runtime fixtures: the session's tiny teacher exported once to ONNX, and a plain ONNX model
without facedistill metadata."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_onnx(tiny_teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_teacher`` (snet3 width 0.5, 32x32 input) exported to FP32 ONNX with metadata."""
    from facedistill.export.onnx import export_onnx

    out = tmp_path_factory.mktemp("export") / "snet3.fp32.onnx"
    export_onnx(tiny_teacher, out, parity_batches=(2,), threads=1)
    return out


@pytest.fixture(scope="session")
def plain_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid ONNX model (input [N, 3, 32, 32] -> sigmoid) with no facedistill metadata."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])
    y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3, 32, 32])
    graph = helper.make_graph([helper.make_node("Sigmoid", ["input"], ["probabilities"])],
                              "plain", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path_factory.mktemp("plain") / "plain.onnx"
    onnx.save(model, str(path))
    return path
