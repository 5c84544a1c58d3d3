"""Export variants: FP32 / FP16 / INT8 ONNX of TNet and SNet3 under each INT8 recipe - size,
ONNX Runtime CPU latency, accuracy delta - in one run.

Each run is exported with :func:`facedistill.export.export_model` (gate off so every variant
is measured) with the INT8 recipes ``cpu`` (7-bit weights) and ``tensorrt`` (8-bit weights,
float biases), and once more from its fp32 file with ``cpu-vnni`` (8-bit weights, int32
biases: what every INT8 file was before recipes). Every INT8 file is scored twice on the
validation split: through ONNX Runtime's integer kernels on *this* CPU, and through ONNX
Runtime's float emulation of the same Q/DQ graph (what TensorRT or a VNNI CPU computes), with
the largest probability difference between the two. The CPU's INT8 class
(:mod:`facedistill.runtime.cpu`) is in the table's title.

Latency: ONNX Runtime CPU execution provider, per batch size, ``--rounds`` rounds after
``--warmup`` runs of each variant; the variants are INTERLEAVED (one call of each per round,
the order rotating every round) so background load hits them alike; median and p90.

Prints one JSON line, then a Markdown table.

    python benchmarks/export_variants.py --tnet runs/demo/teacher --snet3 runs/demo/students/snet3
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
INT8_VARIANTS = ("int8", "int8-vnni", "int8-trt")
RECIPE = {"int8": "cpu", "int8-vnni": "cpu-vnni", "int8-trt": "tensorrt"}


def measure_latency(paths: dict[str, Path], size: tuple[int, int], batches: list[int],
                    rounds: int, warmup: int, threads: int) -> dict[str, dict[str, Any]]:
    """``{variant: {str(batch): {"median_ms", "p90_ms", "runs"}}}``, interleaved rounds."""
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


def score_both_ways(paths: dict[str, Path], data: Path, split: str = "val"
                    ) -> dict[str, dict[str, float]]:
    """Per variant: mean balanced accuracy with integer kernels (``integer``) and, for INT8,
    with the Q/DQ emulated (``emulated``) and their largest probability difference."""
    from facedistill.bench.accuracy import balanced_accuracy, predict_images, split_images
    from facedistill.export.onnx import get_metadata, load_onnx, ort_session
    from facedistill.runtime.metadata import parse_metadata

    info = parse_metadata(get_metadata(load_onnx(paths["fp32"])))
    images, labels, names = split_images(data, split)
    runs = [(p, False) for p in paths] + [(p, True) for p in paths if p.startswith("int8")]
    sessions = [ort_session(paths[p], emulate_qdq=emu) for p, emu in runs]
    width = len(info.attributes)

    def run_all(x: np.ndarray) -> np.ndarray:
        return np.concatenate([s.run(["probabilities"], {"input": x})[0] for s in sessions], 1)

    probs = predict_images(run_all, info.preprocess, images, batch_size=64)
    part = {run: probs[:, k * width:(k + 1) * width] for k, run in enumerate(runs)}
    out: dict[str, dict[str, float]] = {}
    for p in paths:
        out[p] = {"integer": balanced_accuracy(part[(p, False)], labels, info.thresholds,
                                               names)["mean_balanced"]}
        if (p, True) in part:
            out[p]["emulated"] = balanced_accuracy(part[(p, True)], labels, info.thresholds,
                                                   names)["mean_balanced"]
            out[p]["max_abs_diff_integer_vs_emulated"] = float(
                np.abs(part[(p, True)] - part[(p, False)]).max())
        out[p]["max_abs_diff_to_fp32"] = float(np.abs(part[(p, False)] -
                                                      part[("fp32", False)]).max())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tnet", type=Path, default=Path("runs/demo/teacher"))
    ap.add_argument("--snet3", type=Path, default=Path("runs/demo/students/snet3"))
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
    from facedistill.io import command_line
    from facedistill.runtime.cpu import cpu_record

    batches = [int(b) for b in args.batches.split(",")]
    cpu = cpu_record()
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
            common = {"calib_n": args.calib_n, "calib_method": args.calib_method,
                      "no_gate": True, "eval_data": args.data}
            report = export_model(run, export_dir / name, int8_recipe="cpu,tensorrt",
                                  trt_profile=(1, max(batches), max(batches)), **common)
            assert report.data.eval is not None and report.data.calibration is not None
            eval_root = str(report.data.eval.root)
            vnni = export_model(Path(str(report.variants["fp32"].path)),
                                export_dir / name / "vnni", precision="int8",
                                int8_recipe="cpu-vnni",
                                **{**common, "eval_data": eval_root,
                                   "calib_data": report.data.calibration.root})
            export_s = time.perf_counter() - t0
            variants = {**report.variants, "int8-vnni": vnni.variants["int8"]}
            paths = {p: Path(str(v.path)) for p, v in variants.items()}
            size = _input_size(paths["fp32"])
            scores = score_both_ways(paths, Path(eval_root))
            latency = measure_latency(paths, size, batches, args.rounds, args.warmup,
                                      args.threads)
            base = scores["fp32"]["integer"]
            models[name] = {
                "run": str(run), "arch": report.arch, "input_size": list(size),
                "eval": report.data.eval.to_json(),
                "calibration": report.data.calibration.to_json(), "export_seconds": export_s,
                "variants": {p: {
                    "recipe": RECIPE.get(p), "size_bytes": v.size_bytes,
                    "size_vs_fp32": v.size_bytes / variants["fp32"].size_bytes,
                    "mean_balanced": scores[p]["integer"],
                    "delta_points": 100.0 * (scores[p]["integer"] - base),
                    "emulated_delta_points": (100.0 * (scores[p]["emulated"] - base)
                                              if "emulated" in scores[p] else None),
                    "max_abs_diff_to_fp32": scores[p]["max_abs_diff_to_fp32"],
                    "max_abs_diff_integer_vs_emulated": scores[p].get(
                        "max_abs_diff_integer_vs_emulated"),
                    "gate_kernels": v.int8_gate.kernels if v.int8_gate else None,
                    "latency": latency[p],
                    "speedup_vs_fp32": {b: latency["fp32"][b]["median_ms"] / lat["median_ms"]
                                        for b, lat in latency[p].items()},
                } for p, v in variants.items()},
            }
            print(f"{name}: exported in {export_s:.1f}s; " + ", ".join(
                f"{p} {models[name]['variants'][p]['delta_points']:+.2f} pt" for p in variants),
                flush=True)
    finally:
        if tmp is not None:
            tmp.cleanup()

    result = {
        "benchmark": "export_variants",
        "command": command_line(),
        "batches": batches, "rounds": args.rounds, "warmup": args.warmup,
        "threads": args.threads or "ort default",
        "models": models,
        "machine": {**cpu, "python": platform.python_version(), "onnxruntime": ort.__version__,
                    "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(json.dumps(result))

    head = " | ".join(f"b={b} ms (p90)" for b in batches)
    md = [f"**CPU: {cpu['model']} ({cpu['int8_class']}), {os.cpu_count()} cores**, ONNX Runtime "
          f"{ort.__version__}, {args.rounds} interleaved rounds (median, p90 in brackets). "
          "Accuracy: mean balanced accuracy on the val split at the stored thresholds, as run "
          "by ONNX Runtime's integer kernels on this CPU; 'emulated': the same file with its "
          "Q/DQ computed in float32 (what TensorRT or a VNNI CPU computes); 'int vs emu': the "
          "largest probability difference between the two. Runs: " + "; ".join(
              f"{n} = {m['run']} ({m['eval']['n_images'] if m['eval'] else '?'} val images, "
              f"INT8 calibrated on {m['calibration']['n_images']} train images, "
              f"{m['calibration']['method']})" for n, m in models.items()), "",
          f"| model | variant (recipe) | size | delta (pt) | emulated delta (pt) | int vs emu | "
          f"{head} | speed-up b={max(batches)} |",
          "|---|---|---:|---:|---:|---:|" + "---:|" * len(batches) + "---:|"]
    for name, m in models.items():
        for p, v in m["variants"].items():
            lat = " | ".join(f"{v['latency'][str(b)]['median_ms']:.2f} "
                             f"({v['latency'][str(b)]['p90_ms']:.2f})" for b in batches)
            emu = v["emulated_delta_points"]
            dev = v["max_abs_diff_integer_vs_emulated"]
            label = f"{p} ({v['recipe']})" if v["recipe"] else p
            md.append(f"| {name} (w{m['arch']['width']:g}, {m['input_size'][0]}px) | {label} | "
                      f"{v['size_bytes'] / 1e6:.2f} MB | {v['delta_points']:+.2f} | "
                      f"{'-' if emu is None else f'{emu:+.2f}'} | "
                      f"{'-' if dev is None else f'{dev:.3f}'} | {lat} | "
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
