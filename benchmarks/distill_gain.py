"""Does distillation earn its keep? Every method against label-only training, over seeds.

From one teacher with headroom (``benchmarks/teacher_synth.py --width 1 --size 64 --epochs 8
--out runs/headroom`` makes it; TNet x1 at 64 px, >= 82% mean balanced accuracy), each student
(default SNet3 and SNet1 at width 1/8, at the teacher's input size) is trained with the same
Trainer settings and the same number of epochs by every method, for every seed:

* ``labels``                - BCE on the labels only (the baseline);
* ``soft-T1``, ``soft-T4``  - labels + the teacher's soft targets at temperature 1 and 4;
* ``hint``                  - labels + all 1280 teacher neurons (no regressor);
* ``selected``              - labels + the K neurons of mean-field selection (the defaults);
* ``random-K``              - the same, K neurons drawn at random (seeded);
* ``top-K``                 - the same, the K most informative neurons (no redundancy term);
* ``all-1279``              - the same, 1279 of the 1280 neurons: the regressor's own effect.

With ``--unlabeled DIR`` (``auto``: a pool of other synthetic people, labels withheld, made
under ``data/``), every teacher method also runs with that pool next to the labelled set.

Scores: mean balanced accuracy on val (for choosing) and on test (the final number),
thresholds searched on val. Every cell (student, method, pool, seed) lands in
``--out/<student>/<method>[+pool]/seed<S>``; a finished cell (its ``cell.json``) is reused and
an unfinished one resumes from its last epoch, so the run survives any interruption. Prints one
JSON line per finished cell, then the summary JSON line and a Markdown table (mean +- std over
seeds); ``--png-out`` draws it. Cells run seed by seed: within one seed every student and
method trains on byte-identical batches, so the teacher's outputs are computed by the first cell
and reused from memory by the others (``FACEDISTILL_TEACHER_CACHE_MB``, default 2048, holds ~30
epochs of 12,855 images).

    python benchmarks/distill_gain.py --teacher runs/headroom [--students snet3,snet1]
        [--width 0.125] [--epochs 4] [--seeds 0,1,2] [--unlabeled auto] [--out runs/gain]
        [--json-out benchmarks/results/distill_gain.json --md-out ... --png-out ...]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from facedistill.config import SelectConfig, TrainConfig
from facedistill.io import atomic_path, atomic_write_json, command_line, write_results
from facedistill.nn.checkpoint import load_checkpoint
from facedistill.pipeline.compress import compress, prepare_selection
from facedistill.pipeline.evaluate import evaluate_checkpoint

# method name -> (compress method, temperature, which selection)
METHODS: dict[str, tuple[str, float, str | None]] = {
    "labels": ("labels", 1.0, None),
    "soft-T1": ("soft", 1.0, None),
    "soft-T4": ("soft", 4.0, None),
    "hint": ("hint", 1.0, None),
    "selected": ("selected", 1.0, "selected"),
    "random-K": ("selected", 1.0, "random"),
    "top-K": ("selected", 1.0, "top"),
    "all-1279": ("selected", 1.0, "all-1279"),
}
POOL = "+pool"


def selections(base: str, out: Path, k: int, seed: int) -> dict[str, str]:
    """The mean-field selection file ``base`` and its controls, written beside it in the
    same format (so compress checks them against the teacher alike)."""
    rec = json.loads(Path(base).read_text())
    n = rec["candidates"]
    u = np.asarray(rec["u"])
    order = np.lexsort((np.arange(n), -u))  # by informativeness, ties by index
    rng = np.random.default_rng(seed)
    picks = {"selected": rec["indices"],
             "random": sorted(rng.choice(n, k, replace=False).tolist()),
             "top": order[:k].tolist(),
             "all-1279": order[:n - 1].tolist()}
    paths = {}
    for name, idx in picks.items():
        if name == "selected":
            paths[name] = str(base)
            continue
        path = out / f"selection-{name}.json"
        control = {**rec, "k": len(idx), "indices": [int(i) for i in idx],
                   "selected": [], "thresholds": [], "solver": f"control:{name}"}
        atomic_write_json(path, control)
        paths[name] = str(path)
    return paths


def unlabeled_pool(arg: str | None, data: Path, size: int) -> Path | None:
    if arg is None:
        return None
    if arg != "auto":
        return Path(arg)
    from facedistill.data.synth import SynthConfig, generate, read_manifest

    labelled = read_manifest(data) or {}
    n = int(labelled.get("config", {}).get("n", 16000))
    pool = data.parent / f"{data.name}-pool"
    generate(pool, SynthConfig(n=n, size=max(size, 64), seed=1000 + int(
        labelled.get("config", {}).get("seed", 0)), images_per_identity=5.0),
        withhold_labels=True)
    return pool


def run_cell(args: argparse.Namespace, student: str, method: str, pool: Path | None,
             seed: int, sel_paths: dict[str, str]) -> dict[str, Any]:
    name = method + (POOL if pool is not None else "")
    out = args.out / student / name / f"seed{seed}"
    done = out / "cell.json"
    if done.exists():
        return json.loads(done.read_text())
    base, temperature, which = METHODS[method]
    cfg = TrainConfig(arch=student, width=args.width, size=args.size, epochs=args.epochs,
                      warmup=args.warmup, lr=args.lr, batch_size=args.batch_size, seed=seed,
                      workers=args.workers)
    start = time.perf_counter()
    result = compress(cfg, [args.teacher], args.data, out, method=base, k=args.k,
                      selection=sel_paths[which] if which else None, temperature=temperature,
                      split="test", unlabeled=pool, resume=(out / "last.pt").exists())
    val = evaluate_checkpoint(out, data=args.data, split="val", workers=args.workers)
    row = result["rows"][0]
    cell = {"student": student, "method": method, "pool": pool is not None, "seed": seed,
            "test": row["mean_balanced"], "val": val["mean_balanced"],
            "teacher_test": result["rows"][1]["mean_balanced"],
            "params": row["params"], "live_params": row["live_params"],
            "epochs": args.epochs, "seconds": round(time.perf_counter() - start, 1),
            "best_epoch": load_checkpoint(out).get("epoch")}
    atomic_write_json(done, cell)
    return cell


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan


def summarize(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, bool], list[dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault((c["student"], c["method"], c["pool"]), []).append(c)
    rows = []
    for (student, method, pool), cs in groups.items():
        test_m, test_s = _mean_std([c["test"] for c in cs])
        val_m, val_s = _mean_std([c["val"] for c in cs])
        rows.append({"student": student, "method": method + (POOL if pool else ""),
                     "seeds": len(cs), "test_mean": test_m, "test_std": test_s,
                     "val_mean": val_m, "val_std": val_s})
    for r in rows:
        base = next((b for b in rows if b["student"] == r["student"]
                     and b["method"] == "labels"), None)
        r["gain_test"] = r["test_mean"] - base["test_mean"] if base else math.nan
    return rows


def goal(rows: list[dict[str, Any]], student: str = "snet3") -> dict[str, Any]:
    """The issue's goal, read off the test means (the best method picked on val)."""
    mine = {r["method"]: r for r in rows if r["student"] == student}
    if "labels" not in mine:
        return {"student": student, "evaluated": False}
    teach = [r for m, r in mine.items() if m != "labels"]
    if not teach:
        return {"student": student, "evaluated": False}
    best = max(teach, key=lambda r: r["val_mean"])
    spread = max(best["test_std"], mine["labels"]["test_std"])
    out = {"student": student, "evaluated": True, "best_on_val": best["method"],
           "best_minus_labels": best["test_mean"] - mine["labels"]["test_mean"],
           "two_std": 2 * spread,
           "gain_ok": (best["test_mean"] - mine["labels"]["test_mean"] >= 0.01
                       and best["test_mean"] - mine["labels"]["test_mean"] > 2 * spread)}
    soft = [r for m, r in mine.items() if m.startswith("soft") and POOL not in m]
    if "selected" in mine and soft:
        out["selected_minus_best_soft"] = mine["selected"]["test_mean"] - max(
            r["test_mean"] for r in soft)
    for control, key in (("random-K", "selected_minus_random"), ("top-K", "selected_minus_top"),
                         ("all-1279", "selected_minus_all_1279")):
        if "selected" in mine and control in mine:
            out[key] = mine["selected"]["test_mean"] - mine[control]["test_mean"]
    pooled = {m[:-len(POOL)]: r for m, r in mine.items() if m.endswith(POOL)}
    if pooled:  # what the unlabeled pool adds to each method
        out["pool_gain"] = {m: r["test_mean"] - mine[m]["test_mean"]
                            for m, r in pooled.items() if m in mine}
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [f"Distillation gain from `{result['teacher']}` (teacher test "
             f"{100 * result['teacher_test']:.2f}%), students at width {result['width']:g}, "
             f"{result['size']} px, {result['epochs']} epochs each, seeds {result['seeds']}. "
             "Mean balanced accuracy, mean +- std over seeds (thresholds from val).", "",
             "| student | method | seeds | val | test | test - labels |",
             "|---|---|---:|---:|---:|---:|"]
    for r in sorted(result["rows"], key=lambda r: (r["student"], -r["test_mean"])):
        lines.append(f"| {r['student']} | {r['method']} | {r['seeds']} "
                     f"| {100 * r['val_mean']:.2f} +- {100 * r['val_std']:.2f} "
                     f"| {100 * r['test_mean']:.2f} +- {100 * r['test_std']:.2f} "
                     f"| {100 * r['gain_test']:+.2f} |")
    g = result["goal"]
    if g.get("evaluated"):
        lines += ["", f"Goal ({g['student']}): best on val = {g['best_on_val']}, "
                      f"{100 * g['best_minus_labels']:+.2f} points over labels on test "
                      f"(2 std = {100 * g['two_std']:.2f}): "
                      f"**{'met' if g['gain_ok'] else 'not met'}**."]
        reads = [(k, label) for k, label in (
            ("selected_minus_best_soft", "selected - best soft"),
            ("selected_minus_random", "selected - random-K"),
            ("selected_minus_top", "selected - top-K"),
            ("selected_minus_all_1279", "selected - all-1279")) if k in g]
        if reads:
            lines += ["", "Controls (test, points): " + "; ".join(
                f"{label} {100 * g[k]:+.2f}" for k, label in reads) + "."]
        if g.get("pool_gain"):
            lines += ["", "The unlabeled pool adds (test, points): " + "; ".join(
                f"{m} {100 * v:+.2f}" for m, v in sorted(g["pool_gain"].items())) + ". A pool "
                "cell's epoch also holds the pool's images, so it trains for more steps than "
                "the no-pool cells: compare it with labels run for as many steps (--epochs, "
                "docs/distillation.md)."]
    lines += ["", f"Made by: `{result['command']}`"]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    students = sorted({r["student"] for r in result["rows"]})
    fig, axes = plt.subplots(1, len(students), figsize=(6 * len(students), 4.5), squeeze=False,
                             layout="constrained")
    for ax, student in zip(axes[0], students, strict=True):
        rows = sorted((r for r in result["rows"] if r["student"] == student),
                      key=lambda r: r["method"])
        x = np.arange(len(rows))
        ax.bar(x, [100 * r["test_mean"] for r in rows],
               yerr=[100 * (0 if math.isnan(r["test_std"]) else r["test_std"]) for r in rows],
               color=["gray" if r["method"] == "labels" else "tab:blue" for r in rows])
        ax.set_xticks(x, [r["method"] for r in rows], rotation=45, ha="right")
        lo = min(100 * r["test_mean"] for r in rows) - 2
        ax.set_ylim(lo, max(100 * r["test_mean"] for r in rows) + 1.5)
        ax.set_ylabel("mean balanced accuracy, test (%)")
        ax.set_title(f"{student} x{result['width']:g}: mean +- std over seeds")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teacher", type=Path, default=Path("runs/headroom"))
    ap.add_argument("--data", type=Path, default=Path("data/synth"))
    ap.add_argument("--students", default="snet3,snet1")
    ap.add_argument("--width", type=float, default=0.125)
    ap.add_argument("--size", type=int, default=None,
                    help="student input size [default: the teacher's]")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--warmup", type=float, default=0.3)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--k", type=int, default=512)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--unlabeled", default=None,
                    help="a folder of unlabeled faces, or 'auto' (a synthetic pool)")
    ap.add_argument("--out", type=Path, default=Path("runs/distill_gain"))
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--md-out", type=Path)
    ap.add_argument("--png-out", type=Path)
    args = ap.parse_args()

    teacher = load_checkpoint(args.teacher)
    size = int(teacher["preprocess"]["size"][0])
    args.size = args.size or size
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        ap.error(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    pool = unlabeled_pool(args.unlabeled, args.data, args.size)
    sel_paths: dict[str, str] = {}
    if any(METHODS[m][2] for m in methods):
        base = prepare_selection([args.teacher], args.data, args.out,
                                 SelectConfig(k=args.k, workers=args.workers))
        sel_paths = selections(base, args.out, args.k, seed=0)
    cells = []
    # seed, then pool outermost: every cell of one (seed, pool) sees the same batches, so the
    # teacher runs once per batch for all of them (facedistill.pipeline.distill.TeacherCache)
    for seed in seeds:
        for p in [None] + ([pool] if pool is not None else []):
            for student in args.students.split(","):
                for method in methods:
                    if p is not None and method == "labels":
                        continue
                    cells.append(run_cell(args, student, method, p, seed, sel_paths))
                    print(json.dumps(cells[-1]), flush=True)
    rows = summarize(cells)
    teacher_test = evaluate_checkpoint(args.teacher, data=args.data, split="test",
                                       workers=args.workers)["mean_balanced"]
    result = {"benchmark": "distill_gain", "teacher": str(args.teacher),
              "teacher_test": teacher_test, "width": args.width, "size": args.size,
              "epochs": args.epochs, "seeds": seeds, "k": args.k,
              "unlabeled": None if pool is None else str(pool), "rows": rows,
              "goal": goal(rows), "cells": cells, "command": command_line()}
    md = markdown(result)
    print(json.dumps({k: v for k, v in result.items() if k != "cells"}))
    print()
    print(md)
    write_results(result, md, args.json_out, args.md_out)
    if args.png_out:
        plot(result, args.png_out)


if __name__ == "__main__":
    main()
