"""Where an INT8 file's error comes from on this CPU: layer by layer, ONNX Runtime's integer
kernels against its float emulation of the same Q/DQ graph, and both against fp32.

For every quantized activation (each ``QuantizeLinear -> DequantizeLinear`` pair) and the
logits, the graph is cut there (``onnx.utils.extract_model``) and run twice on the same
validation images: with the Q/DQ pairs fused into integer kernels (ONNX Runtime's default)
and with them computed in float32 (``session.disable_quant_qdq``). A cut keeps the Q/DQ pair
whose dequantized value it outputs, so what it reports is the error up to and including that
layer. A column "int vs emu" that jumps at a layer is that layer's kernel saturating (x86
without VNNI multiplies u8 x s8 pairs into 16-bit sums); "emu vs fp32" is the quantization
error itself. The CPU's INT8 class is in the title.

    python benchmarks/int8_kernels.py runs/demo/export/teacher/tnet.int8.onnx \
        [--fp32 .../tnet.fp32.onnx] [--data data/synth] [--n 64]
        [--json-out benchmarks/results/int8_kernels.json --md-out ...md]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from facedistill.io import write_results

RESULTS = Path(__file__).resolve().parent / "results"


def cut_points(model: Any) -> list[tuple[str, str]]:
    """``(op that made it, tensor)`` for every dequantized activation, in graph order, and the
    logits."""
    consumers: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    producer = {o: n for n in model.graph.node for o in n.output}
    points = []
    for n in model.graph.node:
        if n.op_type != "QuantizeLinear":
            continue
        dq = next((c for c in consumers.get(n.output[0], []) if c.op_type == "DequantizeLinear"),
                  None)
        if dq is not None:
            src = producer.get(n.input[0])
            points.append((src.op_type if src is not None else "input", dq.output[0]))
    return [*points, ("Gemm", "logits")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("int8", type=Path)
    ap.add_argument("--fp32", type=Path, default=None,
                    help="the fp32 export [default: <arch>.fp32.onnx beside the int8 file]")
    ap.add_argument("--data", type=Path, default=None,
                    help="CelebA-format folder [default: the export report's eval data]")
    ap.add_argument("--n", type=int, default=64, help="validation images")
    ap.add_argument("--json-out", type=Path, default=RESULTS / "int8_kernels.json")
    ap.add_argument("--md-out", type=Path, default=RESULTS / "int8_kernels.md")
    args = ap.parse_args()

    import onnx
    import onnxruntime as ort

    from facedistill.bench.accuracy import load_batch, split_images
    from facedistill.export.onnx import get_metadata, load_onnx, ort_session
    from facedistill.io import command_line
    from facedistill.runtime.cpu import cpu_record
    from facedistill.runtime.metadata import parse_metadata

    fp32 = args.fp32 or args.int8.with_name(args.int8.name.split(".")[0] + ".fp32.onnx")
    data = args.data
    if data is None:
        from facedistill.export.report import read_export_report

        used = read_export_report(args.int8.parent).data.eval
        if used is None or used.root is None:
            ap.error(f"{args.int8.parent}: the export was not evaluated; pass --data")
        data = Path(used.root)
    model = load_onnx(args.int8)
    info = parse_metadata(get_metadata(model), source=str(args.int8))
    paths, _, _ = split_images(data, "val")
    x = load_batch(info.preprocess, list(paths[:args.n]))
    ref_model = onnx.load(str(fp32))
    ref_names = {o for n in ref_model.graph.node for o in n.output}
    rows = []
    with tempfile.TemporaryDirectory(prefix="int8_kernels-") as tmp:
        for op, tensor in cut_points(model):
            sub = Path(tmp) / "cut.onnx"
            onnx.utils.extract_model(str(args.int8), str(sub), ["input"], [tensor])
            integer = ort_session(sub).run(None, {"input": x})[0]
            emulated = ort_session(sub, emulate_qdq=True).run(None, {"input": x})[0]
            scale = float(np.abs(emulated).max()) or 1.0
            row = {"op": op, "tensor": tensor,
                   "int_vs_emu_max": float(np.abs(integer - emulated).max()),
                   "int_vs_emu_rel": float(np.abs(integer - emulated).max()) / scale,
                   "share_differing": float(np.mean(np.abs(integer - emulated) > 1e-6 * scale))}
            original = tensor.removesuffix("_DequantizeLinear_Output")
            if original in ref_names or original == "logits":
                cut = Path(tmp) / "ref.onnx"
                onnx.utils.extract_model(str(fp32), str(cut), ["input"], [original])
                ref = ort_session(cut).run(None, {"input": x})[0]
                row["emu_vs_fp32_rel"] = float(np.abs(emulated - ref).max()) / scale
            rows.append(row)
            print(f"{op:10s} {tensor[:48]:48s} int vs emu {row['int_vs_emu_rel']:.4f}",
                  flush=True)
    cpu = cpu_record()
    result = {"benchmark": "int8_kernels", "command": command_line(), "file": str(args.int8),
              "recipe": info.int8_recipe, "weight_bits": info.int8_weight_bits,
              "n_images": int(len(x)), "machine": {**cpu, "onnxruntime": ort.__version__},
              "layers": rows, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(json.dumps(result))
    md = [f"**{args.int8.name}** (recipe {info.int8_recipe or 'none (before recipes)'}, "
          f"{info.int8_weight_bits}-bit weights) on **{cpu['model']} ({cpu['int8_class']})**, "
          f"ONNX Runtime {ort.__version__}, {len(x)} val images. Errors are the largest "
          "|difference| relative to the layer's largest |value|; 'share' is the share of values "
          "where the integer kernels differ from the emulation.", "",
          "| # | after | tensor | int vs emu | share | emu vs fp32 |",
          "|---:|---|---|---:|---:|---:|"]
    for k, r in enumerate(rows):
        emu = r.get("emu_vs_fp32_rel")
        md.append(f"| {k} | {r['op']} | `{r['tensor']}` | {r['int_vs_emu_rel']:.4f} | "
                  f"{r['share_differing']:.1%} | {'-' if emu is None else f'{emu:.4f}'} |")
    table = "\n".join(md) + "\n"
    print(table)
    write_results(result, table, args.json_out, args.md_out)


if __name__ == "__main__":
    main()
