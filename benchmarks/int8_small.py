"""INT8 for small nets: which quantization pays, through which CPU runtime, at what accuracy.

For each FP32 export (e.g. ``runs/demo/export/snet3/snet3.fp32.onnx``) the script writes INT8
variants with ``facedistill.export.quantize.quantize_int8`` (calibrated on ``--calib-n``
training images of ``--data``) and measures, in one run of shuffled blocks (``bench.tune``'s
``measure_blocks``: back-to-back calls per block, the order shuffled every round), each
variant's latency at every batch size through ONNX Runtime (its defaults) and OpenVINO (its defaults, f32 inference
precision), and its validation accuracy through both (their integer kernels differ):

* ``shipped`` - what ``facedistill export`` writes (recipe ``cpu``): Q/DQ, per-channel 7-bit
  weights, int8 activations with a zero point (so ONNX Runtime folds each ReLU into its conv),
  the classifier's output and the sigmoid in float;
* ``symmetric`` - the same with symmetric activations (zero points 0: what TensorRT needs and
  what the ``cpu`` recipe was before this study): every ReLU stays a float op between a
  DequantizeLinear and a QuantizeLinear;
* ``per-tensor`` - one scale per weight tensor;
* ``8bit`` - 8-bit weights (recipe ``cpu-vnni``: right for VNNI CPUs, saturates ONNX
  Runtime's kernels on AVX2-only ones, not OpenVINO's);
* ``qoperator`` - ONNX Runtime's fused operators (QLinearConv, QGemm) instead of Q/DQ pairs;
* ``float-<node>`` - ``shipped`` with one conv (or the classifier) kept in float: per-layer
  accuracy sensitivity, and what each layer's quantization costs or saves in time.

With the library's own tools: per-tensor signal-to-quantization-noise ratios of the shipped
variant (``onnxruntime.quantization.qdq_loss_debug``, activations on the calibration images,
weights), and per-operator time at the largest batch (ONNX Runtime's profiler; OpenVINO's
``PERF_COUNT`` with the kernel each node ran).

Prints one JSON line, then Markdown tables.

    python benchmarks/int8_small.py runs/x/export/snet3/snet3.fp32.onnx ... --data DIR
        [--batches 1,32] [--seconds 1] [--calib-n 512] [--work DIR]
        [--json-out benchmarks/results/int8_small_avx2.json --md-out ...md]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from facedistill.bench import tune as tune_mod
from facedistill.bench.accuracy import balanced_accuracy, predict_images, split_images
from facedistill.bench.stats import summarize
from facedistill.export.quantize import (
    CalibrationReader,
    calibration_images,
    preprocess_images,
    quantizable_nodes,
    quantize_int8,
)
from facedistill.io import write_results
from facedistill.runtime import Predictor
from facedistill.runtime.backends import open_setting
from facedistill.runtime.cpu import cpu_record
from facedistill.runtime.openvino import compile_model, have_openvino, read_onnx
from facedistill.runtime.tuning import Setting

RUNTIMES = {"ort": Setting(threads=None, spin=True), "ov": Setting(backend="ov")}
PROFILE_CALLS = 50


def variants(nodes: list[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """Name -> ``quantize_int8`` keyword arguments."""
    out: dict[str, dict[str, Any]] = {
        "shipped": {},
        "symmetric": {"symmetric_activations": True},
        "per-tensor": {"per_channel": False},
        "8bit": {"recipe": "cpu-vnni"},
        "qoperator": {"quant_format": "qoperator"},
    }
    for name, op in nodes:
        if op in ("Conv", "Gemm"):
            out[f"float-{name}"] = {"keep_float": [name]}
    return out


def accuracy(path: Path, runtime: str, images: dict[str, Any]) -> tuple[float, np.ndarray]:
    be = open_setting(path, RUNTIMES[runtime])
    try:
        pred = Predictor(path, backend="ort")
        info = pred.info
        pred.close()
        probs = predict_images(be.run, info.preprocess, images["paths"], 64,
                               boxes=images["boxes"])
    finally:
        be.close()
    cols = [images["names"].index(a) for a in info.attributes]
    rep = balanced_accuracy(probs, images["labels"][:, cols], list(info.thresholds),
                            list(info.attributes))
    return 100.0 * rep["mean_balanced"], probs


def sqnr(float_pre: Path, int8: Path, images: np.ndarray, work: Path) -> dict[str, Any]:
    """Per-tensor SQNR (dB) of the INT8 file against its float graph, by qdq_loss_debug."""
    from onnxruntime.quantization import qdq_loss_debug as dbg

    aug_f, aug_q = work / "aug_float.onnx", work / "aug_int8.onnx"
    dbg.modify_model_output_intermediate_tensors(str(float_pre), str(aug_f))
    dbg.modify_model_output_intermediate_tensors(str(int8), str(aug_q))
    fa = dbg.collect_activations(str(aug_f), CalibrationReader(images),
                                 execution_providers=["CPUExecutionProvider"])
    qa = dbg.collect_activations(str(aug_q), CalibrationReader(images),
                                 execution_providers=["CPUExecutionProvider"])
    act = dbg.compute_activation_error(dbg.create_activation_matching(qa, fa))
    weights = dbg.compute_weight_error(dbg.create_weight_matching(str(float_pre), str(int8)))
    return {"activations": {k: {m: float(v) for m, v in d.items()} for k, d in act.items()},
            "weights": {k: float(v) for k, v in weights.items()}}


def ort_profile(path: Path, x: np.ndarray, work: Path) -> dict[str, float]:
    """Microseconds per call by operator type, from ONNX Runtime's own profiler."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(work / f"prof_{path.stem}")
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    for _ in range(PROFILE_CALLS):
        sess.run(None, {name: x})
    trace = json.loads(Path(sess.end_profiling()).read_text())
    per: dict[str, float] = defaultdict(float)
    for ev in trace:
        args = ev.get("args", {})
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            per[args.get("op_name", "?")] += ev["dur"] / PROFILE_CALLS
    return dict(sorted(per.items(), key=lambda kv: -kv[1]))


def ov_profile(path: Path, x: np.ndarray) -> dict[str, dict[str, Any]]:
    """Microseconds per call by OpenVINO node type and the kernels it ran (PERF_COUNT)."""
    compiled = compile_model(read_onnx(path), path=path, perf_count=True)
    req = compiled.create_infer_request()
    per: dict[str, dict[str, Any]] = {}
    totals: dict[str, float] = defaultdict(float)
    kernels: dict[str, set[str]] = defaultdict(set)
    for _ in range(PROFILE_CALLS):
        req.infer({0: x})
        for p in req.profiling_info:
            if p.real_time.total_seconds() > 0:
                totals[p.node_type] += p.real_time.total_seconds() * 1e6 / PROFILE_CALLS
                kernels[p.node_type].add(p.exec_type)
    for k, v in sorted(totals.items(), key=lambda kv: -kv[1]):
        per[k] = {"us": v, "kernels": sorted(kernels[k])}
    return per


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", type=Path, help="fp32 .onnx exports")
    ap.add_argument("--data", type=Path, required=True, help="dataset (train: calibration, "
                    "val: accuracy)")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=1,
                    help="measure every call kind this many times over (mean +- std of the "
                    "repeats' medians)")
    ap.add_argument("--calib-n", type=int, default=512)
    ap.add_argument("--variants", help="comma-separated subset of the variants (default: all)")
    ap.add_argument("--work", type=Path, help="where the variants are written (default: temp)")
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--md-out", type=Path)
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    runtimes = [r for r in RUNTIMES if r != "ov" or have_openvino()]
    tmp = tempfile.TemporaryDirectory(prefix="int8-small-")
    work = args.work or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split in ("val", "test"):
        paths, labels, names = split_images(args.data, split)
        splits[split] = {"paths": list(paths), "labels": labels, "names": list(names),
                         "boxes": getattr(paths, "boxes", None)}
    only = None if args.variants is None else set(args.variants.split(","))

    t0 = time.time()
    models: dict[str, dict[str, Any]] = {}
    files: dict[tuple[str, str], Path] = {}
    for src in args.models:
        pred = Predictor(src, backend="ort")
        arch, info = pred.info.arch.get("arch", src.stem), pred.info
        pred.close()
        calib = preprocess_images(info.preprocess, calibration_images(args.data, args.calib_n))
        pre = work / f"{arch}.pre.onnx"
        nodes = quantizable_nodes(src, save_to=pre)
        m: dict[str, Any] = {"file": str(src), "size": list(info.preprocess.size),
                             "nodes": [n for n, op in nodes if op in ("Conv", "Gemm")],
                             "variants": {}}
        files[(arch, "fp32")] = src
        for name, kw in variants(nodes).items():
            if only is not None and name not in only:
                continue
            dst = work / f"{arch}.{name}.onnx"
            print(f"{arch}: quantizing {name}", flush=True)
            rec = quantize_int8(src, dst, calib, method="entropy", **kw)
            files[(arch, name)] = dst
            m["variants"][name] = {"size_bytes": rec["size_bytes"], "options": kw}
        if (arch, "shipped") in files:
            print(f"{arch}: SQNR of the shipped variant (qdq_loss_debug)", flush=True)
            m["sqnr"] = sqnr(pre, files[(arch, "shipped")], calib[:64], work)
        m["calib"] = calib
        models[arch] = m
    quant_s = time.time() - t0

    acc: dict[tuple[str, str, str], dict[str, Any]] = {}
    for (arch, name), path in files.items():
        for rt in runtimes:
            print(f"{arch} {name}: accuracy through {rt}", flush=True)
            rec: dict[str, Any] = {}
            try:
                for split, images in splits.items():
                    a, probs = accuracy(path, rt, images)
                    key = "acc" if split == "val" else f"acc_{split}"
                    rec[key] = a
                    if split == "val":
                        if name == "fp32" and rt == "ort":
                            models[arch]["fp32_probs"] = probs
                        rec["max_prob_diff"] = float(np.abs(
                            probs - models[arch]["fp32_probs"]).max())
            except Exception as exc:  # noqa: BLE001 - a runtime that cannot load it is a result
                rec = {"error": str(exc).splitlines()[0]}
            acc[(arch, name, rt)] = rec

    labels_: list[str] = []
    calls: list[Callable[[], Any]] = []
    keep: list[Any] = []
    rng = np.random.default_rng(0)
    for (arch, name), path in files.items():
        h, w = models[arch]["size"]
        for rt in runtimes:
            if "error" in acc[(arch, name, rt)]:
                continue
            be = open_setting(path, RUNTIMES[rt])
            keep.append(be)
            for b in batches:
                x = rng.normal(size=(b, 3, h, w)).astype(np.float32)
                labels_.append(f"{arch}|{name}|{rt}|{b}")
                calls.append(lambda be=be, x=x: be.run(x))
    print(f"measuring {len(calls)} call kinds in shuffled blocks ...", flush=True)
    t1 = time.time()
    per_repeat: dict[str, list[float]] = defaultdict(list)
    for _ in range(args.repeats):
        times = tune_mod.measure_blocks(calls, args.seconds)
        for k, t in zip(labels_, times, strict=True):
            per_repeat[k].append(summarize(t)["median"])
    med = {k: float(np.mean(v)) for k, v in per_repeat.items()}
    spread = {k: float(np.std(v)) for k, v in per_repeat.items()}
    measure_s = time.time() - t1
    for be in keep:
        be.close()

    profiles: dict[str, Any] = {}
    bmax = max(batches)
    for arch, m in models.items():
        h, w = m["size"]
        x = rng.normal(size=(bmax, 3, h, w)).astype(np.float32)
        for name in ("fp32", "shipped", "symmetric"):
            if (arch, name) not in files:
                continue
            path = files[(arch, name)]
            profiles[f"{arch}|{name}|ort"] = ort_profile(path, x, work)
            if "ov" in runtimes:
                profiles[f"{arch}|{name}|ov"] = ov_profile(path, x)

    rows = []
    for (arch, name), _path in files.items():
        for rt in runtimes:
            a = acc[(arch, name, rt)]
            row: dict[str, Any] = {"model": arch, "variant": name, "runtime": rt, **a}
            if "error" not in a:
                base = acc[(arch, "fp32", "ort")]
                row["acc_delta"] = a["acc"] - base["acc"]
                row["acc_test_delta"] = a["acc_test"] - base["acc_test"]
                for b in batches:
                    ms = med[f"{arch}|{name}|{rt}|{b}"]
                    row[f"ms_b{b}"] = ms
                    row[f"ms_b{b}_std"] = spread[f"{arch}|{name}|{rt}|{b}"]
                    row[f"speedup_b{b}"] = med[f"{arch}|fp32|{rt}|{b}"] / ms
                    row[f"vs_best_fp32_b{b}"] = min(
                        med[f"{arch}|fp32|{r}|{b}"] for r in runtimes
                        if f"{arch}|fp32|{r}|{b}" in med) / ms
            rows.append(row)

    for m in models.values():
        m.pop("calib"), m.pop("fp32_probs", None)
    record = {
        "benchmark": "int8_small", "cpu": cpu_record(), "platform": platform.platform(),
        "batches": batches, "runtimes": runtimes, "calib_n": args.calib_n,
        "repeats": args.repeats,
        "images": {k: len(v["paths"]) for k, v in splits.items()}, "seconds": {"quantize": quant_s, "measure": measure_s},
        "models": models, "rows": rows, "profiles": profiles,
    }
    md = markdown(record)
    print(json.dumps(record, default=float))
    print(md)
    if args.json_out:
        write_results(record, md, args.json_out, args.md_out)
    tmp.cleanup()


def _f(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def markdown(rec: dict[str, Any]) -> str:
    cpu = rec["cpu"]
    lines = [f"# INT8 for small nets ({cpu.get('model', '?')}, {cpu.get('cores', '?')} cores, "
             f"int8 class {cpu.get('int8_class', '?')})",
             "", f"Images: {rec['images']}; calibration: {rec['calib_n']} training images "
             f"(entropy). Latency repeats: {rec['repeats']}. Accuracy: mean balanced at the fp32 file's thresholds (tuned on val, "
             "which favours fp32 there; test deltas are the final numbers). Latency: medians of back-to-back calls in blocks in one run; "
             "`speed-up` is over the fp32 file through the same runtime, `vs best fp32` over "
             "the faster runtime's fp32.", ""]
    bs = rec["batches"]
    head = ["model", "variant", "runtime", "val acc %", "val delta", "test acc %",
            "test delta", "max |dp|"]
    for b in bs:
        head += [f"b{b} ms", f"b{b} speed-up", f"b{b} vs best fp32"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rec["rows"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['variant']} | {r['runtime']} | "
                         f"cannot run: {r['error'][:80]} |" + " |" * (len(head) - 4))
            continue
        cells = [r["model"], r["variant"], r["runtime"], _f(r["acc"], ".2f"),
                 _f(r["acc_delta"], "+.2f"), _f(r["acc_test"], ".2f"),
                 _f(r["acc_test_delta"], "+.2f"), _f(r["max_prob_diff"], ".3f")]
        for b in bs:
            ms = _f(r[f"ms_b{b}"], ".3f")
            if rec["repeats"] > 1:
                ms += " +- " + _f(r[f"ms_b{b}_std"], ".3f")
            cells += [ms, _f(r[f"speedup_b{b}"], ".2f") + "x",
                      _f(r[f"vs_best_fp32_b{b}"], ".2f") + "x"]
        lines.append("| " + " | ".join(cells) + " |")
    for arch, m in rec["models"].items():
        if "sqnr" not in m:
            continue
        lines += ["", f"## {arch}: SQNR of the shipped INT8 (dB, qdq_loss_debug; higher is better)", "",
                  "| weight | SQNR |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in m["sqnr"]["weights"].items()]
        lines += ["", "| activation | SQNR vs float graph |", "|---|---|"]
        acts = [(k, d["xmodel_err"]) for k, d in m["sqnr"]["activations"].items()
                if d.get("xmodel_err") is not None]
        lines += [f"| {k} | {v:.1f} |" for k, v in sorted(acts, key=lambda kv: kv[1])]
    lines += ["", f"## Time per operator at batch {max(bs)} (us per call, runtimes' profilers)",
              ""]
    for key, per in rec["profiles"].items():
        if key.endswith("|ov"):
            parts = [f"{k} {v['us']:.0f} ({'/'.join(v['kernels'])})" for k, v in per.items()]
        else:
            parts = [f"{k} {v:.0f}" for k, v in per.items()]
        lines.append(f"- {key}: " + ", ".join(parts[:8]))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
