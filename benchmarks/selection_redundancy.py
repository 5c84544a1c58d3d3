"""Does the selection remove redundancy? The response kernel on a trained teacher's responses.

On the validation split (where the selection's defaults are chosen), for every ``(bits,
shared, lam)`` of a grid and both solvers:

* mean ``|corr|`` of the selected neurons' responses, against a random set of the same size and
  the top-K by informativeness alone, and the mean informativeness ``u`` of each;
* planted duplicates: copies (1% noise) of the strongest neuron of ``--dups`` different
  response clusters are added, and the share of those pairs that the selection splits (keeps
  one, not both), among the pairs it keeps anything of;
* speed at ``N = --tiles x 1280`` (an ensemble of similar teachers: the responses tiled with
  30% noise): fast vs exact (median of ``--speed-rounds`` interleaved rounds), the exact
  kernel's correlation product alone as a floor, and both selections' quality.

Prints one JSON line, then Markdown tables; ``--json-out`` / ``--md-out`` save them.

    python benchmarks/selection_redundancy.py [--teacher runs/demo/teacher] [--data data/synth]
        [--k 512] [--bits 24] [--shared 0,0.008,0.016,0.03] [--lams 32,64,128,256] [--tiles 10]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from facedistill.bench.environment import cpu_model
from facedistill.io import command_line, write_results
from facedistill.pipeline import selection as PS
from facedistill.runtime.cpu import int8_class
from facedistill.selection import solver as S


def planted(r: np.ndarray, u: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, list]:
    """``r`` with ``count`` near-copies appended: of the strongest neuron of ``count`` different
    groups of correlated neurons (a neuron is skipped when it is > 0.9 correlated with one
    already copied). Returns the responses and the (original, copy) column pairs."""
    z = S.standardise(r)
    picked: list[int] = []
    for i in np.argsort(-u):
        if all(abs(float(z[:, i] @ z[:, j])) < 0.9 for j in picked):
            picked.append(int(i))
        if len(picked) == count:
            break
    rng = np.random.default_rng(seed)
    src = r[:, picked]
    copies = src + 0.01 * src.std(0) * rng.standard_normal(src.shape).astype(np.float32)
    n0 = r.shape[1]
    return np.concatenate([r, copies], 1), [(p, n0 + i) for i, p in enumerate(picked)]


def split_share(indices: np.ndarray, pairs: list) -> tuple[float, int]:
    chosen = set(indices.tolist())
    kept = [p for p in pairs if p[0] in chosen or p[1] in chosen]
    both = sum(p[0] in chosen and p[1] in chosen for p in kept)
    return (1.0 - both / len(kept) if kept else float("nan")), len(kept)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teacher", type=Path, default=Path("runs/demo/teacher"))
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--split", default="val")
    ap.add_argument("--k", type=int, default=512)
    ap.add_argument("--bits", default="24")
    ap.add_argument("--shared", default="0,0.008,0.016,0.03")
    ap.add_argument("--lams", default="32,64,128,256")
    ap.add_argument("--dups", type=int, default=32)
    ap.add_argument("--tiles", type=int, default=10)
    ap.add_argument("--speed-rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--md-out", type=Path)
    args = ap.parse_args()

    resp = PS.collect_responses([args.teacher], args.data, args.split,
                               cache_dir=args.teacher / "selection" / "cache")
    r, y = resp.features, resp.labels
    x, _ = S.attribute_accuracy(r, y)
    rd, pairs = planted(r, S.informativeness(S.normalise(x)), args.dups, args.seed)
    xd, _ = S.attribute_accuracy(rd, y)
    rows = []
    grid = [(bits, shared, lam) for bits in [int(b) for b in args.bits.split(",")]
            for shared in [float(v) for v in args.shared.split(",")]
            for lam in [float(v) for v in args.lams.split(",")]]
    for bits, shared, lam in [(S.DEFAULT_BITS, 0.0, 0.0)] + grid:  # lam = 0: top-K by u
        for solver in ("exact", "fast"):
            kw = {"solver": solver, "bits": bits, "shared": shared, "lam": lam}
            sel = S.mean_field_select(x, args.k, responses=r, **kw)
            red = S.redundancy_summary(r, sel.indices, sel.u)
            dup = S.mean_field_select(xd, args.k, responses=rd, **kw)
            share, kept = split_share(dup.indices, pairs)
            rows.append({"bits": bits, "shared": shared, "lam": lam, "solver": solver, **red,
                         "dup_split": share, "dup_pairs_kept": kept, "seconds": sel.seconds})
            print(json.dumps(rows[-1]), flush=True)

    rng = np.random.default_rng(args.seed)
    big = np.concatenate([r + 0.3 * r.std(0) * rng.standard_normal(r.shape).astype(np.float32)
                          for _ in range(args.tiles)], 1)
    xb, _ = S.attribute_accuracy(big, y)
    kb = 1280
    speed: dict[str, list[float]] = {"fast": [], "exact": []}
    chosen = {}
    for _ in range(args.speed_rounds):  # interleaved rounds: both solvers see the same noise
        for solver in ("fast", "exact"):
            t0 = time.perf_counter()
            sel = S.mean_field_select(xb, kb, solver=solver, responses=big)
            speed[solver].append(time.perf_counter() - t0)
            chosen[solver] = sel
    zb = S.standardise(big)
    t0 = time.perf_counter()
    _ = zb.T @ zb  # the N x N correlations alone: what any exact kernel has to pay at least
    gemm = time.perf_counter() - t0
    fast_s, exact_s = float(np.median(speed["fast"])), float(np.median(speed["exact"]))
    overlap = len(set(chosen["fast"].indices.tolist())
                  & set(chosen["exact"].indices.tolist())) / kb
    speed_rec = {"n": int(big.shape[1]), "k": kb, "rounds": args.speed_rounds,
                 "fast_seconds": fast_s, "exact_seconds": exact_s,
                 "fast_all": speed["fast"], "exact_all": speed["exact"],
                 "speedup": exact_s / fast_s, "correlation_gemm_seconds": gemm,
                 "speedup_vs_gemm": gemm / fast_s,
                 "mean_abs_corr_fast": S.mean_abs_corr(zb, chosen["fast"].indices),
                 "mean_abs_corr_exact": S.mean_abs_corr(zb, chosen["exact"].indices),
                 "mean_u_fast": float(chosen["fast"].u[chosen["fast"].indices].mean()),
                 "mean_u_exact": float(chosen["exact"].u[chosen["exact"].indices].mean()),
                 "overlap": overlap, "bits": S.DEFAULT_BITS, "tables": S.DEFAULT_TABLES}

    default = next((row for row in rows if row["bits"] == S.DEFAULT_BITS
                    and row["shared"] == S.DEFAULT_SHARED
                    and row["lam"] == S.DEFAULT_LAM["response"] and row["solver"] == "fast"),
                   None)
    result = {"benchmark": "selection_redundancy", "teacher": str(args.teacher),
              "split": args.split, "images": int(r.shape[0]), "neurons": int(r.shape[1]),
              "k": args.k, "planted_pairs": len(pairs), "rows": rows, "speed": speed_rec,
              "defaults": {"bits": S.DEFAULT_BITS, "shared": S.DEFAULT_SHARED,
                           "lam": S.DEFAULT_LAM["response"], "tables": S.DEFAULT_TABLES},
              "default_row": default, "cpu": cpu_model()[0] or platform.machine(),
              "cpu_class": int8_class(),
              "command": command_line()}
    md = [f"Neuron selection on `{args.teacher}` ({args.split} split, {r.shape[0]} images): "
          f"K = {args.k} of {r.shape[1]}; {len(pairs)} planted near-copies of strong neurons. "
          f"Defaults: bits = {S.DEFAULT_BITS}, shared = {S.DEFAULT_SHARED:g}, "
          f"lam = {S.DEFAULT_LAM['response']:g}, "
          f"{S.DEFAULT_TABLES} hash tables. CPU: {result['cpu']} ({result['cpu_class']}).", "",
          "| bits | shared | lam | solver | mean abs corr: selected | random | top-K by u "
          "| mean u: selected | random | top-K | duplicates split | s |",
          "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        md.append(f"| {row['bits']} | {row['shared']:g} | {row['lam']:g} | {row['solver']} "
                  f"| {row['mean_abs_corr_selected']:.3f} | {row['mean_abs_corr_random']:.3f} "
                  f"| {row['mean_abs_corr_top_u']:.3f} | {row['mean_u_selected']:.4f} "
                  f"| {row['mean_u_random']:.4f} | {row['mean_u_top_u']:.4f} "
                  f"| {100 * row['dup_split']:.0f}% of {row['dup_pairs_kept']} "
                  f"| {row['seconds']:.2f} |")
    sp = speed_rec
    md += ["", f"Speed at N = {sp['n']} (K = {kb}, responses tiled {args.tiles}x with 30% "
               f"noise; median of {sp['rounds']} interleaved rounds): fast "
               f"{sp['fast_seconds']:.2f} s, exact {sp['exact_seconds']:.2f} s, "
               f"**{sp['speedup']:.1f}x**. The exact kernel's N x N correlation product alone "
               f"takes {sp['correlation_gemm_seconds']:.2f} s ({sp['speedup_vs_gemm']:.1f}x the "
               f"fast solver). Same-quality check (the tiles are near-copies, so which copy is "
               f"kept is arbitrary; top-K overlap {sp['overlap']:.3f}): mean abs corr fast "
               f"{sp['mean_abs_corr_fast']:.3f} vs exact {sp['mean_abs_corr_exact']:.3f}, "
               f"mean u {sp['mean_u_fast']:.4f} vs {sp['mean_u_exact']:.4f}.", "",
           f"Made by: `{result['command']}`"]
    print(json.dumps(result))
    print()
    print("\n".join(md))
    write_results(result, "\n".join(md) + "\n", args.json_out, args.md_out)


if __name__ == "__main__":
    main()
