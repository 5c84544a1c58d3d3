"""The pipeline's one report: ``report.md``, a self-contained ``report.html`` and ``report.json``.

Contents: the models table (params, MACs, compression, mean balanced accuracy, fp32/int8
latency and file size), the per-attribute accuracy of the teacher beside the smallest student,
the selection plot, the bench plots and the environment record. Built only from what the
stages wrote (checkpoints' arch records, eval/compare JSON, export reports, bench JSON).
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


def _latency(rows: Sequence[BenchRow], path: str, batch: int) -> float | None:
    """Median latency (ms) of one artifact at one batch size in the bench rows."""
    target = Path(path).resolve()
    for r in rows:
        if Path(r.artifact).resolve() == target and r.batch == batch:
            value = r.latency_ms.median
            return float(value) if math.isfinite(value) else None
    return None


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
        for prec in EXPORT_PRECISIONS:
            path = variants.get(prec)
            row[f"{prec}_onnx"] = path
            row[f"{prec}_bytes"] = Path(path).stat().st_size if path and Path(path).exists() \
                else None
            for batch in batches:
                row[f"{prec}_ms_b{batch}"] = _latency(rows_b, path, batch) if path else None
        row["fastest"] = fastest_variants(row, batches)
        rows.append(row)
    teacher = rows[0]
    for r in rows:
        r["compression"] = teacher["params"] / r["params"]
        r["live_compression"] = teacher["live_params"] / r["live_params"]
        r["delta"] = r["mean_balanced"] - teacher["mean_balanced"]
    return rows


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


def _fastest_lines(rows: Sequence[Mapping[str, Any]], batches: Sequence[int]) -> list[str]:
    """One Markdown bullet per model: the fastest precision per batch size, with the others."""
    lines = []
    for r in rows:
        parts = []
        for b in batches:
            best = r["fastest"].get(str(b))
            if best is None:
                continue
            others = [f"{p} {_ms(r[f'{p}_ms_b{b}'])}" for p in EXPORT_PRECISIONS
                      if p != best and r.get(f"{p}_ms_b{b}") is not None]
            parts.append(f"**{best}** at batch {b} ({_ms(r[f'{best}_ms_b{b}'])} ms"
                         + (f"; {', '.join(others)}" if others else "") + ")")
        if parts:
            lines.append(f"- {r['model']}: " + ", ".join(parts))
    return lines


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


def main_table(rows: Sequence[Mapping[str, Any]], batches: Sequence[int]) -> list[list[str]]:
    lat = [(p, b) for b in batches for p in ("fp32", "int8")]
    head = ["model", "params", "live params", "MACs", "compression", "live compression",
            "mean bal. acc (test)", "delta",
            *(f"{p} ms (b{b})" for p, b in lat), "fp32 MB", "int8 MB"]
    body = [[f"{r['model']} ({r['arch']} x{r['width']:g})", f"{r['params']:,}",
             f"{r['live_params']:,}", f"{r['macs'] / 1e6:.1f}M", f"{r['compression']:.1f}x",
             f"{r['live_compression']:.1f}x", _pct(r["mean_balanced"]),
             f"{100 * r['delta']:+.2f}", *(_ms(r.get(f"{p}_ms_b{b}")) for p, b in lat),
             _mb(r["fp32_bytes"]), _mb(r["int8_bytes"])] for r in rows]
    return [head, *body]


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


def build_report(pipeline: Any, upstream: Mapping[str, Mapping[str, Any]], out: Path
                 ) -> dict[str, Path]:
    """Write report.md, report.html (images inlined) and report.json into ``out``."""
    rows = model_rows(pipeline, upstream)
    student, per_attr = _per_attribute(upstream, pipeline.students)
    bench = _read_bench(upstream.get("bench", {}).get("json"))
    env = dict(bench.environment) if bench else {}
    figures: list[tuple[str, str]] = []  # (title, png path)
    sel_plot = upstream.get("select", {}).get("plot")
    if sel_plot and Path(sel_plot).exists():
        figures.append(("Neuron selection", sel_plot))
    attr_png = out / "report_attributes.png"
    if per_attr and _plot_attributes(per_attr, student or "student", attr_png):
        figures.append((f"Teacher vs {student}, per attribute", str(attr_png)))
    for plot in upstream.get("bench", {}).get("plots", []):
        figures.append((f"Bench: {Path(plot).stem}", plot))

    batches = _batches(bench)
    table = main_table(rows, batches)
    twins = twin_rows(pipeline, upstream)
    twin_table = [["student", "distilled (method)", "label-only twin", "gain"]] + [
        [t["student"], f"{_pct(t['distilled'])} ({t['method']})", _pct(t["labels"]),
         f"{100 * t['gain']:+.2f}"] for t in twins]
    ensembles = ensemble_rows(pipeline, upstream, rows, batches)
    ens_table = [["student", "accuracy", "ensemble (mean logits)", "delta", "compression",
                  *(f"ensemble fp32 ms (b{b})" for b in batches),
                  *(f"speed-up (b{b})" for b in batches), "vs best single teacher"]] + [
        [e["student"], _pct(e["accuracy"]), f"{_pct(e['ensemble'])} ({e['members']} teachers, "
         f"{e['ensemble_params']:,} params)", f"{100 * e['delta']:+.2f}",
         f"{e['compression']:.1f}x", *(_ms(e[f"ensemble_fp32_ms_b{b}"]) for b in batches),
         *("n/a" if e[f"speedup_b{b}"] is None else f"{e[f'speedup_b{b}']:.1f}x"
           for b in batches),
         f"{100 * e['best_teacher']['delta']:+.2f} at {e['best_teacher']['compression']:.1f}x"]
        for e in ensembles]
    cascades = cascade_rows(pipeline, upstream)
    cascade_table = [["cascade", "whole-image subnet", "part subnets", "switch",
                      "switch + relations", "parts chosen"]] + [
        [c["name"], f"{_pct(c['whole'])} ({c['params']['whole']:,})",
         f"{_pct(c['parts'])} ({c['params']['parts']:,})", _pct(c["switch"]),
         f"{_pct(c['cascade'])} ({c['params']['cascade']:,})",
         f"{c['parts_chosen']} / {c['attributes']}"] for c in cascades]
    cascade_note = ("Test mean balanced accuracy (params) of each cascade's pieces: the region "
                    "switch takes, per attribute, the subnet that is better on val; the "
                    "relation layer is fitted on the training split's switched scores.")
    ens_note = ("The ensemble runs every member in turn: its latency is the sum of the members' "
                "fp32 median latencies in the bench below; speed-up = that over the student's "
                "fp32 latency at the same batch size; compression = summed parameters over the "
                "student's.")
    twin_note = ("The same student, budget and seed trained on the labels alone: what "
                 "distillation from the teacher adds on this run (one seed; "
                 "benchmarks/distill_gain.py measures it over seeds).")
    attr_table = [["attribute", "teacher", student or "student", "delta"]] + [
        [a["attribute"], _pct(a["teacher"]), _pct(a["student"]),
         "n/a" if a["delta"] is None else f"{100 * a['delta']:+.2f}"] for a in per_attr]
    data = pipeline.cfg.data
    intro = (f"Data: `{data}`; teacher and students evaluated on the test split with per-"
             "attribute thresholds searched on val; latency = median ms per batch with ONNX "
             "Runtime on the machine below; 'n/a' = not measured (e.g. INT8 rejected by the "
             "accuracy gate, see the export report).")
    env_text = json.dumps(env, indent=2)

    md = ["# facedistill pipeline report", "", intro, "", "## Models", "", _md_table(table), ""]
    if twins:
        md += ["## Distillation against a label-only twin", "", twin_note, "",
               _md_table(twin_table), ""]
    if ensembles:
        md += ["## Students against the teachers' ensemble", "", ens_note, "",
               _md_table(ens_table), ""]
    if cascades:
        md += ["## The cascade for unaligned faces", "", cascade_note, "",
               _md_table(cascade_table), ""]
    fastest = _fastest_lines(rows, batches)
    if fastest:
        md += ["## Fastest exported variant on this machine", "",
               "Lowest median latency among the benchmarked ONNX variants that passed the "
               "export gate (ms per batch):", "", *fastest, ""]
    if per_attr:
        md += [f"## Per-attribute balanced accuracy: teacher vs {student}", "",
               _md_table(attr_table), ""]
    for title, path in figures:
        md += [f"## {title}", "", f"![{title}]({os.path.relpath(path, out)})", ""]
    md += ["## Environment", "", "```json", env_text, "```", ""]

    body = [f"<h1>facedistill pipeline report</h1><p>{html.escape(intro)}</p>",
            "<h2>Models</h2>", _html_table(table)]
    if twins:
        body += ["<h2>Distillation against a label-only twin</h2>",
                 f"<p>{html.escape(twin_note)}</p>", _html_table(twin_table)]
    if ensembles:
        body += ["<h2>Students against the teachers' ensemble</h2>",
                 f"<p>{html.escape(ens_note)}</p>", _html_table(ens_table)]
    if cascades:
        body += ["<h2>The cascade for unaligned faces</h2>",
                 f"<p>{html.escape(cascade_note)}</p>", _html_table(cascade_table)]
    if fastest:
        items = "".join(f"<li>{html.escape(ln[2:]).replace('**', '')}</li>" for ln in fastest)
        body += ["<h2>Fastest exported variant on this machine</h2>", f"<ul>{items}</ul>"]
    if per_attr:
        body += [f"<h2>Per-attribute balanced accuracy: teacher vs {html.escape(student or '')}"
                 "</h2>", _html_table(attr_table)]
    for title, path in figures:
        body += [f"<h2>{html.escape(title)}</h2>", _img_tag(path, title)]
    body += ["<h2>Environment</h2>", f"<pre>{html.escape(env_text)}</pre>"]
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>facedistill report</title>"
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")

    paths = {"markdown": out / "report.md", "html": out / "report.html",
             "json": out / "report.json"}
    atomic_write_text(paths["markdown"], "\n".join(md))
    atomic_write_text(paths["html"], page)
    atomic_write_json(paths["json"], {"models": rows, "twins": twins, "ensembles": ensembles,
                                      "cascades": cascades, "per_attribute": per_attr,
                                      "student": student, "environment": env,
                                      "figures": [p for _, p in figures]})
    return paths
