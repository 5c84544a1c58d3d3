"""Would the predictor's overhead go if the graph took the camera's bytes? An experiment, not
what export writes.

For each exported ONNX file the script builds a variant whose input is uint8 ``[N, H, W, 3]``
(RGB at the model's size) and whose first nodes do the preprocessing's float32 operations in
its order (Cast, Transpose to NCHW, x * 1/255, - mean, / std), then times, interleaved, with
ONNX Runtime's defaults less spinning (what ``Predictor`` opens untuned):

* ``bare``: the session's ``run`` on the already normalised float32 batch (the floor of the
  predictor's path);
* ``predictor``: ``Predictor.predict_batch`` on the list of uint8 arrays;
* ``uint8 graph``: ``np.stack`` of the same list and one ``run`` of the variant.

It also checks that the variant's probabilities equal the original's on the predictor's input
(the same float32 operations, so the same numbers).

    python benchmarks/uint8_input.py runs/demo/export/snet3/snet3.int8.onnx [--batches 1,32]
        [--calls 2000] [--json-out ... --md-out ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from facedistill.io import write_results
from facedistill.runtime import Predictor
from facedistill.runtime.backends import open_session
from facedistill.runtime.cpu import cpu_record


def uint8_variant(path: Path, mean: Any, std: Any) -> bytes:
    """The ONNX file with a uint8 NHWC input and the normalisation as its first nodes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    old = graph.input[0]
    name = old.name
    dims = [d.dim_param or d.dim_value for d in old.type.tensor_type.shape.dim]
    new_in = helper.make_tensor_value_info("images_u8", TensorProto.UINT8,
                                           [dims[0], dims[2], dims[3], dims[1]])
    consts = {"pre_scale": np.array(1.0 / 255.0, dtype=np.float32),
              "pre_mean": np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1),
              "pre_std": np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)}
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    pre = [helper.make_node("Cast", ["images_u8"], ["pre_f"], to=TensorProto.FLOAT),
           helper.make_node("Transpose", ["pre_f"], ["pre_t"], perm=[0, 3, 1, 2]),
           helper.make_node("Mul", ["pre_t", "pre_scale"], ["pre_s"]),
           helper.make_node("Sub", ["pre_s", "pre_mean"], ["pre_m"]),
           helper.make_node("Div", ["pre_m", "pre_std"], [name])]
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(pre + nodes)
    graph.input.remove(old)
    graph.input.insert(0, new_in)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _median_ms(calls: dict[str, Callable[[], Any]], n: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in calls}
    for f in calls.values():
        for _ in range(20):
            f()
    for _ in range(n):
        for k, f in calls.items():
            t0 = time.perf_counter()
            f()
            times[k].append((time.perf_counter() - t0) * 1000.0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--md-out", type=Path)
    args = ap.parse_args()
    rows = []
    for path in args.models:
        pred = Predictor(path, tuned=False)
        pre = pred.preprocess
        plain = open_session(path, device="cpu", quiet=True)
        u8 = open_session(uint8_variant(path, pre.mean, pre.std), device="cpu", quiet=True)
        h, w = pred.input_size
        for b in (int(x) for x in args.batches.split(",")):
            rgb = list(np.random.default_rng(b).integers(0, 256, (b, h, w, 3), dtype=np.uint8))
            x = pred.preprocess_batch(rgb)
            feed = {pred.info.input_name: x}
            ref = plain.run(None, feed)[0]
            got = u8.run(None, {"images_u8": np.stack(rgb)})[0]
            med = _median_ms({
                "bare": lambda s=plain, f=feed: s.run(None, f),
                "predictor": lambda p=pred, r=rgb: p.predict_batch(r),
                "uint8 graph": lambda s=u8, r=rgb: s.run(None, {"images_u8": np.stack(r)}),
            }, max(50, args.calls // b))
            rows.append({"file": str(path), "batch": b, **{f"{k}_ms": v for k, v in med.items()},
                         "predictor_overhead": med["predictor"] / med["bare"] - 1,
                         "uint8_overhead": med["uint8 graph"] / med["bare"] - 1,
                         "max_abs_diff": float(np.abs(got - ref).max())})
    cpu = cpu_record()
    result = {"benchmark": "uint8_input", "rows": rows, "machine": cpu,
              "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(json.dumps(result))
    lines = [f"uint8 input graphs, {cpu['model']} ({cpu['int8_class']}, {cpu['cores']} cores), "
             f"{result['when']}: interleaved medians, ONNX Runtime default threads, no spinning.",
             "", "| file | batch | bare ms | predictor ms | overhead | uint8 graph ms | overhead "
             "| max abs diff |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {Path(r['file']).name} | {r['batch']} | {r['bare_ms']:.3f} | "
                     f"{r['predictor_ms']:.3f} | {100 * r['predictor_overhead']:+.1f}% | "
                     f"{r['uint8 graph_ms']:.3f} | {100 * r['uint8_overhead']:+.1f}% | "
                     f"{r['max_abs_diff']:.1e} |")
    table = "\n".join(lines) + "\n"
    print(table)
    write_results(result, table, args.json_out, args.md_out)


if __name__ == "__main__":
    main()
