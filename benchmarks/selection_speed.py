"""Neuron selection: the fast (piecewise-linear) solver against the exact one.

For N = 1,280 (one TNet), 12,800 (ten teachers) and 128,000 candidate neurons with A = 40
attributes: seconds, iterations, top-K overlap with the exact solver and the largest message
error of the grid (at the exact solution's q, relative to the largest message). The exact
solver runs only where its N x N kernel fits (``--exact-max``). Goals (docs/selection.md):
fast >= 20x faster than exact at N = 12,800 with overlap >= 0.95; N = 128,000 in under 10 s.

The accuracy matrices are drawn like a trained teacher's (most neurons near chance, a few good
at a few attributes), or, with ``--x X.npy`` (from ``facedistill select``), that real matrix
tiled to N with a little noise, as an ensemble of similar teachers would give.

Prints one JSON line, then a Markdown table.

    python benchmarks/selection_speed.py [--sizes 1280,12800,128000] [--x runs/tnet/selection/X.npy]
        [--json-out benchmarks/results/selection_speed.json --md-out ...md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from facedistill.io import write_results
from facedistill.selection import solver as S


def make_x(n: int, attrs: int, rng: np.random.Generator, real: np.ndarray | None) -> np.ndarray:
    if real is None:
        return 0.5 + 0.5 * rng.beta(0.8, 4.0, size=(n, attrs))
    reps = -(-n // real.shape[0])
    tiled = np.tile(real, (reps, 1))[:n]
    return np.clip(tiled + rng.normal(0.0, 0.01, tiled.shape), 0.5, 1.0)


def default_k(n: int) -> int:
    """512 of one teacher (the CLI default); 1,280 (a student's feature width) of an ensemble."""
    return 512 if n <= 1280 else 1280


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1280,12800,128000")
    ap.add_argument("--attrs", type=int, default=40)
    ap.add_argument("--k", type=int, default=None, help="default: 512 for N <= 1280, else 1280")
    ap.add_argument("--lam", type=float, default=1.0)
    ap.add_argument("--exact-max", type=int, default=12800,
                    help="largest N the exact solver is run at")
    ap.add_argument("--x", type=Path, default=None, help="a real X.npy to tile")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--md-out", type=Path)
    args = ap.parse_args()

    real = np.load(args.x) if args.x is not None else None
    attrs = real.shape[1] if real is not None else args.attrs
    rng = np.random.default_rng(args.seed)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        k = args.k or default_k(n)
        x = make_x(n, attrs, rng, real)
        fast = S.mean_field_select(x, k, solver="fast", lam=args.lam)
        row = {"n": n, "k": k, "attrs": attrs, "fast_seconds": fast.seconds,
               "fast_iterations": fast.iterations, "fast_converged": fast.converged,
               "exact_seconds": None, "exact_iterations": None, "speedup": None,
               "overlap": None, "max_message_error": None}
        if n <= args.exact_max:
            exact = S.mean_field_select(x, k, solver="exact", lam=args.lam)
            m_exact = S.messages(x, exact.q, k=k, lam=args.lam, solver="exact")
            m_fast = S.messages(x, exact.q, k=k, lam=args.lam, solver="fast")
            row.update(
                exact_seconds=exact.seconds, exact_iterations=exact.iterations,
                speedup=exact.seconds / fast.seconds,
                overlap=len(set(exact.indices.tolist()) & set(fast.indices.tolist())) / k,
                max_message_error=float(np.abs(m_fast - m_exact).max() / np.abs(m_exact).max()),
            )
        rows.append(row)
        print(f"N={n}: fast {fast.seconds:.2f}s" + (
            f", exact {row['exact_seconds']:.2f}s, overlap {row['overlap']:.4f}"
            if row["exact_seconds"] is not None else ""), flush=True)

    by_n = {r["n"]: r for r in rows}
    goals = {}
    if 12800 in by_n and by_n[12800]["speedup"] is not None:
        goals["speedup_12800_ge_20"] = by_n[12800]["speedup"] >= 20
        goals["overlap_12800_ge_0.95"] = by_n[12800]["overlap"] >= 0.95
    if 128000 in by_n:
        goals["fast_128000_under_10s"] = by_n[128000]["fast_seconds"] < 10
    result = {
        "benchmark": "selection_speed",
        "x": str(args.x) if args.x else "synthetic (beta)",
        "lam": args.lam,
        "rows": rows,
        "goals": goals,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version(), "numpy": np.__version__},
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    line = json.dumps(result)
    print(line)

    def f(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    md = [f"neuron selection, A = {attrs}, lam = {args.lam}, X: {result['x']}; "
          f"goals: {', '.join(f'{k} {v}' for k, v in goals.items()) or 'n/a'}", "",
          "| N | K | fast s | fast iters | exact s | exact iters | speed-up | top-K overlap | "
          "max message error |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['n']:,} | {r['k']:,} | {r['fast_seconds']:.2f} | {r['fast_iterations']} "
                  f"| {f(r['exact_seconds'], '.2f')} | {r['exact_iterations'] or '-'} "
                  f"| {f(r['speedup'], '.1f')} | {f(r['overlap'], '.4f')} "
                  f"| {f(r['max_message_error'], '.4%')} |")
    table = "\n".join(md) + "\n"
    print(table)
    write_results(result, table, args.json_out, args.md_out)


if __name__ == "__main__":
    main()
