"""Parameters and MACs of an artifact, counted the same way for every kind.

* checkpoints: :func:`facedistill.nn.models.count_params` / ``count_macs`` (torch)
* ONNX files: from the graph itself with the ``onnx`` package (no torch): parameters are the
  elements of the initializers that feed a ``Conv``/``Gemm``/``MatMul`` (through ``Dequantize
  Linear``/``Cast``/``Transpose``, so FP32, FP16 and INT8 variants of one model count the same;
  quantization scales and zero points are not parameters); MACs are ``prod(out[1:]) *
  prod(W[1:])`` per ``Conv`` and ``prod(out[1:]) * K`` per ``Gemm``/``MatMul``, with shapes from
  ONNX shape inference, for one image.
* engines: the ONNX file beside the engine whose sha256 the engine's sidecar records; failing
  that, the arch record through the model registry when torch is installed.

An ONNX count differs from the checkpoint's by the BatchNorm layers the exporter folds into the
convolutions (each BN's ``2C`` parameters become a ``C`` conv bias).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

WEIGHT_OPS = {
    "Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (0, 1, 2), "MatMul": (0, 1),
    "QLinearConv": (3, 8), "QLinearMatMul": (0, 3), "ConvInteger": (1,),
    "MatMulInteger": (0, 1), "BatchNormalization": (1, 2),
}  # fmt: skip
"""Op -> the input slots that may hold learned parameters."""

_PASS_THROUGH = {"DequantizeLinear", "Cast", "Transpose", "Identity", "Reshape", "Unsqueeze",
                 "Squeeze", "Flatten"}

ONNX_MISSING = "install the onnx package (pip install onnx) to count params/MACs of ONNX files"


def _dims(value_info: Any) -> list[int | None] | None:
    t = value_info.type
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in t.tensor_type.shape.dim]


def onnx_cost(path: str | Path) -> tuple[dict[str, int | None], str | None]:
    """``({"params": int, "macs": int}, None)`` or ``({"params": None, "macs": None}, reason)``.

    MACs are ``None`` (with the reason) when a needed shape cannot be inferred."""
    empty: dict[str, int | None] = {"params": None, "macs": None}
    if importlib.util.find_spec("onnx") is None:
        return empty, ONNX_MISSING
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return empty, f"onnx cannot parse it: {first}"
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    for node in graph.node:  # Constant nodes hold weights in some exporters
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t is not None:
                    inits.setdefault(node.output[0], attr.t)

    def source(name: str, depth: int = 0) -> str | None:
        if name in inits:
            return name
        node = producer.get(name)
        if node is None or depth > 8 or node.op_type not in _PASS_THROUGH or not node.input:
            return None
        return source(node.input[0], depth + 1)

    counted: set[str] = set()
    params = 0
    for node in graph.node:
        for slot in WEIGHT_OPS.get(node.op_type, ()):
            if slot < len(node.input) and node.input[slot]:
                src = source(node.input[slot])
                if src is not None and src not in counted:
                    counted.add(src)
                    params += math.prod(inits[src].dims)

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:
        return {"params": params, "macs": None}, f"ONNX shape inference failed: {exc}"
    shapes: dict[str, list[int | None] | None] = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        shapes[vi.name] = _dims(vi)
    for name, t in inits.items():
        shapes[name] = list(t.dims)

    def per_image(shape: list[int | None] | None) -> int | None:
        if shape is None or len(shape) < 2 or any(d is None for d in shape[1:]):
            return None
        return math.prod(d for d in shape[1:] if d is not None)

    macs = 0
    for node in graph.node:
        op = node.op_type
        if op not in ("Conv", "QLinearConv", "ConvInteger", "Gemm", "MatMul", "QLinearMatMul",
                      "MatMulInteger"):
            continue
        out = per_image(shapes.get(node.output[0]))
        if op in ("Conv", "ConvInteger", "QLinearConv"):
            w = shapes.get(node.input[3 if op == "QLinearConv" else 1])
            if out is None or not w:
                return {"params": params, "macs": None}, f"no shape for {op} {node.name!r}"
            macs += out * math.prod(d or 0 for d in w[1:])
            continue
        a = shapes.get(node.input[0])
        if out is None or not a or a[-1] is None:
            return {"params": params, "macs": None}, f"no shape for {op} {node.name!r}"
        k = a[-1]
        if op == "Gemm" and any(at.name == "transA" and at.i for at in node.attribute):
            k = a[0] if a[0] is not None else 0
        macs += out * k
    return {"params": params, "macs": macs}, None


def torch_cost(model: Any, size: tuple[int, int]) -> dict[str, int]:
    """Params and per-image MACs of a torch model via the registry's counters."""
    from facedistill.nn.models import count_macs, count_params

    if size[0] != size[1]:  # count_macs takes a square side; GAP makes MACs linear in area
        macs = round(count_macs(model, size[0]) * size[1] / size[0])
    else:
        macs = count_macs(model, size[0])
    return {"params": count_params(model), "macs": macs}


def arch_cost(arch: dict[str, Any], size: tuple[int, int]) -> tuple[dict[str, int | None],
                                                                    str | None]:
    """Params/MACs of an arch record through the registry; only when torch is installed."""
    if importlib.util.find_spec("torch") is None:
        return {"params": None, "macs": None}, ("no ONNX beside the engine to count from, and "
                                                "torch (for the model registry) is not installed")
    from facedistill.nn.models import build_model

    model = build_model(**{k: arch[k] for k in ("arch", "width", "num_attrs") if k in arch})
    return dict(torch_cost(model, size)), None
