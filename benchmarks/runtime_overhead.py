"""Runtime overhead: ``Predictor.predict_batch`` against a bare ONNX Runtime ``session.run``.

The bare session gets a batch that is already preprocessed (float32 NCHW); the predictor gets
the same pictures as decoded uint8 RGB arrays, so the overhead measured is the predictor's own:
copying into its buffers, normalising, running, and building one result per image. Image
decoding is excluded. Two predictor variants: arrays already at the model's input size (the
overhead a face app pays per frame after its own crop/resize), and arrays at 2x the input size
(``with resize``: the PIL resize of the eval transform included). Both sessions use the same
ONNX Runtime options (``--threads``, CPU). Batch sizes 1 and 32, the variants interleaved round
by round (rotating order) in one process, medians over rounds. Goal: overhead <= 15% at batch 32
without resize.

Also reported for batch 32: the median time of each predictor component (buffer copy +
normalise, the session run, building results), to see where any overhead goes.

Prints one JSON line, then a Markdown table.

    python benchmarks/runtime_overhead.py --model snet3.fp32.onnx [--threads 1] [--rounds 200]
        [--json-out benchmarks/results/runtime_overhead.json --md-out ...md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from facedistill.io import write_results
from facedistill.runtime import Predictor

GOAL = 0.15


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    import onnxruntime as ort

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="an exported .onnx")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--md-out", type=Path)
    args = ap.parse_args()

    batches = [int(b) for b in args.batches.split(",")]
    predictor = Predictor(args.model, backend="ort", device="cpu", threads=args.threads,
                          batch_size=max(batches))
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(args.model), options, providers=["CPUExecutionProvider"])
    height, width = predictor.input_size
    rng = np.random.default_rng(args.seed)

    rows = []
    for b in batches:
        small = list(rng.integers(0, 256, (b, height, width, 3), dtype=np.uint8))
        large = list(rng.integers(0, 256, (b, 2 * height, 2 * width, 3), dtype=np.uint8))
        x = predictor.preprocess_batch(small)  # the bare session's input: the same pictures
        ref = session.run(["probabilities"], {"input": x})[0]
        got = np.stack([p.probabilities for p in predictor.predict_batch(small)])
        max_diff = float(np.abs(got - ref).max())
        variants: dict[str, Callable[[], object]] = {
            "bare": lambda x=x: session.run(["probabilities"], {"input": x}),
            "predictor": lambda s=small: predictor.predict_batch(s),
            "predictor_resize": lambda s=large: predictor.predict_batch(s),
        }
        names = list(variants)
        for _ in range(args.warmup):
            for name in names:
                variants[name]()
        times: dict[str, list[float]] = {n: [] for n in names}
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                times[name].append(_timed(variants[name]))
        med = {n: statistics.median(t) for n, t in times.items()}
        row = {
            "batch": b, "bare_ms": 1e3 * med["bare"], "predictor_ms": 1e3 * med["predictor"],
            "predictor_resize_ms": 1e3 * med["predictor_resize"],
            "overhead": med["predictor"] / med["bare"] - 1.0,
            "overhead_resize": med["predictor_resize"] / med["bare"] - 1.0,
            "per_image_us": 1e6 * med["predictor"] / b,
            "max_abs_diff": max_diff,
        }
        rgbs = [predictor._resized(img) for img in small]
        probs = ref
        parts = {
            "fill_normalize": lambda rgbs=rgbs: predictor._fill(rgbs),
            "run": lambda x=x: predictor.run(x),
            "results": lambda probs=probs, n=b: predictor._predictions(probs, [None] * n),
        }
        row["components_ms"] = {
            name: 1e3 * statistics.median(_timed(fn) for _ in range(max(20, args.rounds // 4)))
            for name, fn in parts.items()}
        rows.append(row)
        print(f"batch {b}: bare {row['bare_ms']:.3f} ms, predictor {row['predictor_ms']:.3f} ms "
              f"({100 * row['overhead']:+.1f}%), with resize {row['predictor_resize_ms']:.3f} ms "
              f"({100 * row['overhead_resize']:+.1f}%)", flush=True)

    by_b = {r["batch"]: r for r in rows}
    goals = {}
    if 32 in by_b:
        goals["overhead_b32_le_15pct"] = by_b[32]["overhead"] <= GOAL
    info = predictor.describe()
    result = {
        "benchmark": "runtime_overhead",
        "model": {"path": str(args.model), "arch": info["arch"], "precision": info["precision"],
                  "input_size": info["input_size"]},
        "threads": args.threads, "rounds": args.rounds, "warmup": args.warmup,
        "rows": rows,
        "goals": goals,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version(), "numpy": np.__version__,
                    "onnxruntime": ort.__version__,
                    "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(json.dumps(result))

    arch = info["arch"]
    md = [f"runtime overhead: {arch.get('arch')} width {arch.get('width')}, "
          f"{info['precision']}, input {height}x{width}, ORT CPU, {args.threads} thread(s), "
          f"{args.rounds} interleaved rounds, medians; goals: "
          f"{', '.join(f'{k} {v}' for k, v in goals.items()) or 'n/a'}", "",
          "| batch | bare session.run ms | predict_batch ms | overhead | with resize ms "
          "| overhead with resize | per image us | copy+normalize ms | results ms |",
          "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        c = r["components_ms"]
        md.append(f"| {r['batch']} | {r['bare_ms']:.3f} | {r['predictor_ms']:.3f} "
                  f"| {100 * r['overhead']:+.1f}% | {r['predictor_resize_ms']:.3f} "
                  f"| {100 * r['overhead_resize']:+.1f}% | {r['per_image_us']:.0f} "
                  f"| {c['fill_normalize']:.3f} | {c['results']:.3f} |")
    table = "\n".join(md) + "\n"
    print(table)
    write_results(result, table, args.json_out, args.md_out)


if __name__ == "__main__":
    main()
