"""The neuron-selection paper's Fig. 1: a student at shrinking widths, four ways of training it.

For each width (default 1, 1/2, 1/4, 1/8 of the student's convolutions; the 1280-d top layer
stays) the student is trained from one teacher with ``labels`` (BCE only), ``soft`` (soft
targets, T=1), ``hint`` (all 1280 teacher neurons) and ``selected`` (the K neurons chosen by
mean-field selection, one selection shared by all runs), with the same Trainer settings, and
scored on the test split (mean balanced accuracy, thresholds searched on val). The goal we
track: ``selected >= soft >= labels`` at the two smallest widths. Each run also records its
val score (``val_mean_balanced``): choose settings on it, report test. ``--extra`` adds single
runs that settle the defaults: ``selected-2stage`` (feature imitation alone for half the
epochs, then labels) against the joint default, and ``selected:W`` (the selected term weighted
W instead of 1).

Every run lands in ``--out/<method>-w<width>``; a finished run (its ``compare.json``) is
reused, so an interrupted sweep continues where it stopped. Prints one JSON line and a
Markdown table; writes JSON, Markdown and a PNG (accuracy vs width per method) when asked.

    python benchmarks/width_sweep.py --teacher runs/demo/teacher --data data/synth \\
        [--student snet1 --widths 1,0.5,0.25,0.125 --methods labels,soft,hint,selected \\
         --epochs 2 --size 32 --k 512 --out runs/width_sweep --extra selected-2stage@0.125] \\
        [--json-out benchmarks/results/width_sweep.json --md-out ... --png-out ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from facedistill.config import SelectConfig, TrainConfig
from facedistill.io import atomic_path, atomic_write_json, command_line, write_results
from facedistill.pipeline.compress import compress, prepare_selection
from facedistill.pipeline.evaluate import evaluate_checkpoint

TWO_STAGE = "-2stage"


def parse_method(method: str) -> tuple[str, bool, float | None]:
    """``selected``, ``selected-2stage``, ``selected:0.3`` -> (base method, two-stage?, the
    weight of its teacher term or None for the default)."""
    name, _, weight = method.partition(":")
    base = name.removesuffix(TWO_STAGE)
    return base, name.endswith(TWO_STAGE), float(weight) if weight else None


def run_one(args: argparse.Namespace, method: str, width: float, selection: str | None
            ) -> dict[str, Any]:
    """Train (or reuse) one student. ``<method>-2stage`` trains the feature term alone for
    the first half of the epochs, then the labels (the cascade paper's two-stage recipe);
    ``<method>:W`` weights the method's teacher term by W instead of 1."""
    out = args.out / f"{method.replace(':', '-x')}-w{width:g}"
    base, staged, weight = parse_method(method)
    two_stage = args.epochs // 2 if staged else 0
    weights = () if weight is None else (f"{base}={weight}",)
    done = out / "compare.json"
    if done.exists():
        result = json.loads(done.read_text())
        seconds = result.get("seconds")
    else:
        cfg = TrainConfig(arch=args.student, width=width, size=args.size, epochs=args.epochs,
                          batch_size=args.batch_size, lr=args.lr, warmup=args.warmup,
                          workers=args.workers, seed=args.seed)
        t0 = time.perf_counter()
        result = compress(cfg, [args.teacher], args.data, out, method=base, k=args.k,
                          selection=selection, temperature=1.0, two_stage=two_stage,
                          weight=weights, split="test", resume=True)
        seconds = time.perf_counter() - t0
        val = evaluate_checkpoint(out, data=args.data, split="val", workers=args.workers)
        result |= {"seconds": seconds, "val_mean_balanced": val["mean_balanced"]}
        atomic_write_json(done, result)
    student, teacher = result["rows"][0], result["rows"][1]
    # runs finished before val was recorded carry None: their defaults were read off test
    return {"method": method, "width": width, "params": student["params"],
            "macs": student["macs"], "mean_balanced": student["mean_balanced"],
            "val_mean_balanced": result.get("val_mean_balanced"),
            "teacher_mean_balanced": teacher["mean_balanced"], "seconds": seconds,
            "run": str(out)}


def goal(rows: list[dict[str, Any]], widths: list[float]) -> dict[str, Any]:
    """``selected >= soft >= labels`` at each of the two smallest widths."""
    acc = {(r["method"], r["width"]): r["mean_balanced"] for r in rows}
    out = {}
    for w in sorted(widths)[:2]:
        s, t, lab = (acc.get((m, w)) for m in ("selected", "soft", "labels"))
        ok = None if None in (s, t, lab) else bool(s >= t >= lab)
        out[f"w{w:g}"] = {"selected": s, "soft": t, "labels": lab, "holds": ok}
    return out


def markdown(result: dict[str, Any]) -> str:
    methods, widths = result["methods"], result["widths"]
    acc = {(r["method"], r["width"]): r for r in result["rows"]}
    head = "| width | params | " + " | ".join(methods) + " |"
    lines = [head, "|---|---:|" + "---:|" * len(methods)]
    for w in widths:
        any_row = next((acc[(m, w)] for m in methods if (m, w) in acc), None)
        params = f"{any_row['params']:,}" if any_row else "n/a"
        cells = [f"{100 * acc[(m, w)]['mean_balanced']:.2f}%" if (m, w) in acc else "n/a"
                 for m in methods]
        lines.append(f"| {w:g} | {params} | " + " | ".join(cells) + " |")
    t = result["rows"][0]["teacher_mean_balanced"] if result["rows"] else None
    if t is not None:
        lines += ["", f"Teacher: {100 * t:.2f}% (test). Total {result['seconds'] / 60:.1f} min."]
    if result.get("command"):
        lines += ["", f"Made by: `{result['command']}`"]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for m in result["methods"]:
        pts = sorted((r["width"], 100 * r["mean_balanced"]) for r in result["rows"]
                     if r["method"] == m)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=m)
    if result["rows"]:
        ax.axhline(100 * result["rows"][0]["teacher_mean_balanced"], color="gray", ls=":",
                   label="teacher")
    ax.set_xscale("log", base=2)
    ax.set_xlabel(f"{result['student']} width multiplier")
    ax.set_ylabel("mean balanced accuracy (%), test")
    ax.set_title("Accuracy vs student width, per training method")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teacher", type=Path, required=True, help="teacher run folder or .pt")
    ap.add_argument("--data", type=Path, default=Path("data/synth"))
    ap.add_argument("--student", default="snet1")
    ap.add_argument("--widths", default="1,0.5,0.25,0.125")
    ap.add_argument("--methods", default="labels,soft,hint,selected")
    ap.add_argument("--extra", default="selected-2stage@0.25,selected-2stage@0.125,"
                    "selected:0.3@0.125,selected:3@0.125",
                    help="more METHOD@WIDTH runs: joint vs two-stage and the feature term's "
                         "weight ('' = none)")
    ap.add_argument("--k", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=float, default=0.3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/width_sweep"))
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--md-out", type=Path)
    ap.add_argument("--png-out", type=Path)
    args = ap.parse_args()
    widths = [float(w) for w in args.widths.split(",")]
    methods = [m.strip() for m in args.methods.split(",")]
    extra = [(m, float(w)) for m, w in (e.split("@") for e in args.extra.split(",") if e)]
    planned = {(m, w) for m in methods for w in widths} | set(extra)
    methods += [m for m in dict.fromkeys(m for m, _ in extra) if m not in methods]
    widths += sorted({w for _, w in extra} - set(widths), reverse=True)
    t0 = time.perf_counter()
    selection = None
    if any(parse_method(m)[0] == "selected" for m in methods):
        selection = prepare_selection([args.teacher], args.data, args.out / "selection",
                                      SelectConfig(k=args.k, workers=args.workers))
    rows = []
    for w in widths:
        for m in methods:
            if (m, w) not in planned:
                continue
            uses_selection = parse_method(m)[0] == "selected"
            rows.append(run_one(args, m, w, selection if uses_selection else None))
            r = rows[-1]
            print(f"# {m} w{w:g}: {100 * r['mean_balanced']:.2f}% ({r['seconds'] or 0:.0f} s)",
                  flush=True)
    result = {"student": args.student, "widths": widths, "methods": methods, "rows": rows,
              "goal": goal(rows, widths), "epochs": args.epochs, "size": args.size,
              "k": args.k, "teacher": str(args.teacher), "data": str(args.data),
              "seconds": time.perf_counter() - t0,
              "command": command_line()}
    md = markdown(result)
    print(json.dumps(result))
    print(md)
    write_results(result, md, args.json_out, args.md_out)
    if args.png_out:
        plot(result, args.png_out)


if __name__ == "__main__":
    main()
