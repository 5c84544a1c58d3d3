"""Export variants: FP32 / FP16 / INT8 ONNX of TNet and SNet3 - size, ONNX Runtime CPU latency,
accuracy delta - in one run.

Each run is exported with :func:`facedistill.export.export_model` (INT8 calibrated on
``--calib-n`` training images, gate off so every variant is measured; the drop is reported).
Latency: ONNX Runtime CPU execution provider, per batch size, ``--rounds`` rounds after
``--warmup`` runs of each variant; the variants are INTERLEAVED (one call of each per round,
the order rotating every round) so background load hits them alike; the median and p90 per
variant are reported. Accuracy: mean balanced accuracy on the validation split with the
thresholds stored at training time, and its delta to FP32 in points.

Prints one JSON line, then a Markdown table.

    python benchmarks/export_variants.py --tnet runs/table3/tnet --snet3 runs/table3/snet3
        [--data DIR] [--batches 1,32] [--rounds 30] [--threads 0] [--calib-n 512]
        [--export-dir DIR] [--json-out benchmarks/results/export_variants.json --md-out ...md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from facedistill.io import write_results

RESULTS = Path(__file__).resolve().parent / "results"


def measure_latency(paths: dict[str, Path], size: tuple[int, int], batches: list[int],
                    rounds: int, warmup: int, threads: int) -> dict[str, dict[str, Any]]:
    """``{precision: {str(batch): {"median_ms", "p90_ms", "runs"}}}``, interleaved rounds."""
    from facedistill.export.onnx import ort_session, parity_inputs

    sessions = {p: ort_session(path, threads or None) for p, path in paths.items()}
    order = list(sessions)
    out: dict[str, dict[str, Any]] = {p: {} for p in order}
    for b in batches:
        x = parity_inputs(b, size)
        for p in order:
            for _ in range(warmup):
                sessions[p].run(None, {"input": x})
        times: dict[str, list[float]] = {p: [] for p in order}
        for r in range(rounds):
            for p in order[r % len(order):] + order[:r % len(order)]:
                t0 = time.perf_counter()
                sessions[p].run(None, {"input": x})
                times[p].append(1000.0 * (time.perf_counter() - t0))
        for p in order:
            arr = np.asarray(times[p])
            out[p][str(b)] = {"median_ms": float(np.median(arr)),
                              "p90_ms": float(np.percentile(arr, 90)), "runs": len(arr)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tnet", type=Path, default=Path("runs/table3/tnet"))
    ap.add_argument("--snet3", type=Path, default=Path("runs/table3/snet3"))
    ap.add_argument("--data", type=Path, default=None,
                    help="CelebA-format folder [default: each run's own data]")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0,
                    help="ONNX Runtime intra-op threads (0: its default, all cores)")
    ap.add_argument("--calib-n", type=int, default=512)
    ap.add_argument("--calib-method", default="entropy")
    ap.add_argument("--export-dir", type=Path, default=None,
                    help="keep the exports here [default: a temporary folder]")
    ap.add_argument("--json-out", type=Path, default=RESULTS / "export_variants.json")
    ap.add_argument("--md-out", type=Path, default=RESULTS / "export_variants.md")
    args = ap.parse_args()

    import onnxruntime as ort

    from facedistill.export import export_model

    batches = [int(b) for b in args.batches.split(",")]
    tmp = None
    if args.export_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="export_variants-")
        export_dir = Path(tmp.name)
    else:
        export_dir = args.export_dir
    models: dict[str, Any] = {}
    try:
        for name, run in (("tnet", args.tnet), ("snet3", args.snet3)):
            t0 = time.perf_counter()
            report = export_model(run, export_dir / name, calib_n=args.calib_n,
                                  calib_method=args.calib_method, gate=False,
                                  eval_data=args.data, batches=(1, max(batches), max(batches)))
            export_s = time.perf_counter() - t0
            variants = report["variants"]
            paths = {p: Path(v["path"]) for p, v in variants.items()}
            size = _input_size(paths["fp32"])
            latency = measure_latency(paths, size, batches, args.rounds, args.warmup,
                                      args.threads)
            models[name] = {
                "run": str(run), "arch": report["arch"], "input_size": list(size),
                "eval": report["data"].get("eval"), "calibration": report["data"].get(
                    "calibration"), "export_seconds": export_s,
                "variants": {p: {
                    "size_bytes": v["size_bytes"],
                    "size_vs_fp32": v["size_bytes"] / variants["fp32"]["size_bytes"],
                    "mean_balanced": v["accuracy"]["mean_balanced"],
                    "delta_points": 100.0 * v["accuracy"]["delta_to_fp32"],
                    "max_abs_diff_to_fp32": v.get("max_abs_diff_to_fp32"),
                    "latency": latency[p],
                    "speedup_vs_fp32": {b: latency["fp32"][b]["median_ms"] / lat["median_ms"]
                                        for b, lat in latency[p].items()},
                } for p, v in variants.items()},
            }
            print(f"{name}: exported in {export_s:.1f}s; " + ", ".join(
                f"{p} {models[name]['variants'][p]['latency'][str(max(batches))]['median_ms']:.1f}"
                f" ms @b{max(batches)}" for p in variants), flush=True)
    finally:
        if tmp is not None:
            tmp.cleanup()

    result = {
        "benchmark": "export_variants",
        "batches": batches, "rounds": args.rounds, "warmup": args.warmup,
        "threads": args.threads or "ort default",
        "models": models,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version(), "onnxruntime": ort.__version__,
                    "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(json.dumps(result))

    head = " | ".join(f"b={b} ms (p90)" for b in batches)
    md = [f"ONNX Runtime {ort.__version__} CPU, {os.cpu_count()} cores, {args.rounds} "
          "interleaved rounds (median, p90 in brackets); accuracy: mean balanced accuracy on "
          "the val split at the stored thresholds. Runs: " + "; ".join(
              f"{n} = {m['run']} ({m['eval']['n_images'] if m['eval'] else '?'} val images, "
              f"INT8 calibrated on {m['calibration']['n_images']} train images, "
              f"{m['calibration']['method']})" for n, m in models.items()), "",
          f"| model | precision | size | vs fp32 | bal. acc. | delta (pt) | {head} | "
          f"speed-up b={max(batches)} |",
          "|---|---|---:|---:|---:|---:|" + "---:|" * len(batches) + "---:|"]
    for name, m in models.items():
        for p, v in m["variants"].items():
            lat = " | ".join(f"{v['latency'][str(b)]['median_ms']:.2f} "
                             f"({v['latency'][str(b)]['p90_ms']:.2f})" for b in batches)
            md.append(f"| {name} (w{m['arch']['width']:g}, {m['input_size'][0]}px) | {p} | "
                      f"{v['size_bytes'] / 1e6:.2f} MB | {v['size_vs_fp32']:.2f}x | "
                      f"{100 * v['mean_balanced']:.2f}% | {v['delta_points']:+.2f} | {lat} | "
                      f"{v['speedup_vs_fp32'][str(max(batches))]:.2f}x |")
    table = "\n".join(md) + "\n"
    print(table)
    write_results(result, table, args.json_out, args.md_out)


def _input_size(path: Path) -> tuple[int, int]:
    from facedistill.export.onnx import get_metadata, load_onnx
    from facedistill.runtime.metadata import parse_metadata

    return parse_metadata(get_metadata(load_onnx(path))).preprocess.size


if __name__ == "__main__":
    main()
