"""Human and machine outputs of a bench result: Markdown table, JSON, PNG plots.

matplotlib is optional (imported only for plots, with the Agg backend); without it asking for
a plot is a one-line error saying what to install.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from facedistill.bench.record import BenchResult, BenchRow
from facedistill.config import ARCHS
from facedistill.errors import UserError
from facedistill.io import atomic_path, atomic_write_text

ARCH_ORDER = ARCHS  # teacher first
PRECISION_ORDER = ("fp32", "bf16", "fp16", "int8")
INSTALL_MPL = "plots need matplotlib, which is not installed: pip install matplotlib"


def _order(arch: Any, model: str, precision: str = "", backend: str = "", mode: str = "",
           batch: int = 0, artifact: str = "") -> tuple[Any, ...]:
    arch_name = str(arch.get("arch", "")) if arch else ""
    model_rank = ARCH_ORDER.index(arch_name) if arch_name in ARCH_ORDER else len(ARCH_ORDER)
    prec_rank = (PRECISION_ORDER.index(precision) if precision in PRECISION_ORDER
                 else len(PRECISION_ORDER))
    return (model_rank, model, prec_rank, backend, mode, batch, artifact)


def sort_key(row: BenchRow) -> tuple[Any, ...]:
    """Model (teacher first, then the students in order), precision, backend, mode, batch."""
    return _order(row.arch, row.model, row.precision, row.backend, row.mode, row.batch,
                  row.artifact)


def fmt_ms(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    if v < 1:
        return f"{v:.3f}"
    if v < 10:
        return f"{v:.2f}"
    return f"{v:.1f}"


def fmt_count(v: int | None) -> str:
    if v is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.2f}{unit}"
    return str(v)


def fmt_bytes(v: int | None) -> str:
    if v is None:
        return "-"
    if v >= 1 << 20:
        return f"{v / (1 << 20):.2f} MiB"
    return f"{v / 1024:.0f} KiB"


def fmt_rate(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def _env_line(env: dict[str, Any], config: dict[str, Any]) -> str:
    parts = [env.get("cpu_model") or env.get("cpu_arch") or "unknown CPU"]
    cores = env.get("cores_available") or env.get("cores_logical")
    if cores:
        parts.append(f"{cores} cores available")
    used = env.get("threads_used") or {}
    if used:
        parts.append("threads " + ", ".join(f"{k} {v}" for k, v in used.items()))
    if env.get("gpu_name"):
        parts.append(f"GPU {env['gpu_name']}")
    versions = [f"{name} {env[key]}" for key, name in (
        ("onnxruntime", "ORT"), ("openvino", "OpenVINO"), ("tensorrt", "TensorRT"), ("cuda", "CUDA"), ("torch", "torch"),
        ("python", "Python"), ("numpy", "numpy")) if env.get(key)]
    parts.append(", ".join(versions))
    parts.append(env.get("os") or "")
    return "; ".join(p for p in parts if p)


#: a row's ``reasons`` key -> the table columns its "-" stands in (footnoted with the reason)
_DASH_NOTES = {"params": ("params",), "macs": ("MACs",), "gpu_compute_ms": ("GPU ms",),
               "power": ("mJ/img",), "accuracy": ("bal. acc. %", "delta pts"),
               "accuracy_delta": ("delta pts",), "x_floor": ("x floor",),
               "peak_pct": ("% peak",)}
RUNTIME_NAMES = {"ort": "ONNX Runtime", "ov": "OpenVINO"}


def floors_line(result: BenchResult) -> str | None:
    """The floors measured in the run, in one sentence (None when none were)."""
    parts = []
    for runtime, rec in result.floors.items():
        if not isinstance(rec, dict):
            continue
        ident = rec.get("identity_ms") or {}
        calls = ", ".join(f"{fmt_ms(ms)} ms at {key.replace(':b', ' batch ')}"
                          for key, ms in ident.items())
        peak = []
        if rec.get("fp32_gflops"):
            peak.append(f"fp32 {rec['fp32_gflops']:.0f} GFLOP/s")
        if rec.get("int8_gops"):
            peak.append(f"int8 {rec['int8_gops']:.0f} GOP/s")
        parts.append(f"{RUNTIME_NAMES.get(runtime, runtime)}: an empty graph costs {calls} per "
                     f"call; peak ({result.floors.get('gemm_n', '?')}-side matrix product) "
                     + ", ".join(peak))
    if not parts:
        return None
    return ("Floors, timed in the same rounds: " + "; ".join(parts) + ". 'x floor' is the "
            "median over the empty call of the same shape; '% peak' the share of the "
            "precision's peak the model's FLOPs (2 per MAC) reach.")


def markdown_table(result: BenchResult) -> str:
    """The result as a Markdown table (sorted by model and precision) with a header line."""
    rows = sorted(result.rows, key=sort_key)
    env = result.environment
    config = result.config
    has_gpu = any(r.gpu_compute_ms for r in rows)
    has_acc = any(r.accuracy for r in rows)
    has_power = any(r.power for r in rows)
    has_mode = any(r.mode not in ("default", "autocast", None) for r in rows)

    rounds = config.get("rounds")
    how = (f"{rounds} interleaved rounds" if rounds is not None else "interleaved rounds")
    lines = [f"Environment: {_env_line(env, config)}.", ""]
    measured = (f"Latency: {how} after {config.get('warmup', '?')} warm-up run(s) per artifact "
                "x batch; random normalised input (seeded); milliseconds per batch.")
    if has_acc:
        first = next(r.accuracy for r in rows if r.accuracy)
        measured += (f" Accuracy: mean balanced accuracy on the {first.split} split "
                     f"({first.n_images} images) at the stored thresholds; delta in "
                     "points to the fp32 variant of the same model.")
    jet = env.get("jetson")
    if jet:
        mode = jet.get("power_mode") or {}
        measured += (f" Jetson {jet.get('model')}, L4T {jet.get('l4t')}, JetPack "
                     f"{jet.get('jetpack')}, power mode {mode.get('name') or mode.get('id')}, "
                     f"clocks locked: {jet.get('clocks_locked')}.")
    lines += [measured, ""]
    floor_text = floors_line(result)
    if floor_text:
        lines += [floor_text, ""]
    has_floor = any(r.x_floor is not None for r in rows)
    has_peak = any(r.peak_pct is not None for r in rows)

    cols = ["model", "precision", "backend"]
    if has_mode:
        cols.append("mode")
    cols += ["batch", "median ms", "p90 ms", "p99 ms", "ms/img", "img/s"]
    if has_gpu:
        cols.append("GPU ms")
    if has_power:
        cols.append("mJ/img")
    if has_floor:
        cols.append("x floor")
    if has_peak:
        cols.append("% peak")
    cols += ["params", "MACs", "size"]
    if has_acc:
        cols += ["bal. acc. %", "delta pts"]
    cols.append("file")
    right = {c for c in cols if c not in ("model", "precision", "backend", "mode", "file")}
    marks: dict[tuple[str, str], int] = {}  # (column, reason) -> footnote number
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "|".join("---:" if c in right else "---" for c in cols) + "|")
    for r in rows:
        lat = r.latency_ms
        cells = {
            "model": r.model, "precision": r.precision, "backend": r.backend,
            "mode": r.mode, "batch": str(r.batch),
            "median ms": fmt_ms(lat.median), "p90 ms": fmt_ms(lat.p90),
            "p99 ms": fmt_ms(lat.p99), "ms/img": fmt_ms(r.per_image_ms),
            "img/s": fmt_rate(r.throughput_ips),
            "GPU ms": fmt_ms(r.gpu_compute_ms.median if r.gpu_compute_ms else None),
            "mJ/img": ("-" if not r.power else f"{r.power.energy_mj_per_image:.2f}"),
            "params": fmt_count(r.params), "MACs": fmt_count(r.macs),
            "size": fmt_bytes(r.file_bytes),
            "x floor": "-" if r.x_floor is None else f"{r.x_floor:.1f}",
            "% peak": "-" if r.peak_pct is None else f"{r.peak_pct:.0f}",
            "file": Path(r.artifact).name,
        }
        acc = r.accuracy
        if acc:
            cells["bal. acc. %"] = f"{100 * acc.mean_balanced:.2f}"
            d = acc.delta_to_fp32
            if d is None:
                cells["delta pts"] = "-"
            elif acc.reference == r.artifact and r.precision == "fp32":
                cells["delta pts"] = "ref"
            else:
                cells["delta pts"] = f"{100 * d:+.2f}"
        else:
            cells["bal. acc. %"] = cells["delta pts"] = "-"
        for key, reason in r.reasons.items():
            for col in _DASH_NOTES.get(key, ()):
                if col in cols and cells[col] == "-":
                    marks.setdefault((col, reason), len(marks) + 1)
                    cells[col] = f"-[{marks[(col, reason)]}]"
        lines.append("| " + " | ".join(cells[c] for c in cols) + " |")
    if marks:
        lines.append("")
        lines += [f"[{n}] {col} '-': {reason}." for (col, reason), n in marks.items()]
    lines += speedup_table(result)
    lines += tuning_table(result)
    if result.skipped:
        lines.append("")
        for s in result.skipped:
            lines.append(f"Skipped {Path(s.artifact).name} {s.precision} batch "
                         f"{s.batch}: {s.reason}.")
    return "\n".join(lines) + "\n"


def tuning_table(result: BenchResult) -> list[str]:
    """With ``--tune``: per file and batch size the settings chosen (shared machine: no
    spinning; dedicated: fastest of all) against ONNX Runtime's and OpenVINO's defaults."""
    if not result.tuning:
        return []
    lines = ["", "Tuned settings (written beside each file as <file>.tune.json; blocks of "
             "back-to-back calls, medians; 'vs defaults' is the faster default over the "
             "shared choice):", "",
             "| file | batch | shared machine | ms | dedicated machine | ms | ORT defaults ms "
             "| OpenVINO defaults ms | vs defaults |",
             "|---|---:|---|---:|---|---:|---:|---:|---:|"]
    for t in result.tuning:
        lines.append(
            f"| {t['onnx']} | {t['batch']} | {t['shared']} | {fmt_ms(t['shared_ms'])} | "
            f"{t['dedicated']} | {fmt_ms(t['dedicated_ms'])} | {fmt_ms(t['ort_defaults_ms'])} "
            f"| {fmt_ms(t['ov_defaults_ms'])} | {t['shared_vs_best_default']:.2f}x |")
    return lines


def speedups(result: BenchResult) -> list[dict[str, Any]]:
    """Median-latency ratios per model, backend and batch size: every other precision against
    the model's fp32, the model's fp32 against the largest model's fp32 (by params), and,
    where the fp32 variant was also replayed as a CUDA graph, the graph against plain fp32."""
    graph_ms = {(r.model, r.backend, r.batch): r.latency_ms.median
                for r in result.rows if r.mode == "cuda_graph" and r.precision == "fp32"}
    rows = [r for r in result.rows if r.mode in ("default", "autocast")]
    med = {(r.model, r.backend, r.batch, r.precision): r.latency_ms.median for r in rows}
    params = {r.model: r.params or 0 for r in rows}
    out = []
    arch = {r.model: r.arch for r in reversed(rows)}  # each model's first row's arch
    groups = sorted({(r.model, r.backend, r.batch) for r in rows},
                    key=lambda g: _order(arch[g[0]], g[0], backend=g[1], batch=g[2]))
    for model, backend, batch in groups:
        base = med.get((model, backend, batch, "fp32"))
        if base is None:
            continue
        others = {p: med[(model, backend, batch, p)] for p in PRECISION_ORDER[1:]
                  if (model, backend, batch, p) in med}
        peers = [m for m in params if (m, backend, batch, "fp32") in med]
        ref = max(peers, key=lambda m: params[m]) if peers else model
        ref_ms = med[(ref, backend, batch, "fp32")]
        graph = graph_ms.get((model, backend, batch))
        out.append({"model": model, "backend": backend, "batch": batch, "fp32_ms": base,
                    "precisions": {p: {"ms": v, "speedup": base / v if v > 0 else None}
                                   for p, v in others.items()},
                    "cuda_graph": None if graph is None else {
                        "ms": graph, "speedup": base / graph if graph > 0 else None},
                    "reference": ref, "speedup_vs_reference": ref_ms / base if base > 0
                    else None})
    return out


def speedup_table(result: BenchResult) -> list[str]:
    """Markdown lines of :func:`speedups` (none when there is nothing to compare)."""
    items = speedups(result)
    precs = [p for p in PRECISION_ORDER[1:] if any(p in i["precisions"] for i in items)]
    refs = {i["reference"] for i in items}
    graphs = any(i["cuda_graph"] is not None for i in items)
    if not items or (not precs and not graphs
                     and all(i["model"] == i["reference"] for i in items)):
        return []
    ref_name = next(iter(refs)) if len(refs) == 1 else "largest"
    cols = ["model", "backend", "batch", "fp32 ms"]
    for p in precs:
        cols += [f"{p} ms", f"{p} speed-up"]
    if graphs:
        cols += ["fp32 CUDA graph ms", "graph speed-up"]
    versus = any(i["model"] != i["reference"] for i in items)
    if versus:
        cols.append(f"fp32 speed-up vs {ref_name} fp32")

    def x(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}x"

    lines = ["", "Speed-ups (ratios of median latencies, same backend and batch size):", "",
             "| " + " | ".join(cols) + " |",
             "|" + "|".join("---" if c in ("model", "backend") else "---:" for c in cols) + "|"]
    for i in items:
        cells = [i["model"], i["backend"], str(i["batch"]), fmt_ms(i["fp32_ms"])]
        for p in precs:
            got = i["precisions"].get(p)
            cells += ["-", "-"] if got is None else [fmt_ms(got["ms"]), x(got["speedup"])]
        if graphs:
            g = i["cuda_graph"]
            cells += ["-", "-"] if g is None else [fmt_ms(g["ms"]), x(g["speedup"])]
        if versus:
            cells.append(x(i["speedup_vs_reference"]))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _json_safe(obj.item())
    return obj


def to_json(result: BenchResult) -> str:
    """``bench.json``'s text: :meth:`BenchResult.to_json` as strict JSON (non-finite numbers
    become null)."""
    return json.dumps(_json_safe(result.to_json()), indent=2, allow_nan=False) + "\n"


def have_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _log_axis(axis: Any, values: list[float], fmt: Any) -> None:
    """A log axis with 1-2-5 ticks, padded so even a narrow range shows some, labelled by
    ``fmt`` (no scientific notation)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    good = [v for v in values if v and v > 0 and math.isfinite(v)]
    if good:
        lo, hi = min(good), max(good)
        setter = axis.axes.set_xlim if axis.axis_name == "x" else axis.axes.set_ylim
        setter(lo / 1.6, hi * 1.6)
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt(v)))
    axis.set_minor_formatter(NullFormatter())


def _short(v: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if v >= scale:
            return f"{v / scale:g}{unit}"
    return f"{v:g}"


def plot_png(result: BenchResult) -> bytes:
    """Three panels as PNG bytes: latency vs params, accuracy vs latency, throughput by batch."""
    if not have_matplotlib():
        raise UserError(INSTALL_MPL)
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    rows = sorted(result.rows, key=sort_key)
    if not rows:
        raise UserError("nothing to plot: the result has no rows")
    b_min = min(r.batch for r in rows)
    batches = sorted({r.batch for r in rows})

    def series(r: BenchRow) -> str:
        mode = "" if r.mode in ("default", "autocast") else f" {r.mode}"
        return f"{r.model} {r.precision} {r.backend}{mode}"

    colors = {"fp32": "tab:blue", "bf16": "tab:purple", "fp16": "tab:green", "int8": "tab:red"}
    markers = {"ort-cpu": "o", "ort-cuda": "s", "ort-trt": "P", "torch-cpu": "^", "torch-cuda": "v", "trt": "D"}

    fig = Figure(figsize=(17, 5.2), dpi=110)
    ax1, ax2, ax3 = fig.subplots(1, 3)

    first = [r for r in rows if r.batch == b_min]
    for r in first:
        if r.params:
            ax1.scatter(r.params, r.latency_ms.median,
                        c=colors.get(r.precision, "tab:gray"),
                        marker=markers.get(r.backend, "o"), s=50)
            ax1.annotate(f"{r.model} {r.precision}",
                         (r.params, r.latency_ms.median), fontsize=7,
                         xytext=(4, 3), textcoords="offset points")
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    _log_axis(ax1.xaxis, [r.params for r in first if r.params], _short)
    _log_axis(ax1.yaxis, [r.latency_ms.median for r in first if r.params],
              lambda v: f"{v:g}")
    ax1.set_xlabel("parameters")
    ax1.set_ylabel(f"median latency, batch {b_min} (ms)")
    ax1.set_title("latency vs parameters")
    ax1.grid(True, which="both", alpha=0.3)

    with_acc = [(r, r.accuracy) for r in first if r.accuracy]
    for r, acc in with_acc:
        ax2.scatter(r.latency_ms.median, 100 * acc.mean_balanced,
                    c=colors.get(r.precision, "tab:gray"),
                    marker=markers.get(r.backend, "o"), s=50)
        ax2.annotate(f"{r.model} {r.precision}",
                     (r.latency_ms.median, 100 * acc.mean_balanced),
                     fontsize=7, xytext=(4, 3), textcoords="offset points")
    if with_acc:
        ax2.set_xscale("log")
        _log_axis(ax2.xaxis, [r.latency_ms.median for r, _ in with_acc], lambda v: f"{v:g}")
        ax2.set_title("accuracy vs latency")
    else:
        ax2.text(0.5, 0.5, "no accuracy measured\n(bench with --data)", ha="center",
                 va="center", transform=ax2.transAxes)
        ax2.set_title("accuracy vs latency")
    ax2.set_xlabel(f"median latency, batch {b_min} (ms)")
    ax2.set_ylabel("mean balanced accuracy (%)")
    ax2.grid(True, which="both", alpha=0.3)

    names = []
    for r in rows:
        if series(r) not in names:
            names.append(series(r))
    width = 0.8 / max(len(batches), 1)
    for bi, b in enumerate(batches):
        xs, ys = [], []
        for ni, name in enumerate(names):
            hit = next((r for r in rows if series(r) == name and r.batch == b), None)
            if hit is not None and math.isfinite(hit.throughput_ips):
                xs.append(ni + (bi - (len(batches) - 1) / 2) * width)
                ys.append(hit.throughput_ips)
        ax3.bar(xs, ys, width=width, label=f"batch {b}")
    ax3.set_xticks(range(len(names)))
    ax3.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax3.set_yscale("log")
    _log_axis(ax3.yaxis, [r.throughput_ips for r in rows], _short)
    ax3.set_ylabel("throughput (images/s)")
    ax3.set_title("throughput per batch size")
    ax3.legend(fontsize=8)
    ax3.grid(True, axis="y", which="both", alpha=0.3)

    handles = [ax1.scatter([], [], c=c, marker="o", label=p) for p, c in colors.items()
               if any(r.precision == p for r in rows)]
    handles += [ax1.scatter([], [], c="black", marker=m, label=b) for b, m in markers.items()
                if any(r.backend == b for r in rows)]
    ax1.legend(handles=handles, fontsize=7, loc="upper left")
    env = result.environment
    fig.suptitle(f"facedistill bench - {env.get('cpu_model') or ''} "
                 f"{'/ ' + env['gpu_name'] if env.get('gpu_name') else ''}", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_outputs(
    result: BenchResult,
    *,
    json_path: str | os.PathLike[str] | None = None,
    md_path: str | os.PathLike[str] | None = None,
    plot_path: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """Write the asked-for outputs atomically; returns the paths written. The plot is drawn
    first, so a missing matplotlib leaves no half set of files behind."""
    png = plot_png(result) if plot_path is not None else None
    written = []
    if json_path is not None:
        written.append(atomic_write_text(json_path, to_json(result)))
    if md_path is not None:
        written.append(atomic_write_text(md_path, markdown_table(result)))
    if png is not None and plot_path is not None:
        with atomic_path(plot_path) as tmp:
            tmp.write_bytes(png)
        written.append(Path(plot_path))
    return written
