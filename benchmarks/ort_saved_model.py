"""Does a saved optimized model pay? Session-open time and per-call time of ONNX Runtime
sessions opened from the exported file (graph optimization ``all`` at load) against ones
opened from the model ONNX Runtime saved after those optimizations (``optimized_model_filepath``,
loaded with optimizations off), per file, interleaved.

The saved ``all`` graph holds layout rewrites for this CPU (ONNX Runtime warns that it is
hardware-specific), so it would only ever be a per-machine artifact like a tuning sidecar.

    python benchmarks/ort_saved_model.py runs/demo/export/*/*.onnx [--opens 9] [--calls 300]
        [--json-out benchmarks/results/ort_saved_model.json --md-out ...md]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from facedistill.bench.core import make_input
from facedistill.io import write_results
from facedistill.runtime.backends import open_session
from facedistill.runtime.cpu import cpu_record
from facedistill.runtime.metadata import parse_metadata


def _open(source: Path, opt_level: str, save: Path | None = None) -> tuple[Any, float]:
    import onnxruntime as ort

    t0 = time.perf_counter()
    if save is None:
        sess = open_session(source, device="cpu", quiet=True, opt_level=opt_level)
    else:  # open_session has no optimized_model_filepath: writing one is this script's job
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(save)
        sess = ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    return sess, (time.perf_counter() - t0) * 1000.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--opens", type=int, default=9)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--md-out", type=Path)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="facedistill-saved-") as tmp:
        for path in args.models:
            saved = Path(tmp) / (path.stem + ".all.onnx")
            first, _ = _open(path, "all", save=saved)
            info = parse_metadata(first.get_modelmeta().custom_metadata_map, source=str(path))
            fresh_ms, saved_ms = [], []
            for _ in range(args.opens):  # interleaved opens
                fresh_ms.append(_open(path, "all")[1])
                saved_ms.append(_open(saved, "disable")[1])
            a, _ = _open(path, "all")
            b, _ = _open(saved, "disable")
            x = make_input(info.preprocess, 1)
            feed = {info.input_name: x}
            diff = float(np.abs(a.run(None, feed)[0] - b.run(None, feed)[0]).max())
            call = {"exported": [], "saved": []}
            for _ in range(args.calls):
                for name, s in (("exported", a), ("saved", b)):
                    t0 = time.perf_counter()
                    s.run(None, feed)
                    call[name].append((time.perf_counter() - t0) * 1000.0)
            rows.append({"file": str(path), "open_ms": statistics.median(fresh_ms),
                         "open_saved_ms": statistics.median(saved_ms),
                         "call_ms": statistics.median(call["exported"]),
                         "call_saved_ms": statistics.median(call["saved"]),
                         "max_abs_diff": diff})
    cpu = cpu_record()
    result = {"benchmark": "ort_saved_model", "opens": args.opens, "calls": args.calls,
              "rows": rows, "machine": cpu, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(json.dumps(result))
    lines = [f"Saved optimized models, {cpu['model']} ({cpu['int8_class']}, {cpu['cores']} "
             f"cores), {result['when']}: medians of {args.opens} interleaved session opens "
             f"and {args.calls} interleaved batch-1 calls (ONNX Runtime defaults, no "
             "spinning).", "",
             "| file | open ms | open ms, saved | call ms | call ms, saved | max abs diff |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {Path(r['file']).name} | {r['open_ms']:.1f} | {r['open_saved_ms']:.1f} "
                     f"| {r['call_ms']:.3f} | {r['call_saved_ms']:.3f} | {r['max_abs_diff']:.1e} |")
    table = "\n".join(lines) + "\n"
    print(table)
    write_results(result, table, args.json_out, args.md_out)


if __name__ == "__main__":
    main()
