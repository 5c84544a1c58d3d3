"""The pipeline's one report: ``report.md``, a self-contained ``report.html`` and ``report.json``.

Contents, top first: the verdict (the file to ship on the benchmarked machine, by a rule the
page states), the run (date, version, config, stage wall times), the accuracy-vs-latency and
accuracy-vs-params plot with the verdict marked, the models table (params, MACs, compression,
mean balanced accuracy on test, latency and file size per precision, why a variant is missing),
a legend of its units and terms, the distillation, ensemble and cascade tables, what to ship
per model, the per-attribute accuracy (folded), the selection and bench plots and the
environment as a table. Built only from what the stages wrote (checkpoints' arch records,
eval/compare JSON, export reports, bench JSON, the pipeline state).
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facedistill.config import EXPORT_PRECISIONS
from facedistill.io import atomic_path, atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from facedistill.bench.record import BenchResult, BenchRow


def _read_json(path: str | os.PathLike[str] | None) -> Any:
    if not path or not Path(path).is_file():
        return None
    return json.loads(Path(path).read_text())


def _read_bench(path: str | os.PathLike[str] | None) -> BenchResult | None:
    """The bench stage's ``bench.json`` (None when there is none); a corrupt one, or one of
    another format, is a one-line error naming it."""
    if not path or not Path(path).is_file():
        return None
    from facedistill.bench.record import read_bench

    return read_bench(path)


def _bench_rows(bench: BenchResult | None) -> tuple[BenchRow, ...]:
    return bench.rows if bench else ()


#: how the report names a CPU runtime of the bench
RUNTIME_NAMES = {"ort-cpu": "ONNX Runtime", "ov-cpu": "OpenVINO"}


def _timing(rows: Sequence[BenchRow], path: str, batch: int, max_drop: float = 1.0
            ) -> tuple[float, float, str] | None:
    """(median, p90, backend) of one artifact at one batch size in the bench rows: the fastest
    of the runtimes that timed it. A runtime other than ONNX Runtime (which the export gate
    scored) competes only when the bench scored its accuracy too, within ``max_drop`` points of
    ONNX Runtime's on the same file."""
    target = Path(path).resolve()
    mine = [r for r in rows if Path(r.artifact).resolve() == target and r.batch == batch
            and math.isfinite(float(r.latency_ms.median)) and math.isfinite(
                float(r.latency_ms.p90))]
    ort = next((r for r in mine if r.backend == "ort-cpu"), None)

    def passes(r: BenchRow) -> bool:
        if r.backend == "ort-cpu" or r.backend not in RUNTIME_NAMES:
            return True
        if ort is None or ort.accuracy is None or r.accuracy is None:
            return ort is None and r.accuracy is not None  # the one runtime scored
        return ort.accuracy.mean_balanced - r.accuracy.mean_balanced <= max_drop / 100

    options = [r for r in mine if passes(r)]
    if not options:
        return None
    best = min(options, key=lambda r: float(r.latency_ms.median))
    return float(best.latency_ms.median), float(best.latency_ms.p90), best.backend


def _batches(bench: BenchResult | None) -> list[int]:
    """The smallest and largest batch size the bench ran (what the main table shows)."""
    sizes = sorted({r.batch for r in _bench_rows(bench)})
    return sorted({sizes[0], sizes[-1]}) if sizes else []


def model_rows(pipeline: Any, upstream: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per model (teacher first) with every number of the report's main table."""
    from facedistill.nn.checkpoint import load_checkpoint
    from facedistill.nn.models import (
        build_model,
        count_live_params,
        count_macs,
        count_params,
    )

    bench = _read_bench(upstream.get("bench", {}).get("json"))
    rows_b = _bench_rows(bench)
    batches = _batches(bench)
    max_drop = float(pipeline.cfg.export.max_drop)
    rows = []
    for model in pipeline.models:
        src = upstream[pipeline.source_stage(model)]
        ckpt = load_checkpoint(src["checkpoint"])
        net = build_model(**ckpt["arch"])
        size = int(ckpt["preprocess"]["size"][0])
        export = pipeline.state["stages"].get(f"export:{model}", {}).get("outputs", {})
        variants = export.get("variants", {})
        row: dict[str, Any] = {
            "model": model, "arch": ckpt["arch"]["arch"], "width": ckpt["arch"]["width"],
            "params": count_params(net), "live_params": count_live_params(net, size),
            "macs": count_macs(net, size), "input_size": size,
            "mean_balanced": src["mean_balanced"], "checkpoint": src["checkpoint"],
        }
        gate = export.get("gate") or {}
        for prec in EXPORT_PRECISIONS:
            path = variants.get(prec)
            row[f"{prec}_onnx"] = path
            row[f"{prec}_bytes"] = Path(path).stat().st_size if path and Path(path).exists() \
                else None
            row[f"{prec}_missing"] = None if path else _why_missing(prec, export, gate)
            for batch in batches:
                timing = _timing(rows_b, path, batch, max_drop) if path else None
                row[f"{prec}_ms_b{batch}"] = None if timing is None else timing[0]
                row[f"{prec}_p90_b{batch}"] = None if timing is None else timing[1]
                row[f"{prec}_backend_b{batch}"] = None if timing is None else timing[2]
        row["fastest"] = fastest_variants(row, batches)
        row["ship"] = ship_variants(row, batches)
        rows.append(row)
    teacher = rows[0]
    for r in rows:
        r["compression"] = teacher["params"] / r["params"]
        r["live_compression"] = teacher["live_params"] / r["live_params"]
        r["delta"] = r["mean_balanced"] - teacher["mean_balanced"]
    return rows


def _why_missing(precision: str, export: Mapping[str, Any], gate: Mapping[str, Any]) -> str:
    """Why a model has no ``precision`` file: the accuracy gate's verdict, or not exported."""
    result = (gate.get("results") or {}).get(precision) or {}
    if result and not result.get("passed", True):
        return (f"rejected: -{result['drop_points']:.2f} pt on val, more than the gate's "
                f"{gate.get('max_drop_points', 1.0):g}")
    return "not exported (export precision)" if export else "not exported"


#: the rule that picks a model's file to ship, as the report states it
SHIP_RULE = ("A file's latency is that of the faster CPU runtime the bench timed it with "
             "(ONNX Runtime, or OpenVINO where its accuracy on the same file is within max_drop). "
             "Among a model's exported files (INT8 only where it passed the accuracy gate), the "
             "lowest median latency wins; files whose medians are within the measured noise of "
             "it (the larger of the two files' p90 - median spreads) tie, and the smallest file "
             "among the tied wins.")
#: and the rule that picks one file among the models
VERDICT_RULE = ("The verdict is the fastest shipped file at the smallest batch size among the "
                "models whose test accuracy is within the export gate's max_drop of the most "
                "accurate model's (ties by noise broken by size, as above).")


def _pick(options: Sequence[tuple[str, float, float, int | None]]
          ) -> tuple[str, list[str]] | None:
    """``options`` = (name, median ms, p90 ms, bytes): the winner by :data:`SHIP_RULE` and
    the names tied with the fastest (winner included, when there is a tie)."""
    if not options:
        return None
    best = min(options, key=lambda o: o[1])
    tied = [o for o in options
            if o[1] - best[1] <= max(o[2] - o[1], best[2] - best[1], 0.0)]
    winner = min(tied, key=lambda o: (o[3] if o[3] is not None else math.inf, o[1]))
    return winner[0], [o[0] for o in tied] if len(tied) > 1 else []


def ship_variants(row: Mapping[str, Any], batches: Sequence[int]) -> dict[str, dict[str, Any]]:
    """Per batch size (as a string key): ``{"precision", "tied"}`` by :data:`SHIP_RULE`."""
    out = {}
    for b in batches:
        options = [(p, row[f"{p}_ms_b{b}"], row[f"{p}_p90_b{b}"], row.get(f"{p}_bytes"))
                   for p in EXPORT_PRECISIONS if row.get(f"{p}_ms_b{b}") is not None]
        picked = _pick(options)
        if picked:
            out[str(b)] = {"precision": picked[0], "tied": picked[1]}
    return out


def verdict(rows: Sequence[Mapping[str, Any]], batches: Sequence[int], max_drop: float
            ) -> dict[str, Any] | None:
    """The one file to ship (:data:`VERDICT_RULE`): ``{"model", "precision", "path", "bytes",
    "mean_balanced", "delta", "ms": {batch: ms}, "tied": [...]}``, or None without a bench."""
    if not batches or not rows:
        return None
    b = str(batches[0])
    best = max(r["mean_balanced"] for r in rows)
    options = []
    for r in rows:
        choice = r["ship"].get(b)
        if choice is None or r["mean_balanced"] < best - max_drop / 100:
            continue
        p = choice["precision"]
        options.append((f"{r['model']}:{p}", r[f"{p}_ms_b{b}"], r[f"{p}_p90_b{b}"],
                        r[f"{p}_bytes"]))
    picked = _pick(options)
    if picked is None:
        return None
    model, precision = picked[0].rsplit(":", 1)
    row = next(r for r in rows if r["model"] == model)
    return {"model": model, "arch": row["arch"], "precision": precision,
            "path": row[f"{precision}_onnx"], "bytes": row[f"{precision}_bytes"],
            "mean_balanced": row["mean_balanced"], "delta": row["delta"],
            "ms": {str(x): row[f"{precision}_ms_b{x}"] for x in batches},
            "runtime": {str(x): row.get(f"{precision}_backend_b{x}") for x in batches},
            "tied": picked[1], "max_drop": max_drop}


def fastest_variants(row: Mapping[str, Any], batches: Sequence[int]) -> dict[str, str]:
    """Per batch size (as a string key), the exported precision with the lowest measured
    median latency: what to ship on the benchmarked machine. Only variants that were exported
    (INT8 only when it passed the accuracy gate) and benchmarked compete."""
    out = {}
    for b in batches:
        ms = {p: row[f"{p}_ms_b{b}"] for p in EXPORT_PRECISIONS
              if row.get(f"{p}_ms_b{b}") is not None}
        if ms:
            out[str(b)] = min(ms, key=ms.__getitem__)
    return out


def _ship_lines(rows: Sequence[Mapping[str, Any]], batches: Sequence[int]) -> list[str]:
    """One Markdown bullet per model: the file to ship per batch size (:data:`SHIP_RULE`),
    the others' latency, ties, and why a precision is missing."""
    lines = []
    for r in rows:
        parts = []
        for b in batches:
            choice = r["ship"].get(str(b))
            if choice is None:
                continue
            best = choice["precision"]
            others = [f"{p} {_ms(r[f'{p}_ms_b{b}'])}" for p in EXPORT_PRECISIONS
                      if p != best and r.get(f"{p}_ms_b{b}") is not None]
            tie = f", a tie with {' and '.join(t for t in choice['tied'] if t != best)} " \
                  "within noise, the smaller file" if choice["tied"] else ""
            runtime = r.get(f"{best}_backend_b{b}")
            via = f" through {RUNTIME_NAMES[runtime]}" if runtime in RUNTIME_NAMES and \
                runtime != "ort-cpu" else ""
            parts.append(f"**{best}**{via} at batch {b} ({_ms(r[f'{best}_ms_b{b}'])} ms"
                         + (f"; {', '.join(others)}" if others else "") + tie + ")")
        missing = [f"{p} {r[f'{p}_missing']}" for p in EXPORT_PRECISIONS
                   if r.get(f"{p}_missing") and r[f"{p}_missing"].startswith("rejected")]
        if parts:
            lines.append(f"- {r['model']}: " + ", ".join(parts)
                         + (f"; {'; '.join(missing)}" if missing else ""))
    return lines


def _verdict_lines(v: Mapping[str, Any] | None, env: Mapping[str, Any], backend: str
                   ) -> list[str]:
    if v is None:
        return ["No verdict: the bench stage measured no exported file."]
    runtimes = v.get("runtime") or {}
    first = runtimes.get(next(iter(v["ms"]), ""), None)

    def through(b: str) -> str:
        r = runtimes.get(b)
        return f" ({RUNTIME_NAMES.get(r, r)})" if r and r != first else ""

    ms = ", ".join(f"{_ms(t)} ms at batch {b}{through(b)}" for b, t in v["ms"].items())
    me = f"{v['model']}:{v['precision']}"
    others = ", ".join(t for t in v["tied"] if t != me)
    tie = (f" It ties within the measured noise with {others}; the smaller file wins."
           if v["tied"] else "")
    target = f"{env.get('cpu_model') or 'this CPU'} ({env.get('cpu_int8_class') or '?'}), " \
             f"{RUNTIME_NAMES.get(first, first) if first else backend}"
    what = v["model"] if v["model"] == v["arch"] else f"{v['model']}, {v['arch']}"
    return [f"**Ship `{v['path']}`** ({what}, {v['precision']}) on "
            f"{target}: {_mb(v['bytes'])} MB, {ms}, {_pct(v['mean_balanced'])} mean balanced "
            f"accuracy on test ({100 * v['delta']:+.2f} points against the teacher).{tie}",
            "", f"Rule: {VERDICT_RULE} (max_drop = {v['max_drop']:g} here.) {SHIP_RULE}"]


def _tuned_lines(v: Mapping[str, Any] | None, bench: BenchResult | None) -> list[str]:
    """How to run the verdict's file, when the bench tuned it (``[bench] tune = true``)."""
    if v is None or bench is None or not bench.tuning:
        return []
    name = Path(str(v["path"])).name
    hits = sorted((t for t in bench.tuning if t.get("onnx") == name), key=lambda t: t["batch"])
    if not hits:
        return []
    parts = [f"at batch {t['batch']} {t['shared']} ({_ms(t['shared_ms'])} ms, "
             f"{t['shared_vs_best_default']:.2f}x the faster of ONNX Runtime's and OpenVINO's "
             "defaults)" for t in hits]
    dedicated = [f"batch {t['batch']} {t['dedicated']} ({_ms(t['dedicated_ms'])} ms)"
                 for t in hits if t["dedicated"] != t["shared"]]
    text = ("Run it with the settings tuned here (`" + name + ".tune.json` beside it, which "
            "`predict` and `Predictor` use): " + "; ".join(parts) + ".")
    if dedicated:
        text += (" On a machine that runs nothing else (`Predictor(..., spin=True)`): "
                 + "; ".join(dedicated) + ".")
    return ["", text]


def _per_attribute(upstream: Mapping[str, Mapping[str, Any]], students: Sequence[str]
                   ) -> tuple[str | None, list[dict[str, Any]]]:
    """Teacher vs the last (smallest) student, per attribute, on the test split."""
    teacher = _read_json(upstream["teacher"].get("eval"))
    if not students or teacher is None:
        return None, []
    name = students[-1]
    compare = _read_json(upstream[f"student:{name}"].get("compare"))
    student = compare["rows"][0]["per_attribute"] if compare else {}
    out = []
    for a in teacher["attributes"]:
        s = student.get(a["name"])
        out.append({"attribute": a["name"], "teacher": a["balanced"], "student": s,
                    "delta": None if s is None or a["balanced"] is None else s - a["balanced"]})
    return name, out


def twin_rows(pipeline: Any, upstream: Mapping[str, Mapping[str, Any]]
              ) -> list[dict[str, Any]]:
    """Per student with a label-only twin: both test scores and the gain of distillation."""
    rows = []
    for name in pipeline.twins:
        twin = upstream.get(f"twin:{name}")
        if not twin:
            continue
        student = upstream[f"student:{name}"]
        compare = _read_json(student.get("compare")) or {}
        rows.append({"student": name, "method": compare.get("method"),
                     "distilled": student["mean_balanced"], "labels": twin["mean_balanced"],
                     "gain": student["mean_balanced"] - twin["mean_balanced"]})
    return rows


def ensemble_rows(pipeline: Any, upstream: Mapping[str, Mapping[str, Any]],
                  models: Sequence[Mapping[str, Any]] = (), batches: Sequence[int] = ()
                  ) -> list[dict[str, Any]]:
    """Per student distilled from an ensemble: the student against the ensemble (mean logits,
    summed params, and the latency of running every member one after the other, fp32 ONNX) and
    against the best single teacher, from its compare.json and the main table's ``models``."""
    by_name = {m["model"]: m for m in models}
    members = [by_name.get(t) for t in pipeline.teachers]
    rows = []
    for name in pipeline.students:
        compare = _read_json(upstream[f"student:{name}"].get("compare")) or {}
        best = compare.get("best_teacher")
        if not best:
            continue
        student, ensemble = compare["rows"][0], compare["rows"][-1]
        row = {"student": name, "accuracy": student["mean_balanced"],
               "ensemble": ensemble["mean_balanced"], "members": len(compare["rows"]) - 2,
               "ensemble_params": ensemble["params"],
               "compression": student["compression"], "delta": student["delta"],
               "best_teacher": best}
        mine = by_name.get(name, {})
        for b in batches:
            key = f"fp32_ms_b{b}"
            ms = [m.get(key) if m else None for m in members]
            total = None if None in ms or not ms else sum(ms)
            row[f"ensemble_{key}"] = total
            row[f"speedup_b{b}"] = total / mine[key] if total and mine.get(key) else None
        rows.append(row)
    return rows


def cascade_rows(pipeline: Any, upstream: Mapping[str, Mapping[str, Any]]
                 ) -> list[dict[str, Any]]:
    """Per cascade (``name``): its subnets' test scores (``whole``, ``parts``), the switched
    (``switch``) and the final ones (``cascade``), from its cascade.json."""
    rows = []
    for name in pipeline.cascades:
        rec = _read_json(upstream[pipeline.source_stage(name)].get("record"))
        if rec:
            rows.append({"name": name, **rec["mean_balanced"], "params": rec["params"],
                         "parts_chosen": rec["parts_chosen"],
                         "attributes": len(rec["use_part"])})
    return rows


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def _mb(v: int | None) -> str:
    return "n/a" if v is None else f"{v / 1e6:.2f}"


def _missing(r: Mapping[str, Any], precision: str, value: str) -> str:
    """A cell of a variant: its value, or why the variant is missing (short)."""
    why = r.get(f"{precision}_missing")
    if why and why.startswith("rejected"):
        return "rejected (" + why.split(" on val")[0].removeprefix("rejected: ") + ")"
    return value if not why else "not exported"


def main_table(rows: Sequence[Mapping[str, Any]], batches: Sequence[int]) -> list[list[str]]:
    lat = [(p, b) for b in batches for p in ("fp32", "int8")]
    head = ["model", "params", "live params", f"MACs ({rows[0]['input_size']} px)" if rows
            else "MACs", "compression", "live compression", "mean bal. acc (test)",
            "delta (test)", *(f"{p} ms (b{b})" for p, b in lat), "fp32 MB", "int8 MB"]
    body = [[f"{r['model']} ({r['arch']} x{r['width']:g})", f"{r['params']:,}",
             f"{r['live_params']:,}", f"{r['macs'] / 1e6:.1f}M", f"{r['compression']:.1f}x",
             f"{r['live_compression']:.1f}x", _pct(r["mean_balanced"]),
             f"{100 * r['delta']:+.2f}",
             *(_missing(r, p, _ms(r.get(f"{p}_ms_b{b}"))) for p, b in lat),
             _mb(r["fp32_bytes"]), _missing(r, "int8", _mb(r["int8_bytes"]))] for r in rows]
    return [head, *body]


#: the report's units and terms, as its legend prints them
LEGEND = (
    ("params", "parameters of the deployed model (live params: those that can get a gradient "
               "at its input size; a 3x3 kernel on a 1x1 map keeps its centre tap alone)"),
    ("MACs", "multiply-accumulates of one image at the model's input size"),
    ("compression", "the teacher's params over the model's"),
    ("mean bal. acc", "mean over the 40 attributes of (TPR + TNR) / 2 on the test split, each "
                      "attribute at its threshold searched on val"),
    ("delta", "the model's mean balanced accuracy minus the teacher's, in points, test split"),
    ("ms (bN)", "median wall time of one call at batch size N (ONNX Runtime, this machine)"),
    ("MB", "file size in 10^6 bytes"),
    ("rejected", "INT8 lost more than the export gate allows on the val split (the drop in "
                 "points)"),
)


def _md_table(table: Sequence[Sequence[str]]) -> str:
    head, *body = table
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def _html_table(table: Sequence[Sequence[str]]) -> str:
    head, *body = table
    th = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                  for row in body)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def _plot_attributes(per_attr: Sequence[Mapping[str, Any]], student: str, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = [a["attribute"] for a in per_attr]
    t = [100 * (a["teacher"] or 0) for a in per_attr]
    s = [100 * (a["student"] or 0) for a in per_attr]
    fig, ax = plt.subplots(figsize=(12, 4.2))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], t, width=0.4, label="teacher")
    ax.bar([x + 0.2 for x in xs], s, width=0.4, label=student)
    ax.set_xticks(list(xs), names, rotation=80, fontsize=7)
    ax.set_ylabel("balanced accuracy (%)")
    ax.set_ylim(40, 100)
    ax.legend(loc="lower right")
    ax.set_title(f"Per-attribute balanced accuracy on test: teacher vs {student}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return True


def _img_tag(path: str | os.PathLike[str], alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


_CSS = ("body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}"
        "table{border-collapse:collapse;margin:1em 0;font-size:14px}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}"
        "img{max-width:100%;margin:.5em 0}pre{background:#f6f6f6;padding:1em;overflow:auto}")


def _plot_pareto(rows: Sequence[Mapping[str, Any]], batch: int,
                 chosen: Mapping[str, Any] | None, path: Path) -> bool:
    """Accuracy against latency (each model's shipped file at ``batch``) and against params,
    the verdict's point starred. False when matplotlib is missing or nothing was timed."""
    points = []
    for r in rows:
        choice = r["ship"].get(str(batch))
        if choice is not None:
            p = choice["precision"]
            points.append((r["model"], p, r[f"{p}_ms_b{batch}"], r["params"],
                           100 * r["mean_balanced"]))
    if not points:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, x, label, log in ((axes[0], 2, f"median latency at batch {batch} (ms)", False),
                              (axes[1], 3, "parameters", True)):
        for k, pt in enumerate(points):
            star = chosen is not None and (pt[0], pt[1]) == (chosen["model"],
                                                               chosen["precision"])
            ax.scatter(pt[x], pt[4], s=180 if star else 40, marker="*" if star else "o",
                       color="#d62728" if star else "#1f77b4", zorder=3)
            ax.annotate(f"{pt[0]} ({pt[1]})", (pt[x], pt[4]), fontsize=8,
                        xytext=(6, 6 if k % 2 == 0 else -12), textcoords="offset points")
        ax.set_xlabel(label)
        ax.set_ylabel("mean balanced accuracy, test (%)")
        ax.margins(x=0.25, y=0.15)  # room for the labels
        if log:
            from matplotlib.ticker import FuncFormatter, NullFormatter

            ax.set_xscale("log")
            ax.set_xticks(sorted({pt[3] for pt in points}))  # a tick at each model's size
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1e6:.2g}M"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3)
    fig.suptitle("Accuracy against cost (star: the verdict; up and left is better)",
                 fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return True


def _env_table(env: Mapping[str, Any]) -> list[list[str]]:
    """The environment record as rows (nested values compact JSON, unknowns with why)."""
    reasons = env.get("reasons") or {}
    rows = [["key", "value"]]
    for key, value in env.items():
        if key == "reasons":
            continue
        if value is None:
            text = f"unknown: {reasons.get(key, 'not recorded')}"
        elif isinstance(value, dict | list):
            text = json.dumps(value, separators=(", ", ": "))
        else:
            text = str(value)
        rows.append([key, text])
    return rows


def _inline_html(text: str) -> str:
    """Escape ``text`` and render its Markdown ``**bold**`` and ```code``` spans."""
    import re

    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


#: a report section: (title, kind, content); kind is text (lines), table, folded (a table
#: shown on demand), bullets, image (a png path) or explained: a (note, kind, content) triple,
#: the note saying what the content below it shows
Section = tuple[str, str, Any]


def _md_body(kind: str, content: Any, title: str, out: Path) -> list[str]:
    if kind == "text":
        return [*content, ""]
    if kind == "bullets":
        return [f"- {line}" for line in content] + [""]
    if kind == "table":
        return [_md_table(content), ""]
    if kind == "folded":
        return ["<details><summary>show the table</summary>", "", _md_table(content), "",
                "</details>", ""]
    if kind == "image":
        return [f"![{title}]({os.path.relpath(content, out)})", ""]
    note, inner, body = content
    return [note, "", *_md_body(inner, body, title, out)]


def _markdown(sections: Sequence[Section], out: Path) -> str:
    md = ["# facedistill pipeline report", ""]
    for title, kind, content in sections:
        md += [f"## {title}", "", *_md_body(kind, content, title, out)]
    return "\n".join(md)


def _html_body(kind: str, content: Any, title: str) -> list[str]:
    if kind == "text":
        return [f"<p>{_inline_html(line)}</p>" for line in content if line]
    if kind == "bullets":
        return ["<ul>" + "".join(f"<li>{_inline_html(line)}</li>" for line in content) + "</ul>"]
    if kind == "table":
        return [_html_table(content)]
    if kind == "folded":
        return [f"<details><summary>show the table</summary>{_html_table(content)}</details>"]
    if kind == "image":
        return [_img_tag(content, title)]
    note, inner, body = content
    return [f"<p>{_inline_html(note)}</p>", *_html_body(inner, body, title)]


def _html(sections: Sequence[Section]) -> str:
    body = ["<h1>facedistill pipeline report</h1>"]
    for title, kind, content in sections:
        body += [f"<h2>{html.escape(title)}</h2>", *_html_body(kind, content, title)]
    box = ".verdict{border:2px solid #2e7d32;background:#f1f8e9;padding:.2em 1em}"
    return ("<!doctype html><html><head><meta charset='utf-8'><title>facedistill report</title>"
            f"<style>{_CSS}{box}</style></head><body>{''.join(body)}</body></html>\n"
            ).replace("<h2>Verdict</h2><p>", "<h2>Verdict</h2><p class='verdict'>", 1)


def _run_lines(pipeline: Any) -> tuple[list[str], list[list[str]]]:
    """When, with what and how long: the run's lines and its stage wall-time table."""
    from datetime import datetime, timezone

    from facedistill import __version__

    cfg = pipeline.cfg
    lines = [f"Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by facedistill "
             f"{__version__}; config `{cfg.source}`; run folder `{pipeline.out}`; data "
             f"`{cfg.data}`."]
    stages = [["stage", "wall time (s)", "status"]]
    total = 0.0
    for st in pipeline.stages:
        rec = pipeline.state["stages"].get(st.name) or {}
        seconds = rec.get("seconds")
        if st.name == "report" or seconds is None:
            continue
        total += float(seconds)
        stages.append([st.name, f"{float(seconds):.1f}", "done"])
    stages.append(["total (without this report)", f"{total:.1f}", ""])
    return lines, stages


def build_report(pipeline: Any, upstream: Mapping[str, Mapping[str, Any]], out: Path
                 ) -> dict[str, Path]:
    """Write report.md, report.html (images inlined) and report.json into ``out``."""
    rows = model_rows(pipeline, upstream)
    student, per_attr = _per_attribute(upstream, pipeline.students)
    bench = _read_bench(upstream.get("bench", {}).get("json"))
    env = dict(bench.environment) if bench else {}
    batches = _batches(bench)
    backend = ", ".join(sorted({r.backend for r in _bench_rows(bench)})) or "no bench"
    chosen = verdict(rows, batches, float(pipeline.cfg.export.max_drop))
    split = pipeline.cfg.bench.split

    run_lines, stage_table = _run_lines(pipeline)
    sections: list[Section] = [("Verdict", "text", _verdict_lines(chosen, env, backend)
                                + _tuned_lines(chosen, bench)),
                               ("Run", "text", run_lines)]
    pareto = out / "report_pareto.png"
    if batches and _plot_pareto(rows, batches[0], chosen, pareto):
        sections.append(("Accuracy against latency and size", "image", str(pareto)))
    sections += [("Models", "table", main_table(rows, batches)),
                 ("Units and terms", "bullets", [f"**{t}**: {m}" for t, m in LEGEND])]

    twins = twin_rows(pipeline, upstream)
    if twins:
        table = [["student", "distilled (method)", "label-only twin", "gain (points)"]]
        table += [[t["student"], f"{_pct(t['distilled'])} ({t['method']})", _pct(t["labels"]),
                   f"{100 * t['gain']:+.2f}"] for t in twins]
        sections.append((
            "Distillation against a label-only twin", "explained",
            ("The same student, budget and seed trained on the labels alone: what distillation "
             "from the teacher adds on this run (one seed; benchmarks/distill_gain.py measures "
             "it over seeds). Test split.", "table", table)))
    ensembles = ensemble_rows(pipeline, upstream, rows, batches)
    if ensembles:
        table = [["student", "accuracy", "ensemble (mean logits)", "delta", "compression",
                  *(f"ensemble fp32 ms (b{b})" for b in batches),
                  *(f"speed-up (b{b})" for b in batches), "vs best single teacher"]]
        table += [[e["student"], _pct(e["accuracy"]),
                   f"{_pct(e['ensemble'])} ({e['members']} teachers, "
                   f"{e['ensemble_params']:,} params)", f"{100 * e['delta']:+.2f}",
                   f"{e['compression']:.1f}x",
                   *(_ms(e[f"ensemble_fp32_ms_b{b}"]) for b in batches),
                   *("n/a" if e[f"speedup_b{b}"] is None else f"{e[f'speedup_b{b}']:.1f}x"
                     for b in batches),
                   f"{100 * e['best_teacher']['delta']:+.2f} at "
                   f"{e['best_teacher']['compression']:.1f}x"] for e in ensembles]
        sections.append((
            "Students against the teachers' ensemble", "explained",
            ("The ensemble runs every member in turn: its latency is the sum of the members' "
             "fp32 median latencies in the bench below; speed-up = that over the student's "
             "fp32 latency at the same batch size; compression = summed parameters over the "
             "student's. Test split.", "table", table)))
    cascades = cascade_rows(pipeline, upstream)
    if cascades:
        table = [["cascade", "whole-image subnet", "part subnets", "switch",
                  "switch + relations", "parts chosen"]]
        table += [[c["name"], f"{_pct(c['whole'])} ({c['params']['whole']:,})",
                   f"{_pct(c['parts'])} ({c['params']['parts']:,})", _pct(c["switch"]),
                   f"{_pct(c['cascade'])} ({c['params']['cascade']:,})",
                   f"{c['parts_chosen']} / {c['attributes']}"] for c in cascades]
        sections.append((
            "The cascade for unaligned faces", "explained",
            ("Test mean balanced accuracy (params) of each cascade's pieces: the region switch "
             "takes, per attribute, the subnet that is better on val; the relation layer is "
             "fitted on the training split's switched scores.", "table", table)))
    ship = _ship_lines(rows, batches)
    if ship:
        sections.append(("What to ship per model on this machine", "explained",
                         (SHIP_RULE, "bullets", [ln[2:] for ln in ship])))
    files = [f"{r['model']} {p}: `{r[f'{p}_onnx']}`" for r in rows for p in EXPORT_PRECISIONS
             if r.get(f"{p}_onnx")]
    if files:
        sections.append(("Artifacts", "bullets", files))
    if per_attr:
        sections.append((f"Per-attribute balanced accuracy on test: teacher vs {student}",
                         "folded", [["attribute", "teacher", student or "student", "delta"]] + [
                             [a["attribute"], _pct(a["teacher"]), _pct(a["student"]),
                              "n/a" if a["delta"] is None else f"{100 * a['delta']:+.2f}"]
                             for a in per_attr]))
    sel_plot = upstream.get("select", {}).get("plot")
    if sel_plot and Path(sel_plot).exists():
        sections.append(("Neuron selection", "image", sel_plot))
    attr_png = out / "report_attributes.png"
    if per_attr and _plot_attributes(per_attr, student or "student", attr_png):
        sections.append((f"Teacher vs {student}, per attribute (test)", "image",
                         str(attr_png)))
    for plot in upstream.get("bench", {}).get("plots", []):
        sections.append((f"Latency, throughput and accuracy by batch size (bench; accuracy on "
                         f"the {split} split)", "image", plot))
    sections += [("Stage wall times", "folded", stage_table),
                 ("Environment", "table", _env_table(env))]

    paths = {"markdown": out / "report.md", "html": out / "report.html",
             "json": out / "report.json"}
    atomic_write_text(paths["markdown"], _markdown(sections, out))
    atomic_write_text(paths["html"], _html(sections))
    atomic_write_json(paths["json"], {"verdict": chosen, "models": rows, "twins": twins,
                                      "ensembles": ensembles, "cascades": cascades,
                                      "per_attribute": per_attr, "student": student,
                                      "environment": env,
                                      "figures": [c for _, k, c in sections if k == "image"]})
    return paths
