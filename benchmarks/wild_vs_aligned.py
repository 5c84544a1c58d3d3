"""What misalignment costs: a whole-image model trained on aligned crops vs one trained on the
face-box crops of the wild photos, both scored on wild test crops (and on aligned ones).

The dataset is ``data synth --wild``: every person is drawn twice, as an aligned crop and in a
wild photo with its face box. Each model (``--arch``, default TNet at width 0.25, the FRL
benchmark's trunk size) trains with the same settings on one of the two variants, for every
seed; ``facedistill eval --variant`` scores it on both, thresholds searched on the val split of
the variant scored. Each run lands in ``--out/<variant>/seed<S>`` and is reused when done.
Prints a JSON line per run, then the summary JSON line and a Markdown table (mean +- std over
seeds).

    python benchmarks/wild_vs_aligned.py [--data data/wild] [--n 6000] [--epochs 3]
        [--arch tnet] [--width 0.25] [--seeds 0,1,2] [--out runs/wild_vs_aligned]
        [--json-out benchmarks/results/wild_vs_aligned.json --md-out ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from facedistill.bench.stats import over_seeds
from facedistill.config import EvalConfig, SynthConfig, TrainConfig
from facedistill.io import atomic_write_json, command_line, write_results
from facedistill.pipeline.evaluate import evaluate_checkpoint
from facedistill.pipeline.train import train

VARIANTS = ("aligned", "wild")


def run_one(args: argparse.Namespace, variant: str, seed: int) -> dict[str, Any]:
    out = args.out / variant / f"seed{seed}"
    cell = out / "cell.json"
    if cell.exists():
        return json.loads(cell.read_text())
    cfg = TrainConfig(arch=args.arch, width=args.width, size=args.size, variant=variant,
                      epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      workers=args.workers, seed=seed)
    t0 = time.perf_counter()
    train(cfg, args.data, out, resume=(out / "last.pt").exists())
    seconds = time.perf_counter() - t0
    scores = {}
    for scored in VARIANTS:
        report = evaluate_checkpoint(out, EvalConfig(split="test", variant=scored,
                                                     workers=args.workers), data=args.data)
        scores[scored] = report["mean_balanced"]
    result = {"trained_on": variant, "seed": seed, "seconds": seconds,
              "test_on_aligned": scores["aligned"], "test_on_wild": scores["wild"],
              "run": str(out)}
    atomic_write_json(cell, result)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("data/wild"))
    ap.add_argument("--n", type=int, default=6000)
    ap.add_argument("--data-size", type=int, default=64)
    ap.add_argument("--arch", default="tnet")
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", type=Path, default=Path("runs/wild_vs_aligned"))
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--md-out", type=Path)
    args = ap.parse_args()
    from facedistill.data.synth import generate

    generate(args.data, SynthConfig(n=args.n, size=args.data_size, seed=0, wild=True,
                                    images_per_identity=5))
    cells = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for variant in VARIANTS:
            cell = run_one(args, variant, seed)
            print(json.dumps(cell), flush=True)
            cells.append(cell)
    summary = {v: {"test_on_aligned": over_seeds([c["test_on_aligned"] for c in cells
                                             if c["trained_on"] == v]),
                   "test_on_wild": over_seeds([c["test_on_wild"] for c in cells
                                          if c["trained_on"] == v]),
                   "seconds": over_seeds([c["seconds"] for c in cells if c["trained_on"] == v])}
               for v in VARIANTS}
    lines = [f"{args.arch} x{args.width:g} at {args.size} px, {args.epochs} epochs, "
             f"{args.n} synthetic people drawn aligned and wild, seeds {args.seeds}: mean "
             "balanced accuracy on test (%), thresholds from the scored variant's val split, "
             "mean +- std over seeds.", "",
             "| trained on | scored on aligned crops | scored on wild face-box crops | train s |",
             "|---|---:|---:|---:|"]
    for v, row in summary.items():
        a, w = row["test_on_aligned"], row["test_on_wild"]
        lines.append(f"| {v} | {100 * a['mean']:.2f} +- {100 * a['std']:.2f} | "
                     f"{100 * w['mean']:.2f} +- {100 * w['std']:.2f} | "
                     f"{row['seconds']['mean']:.0f} |")
    table = "\n".join(lines) + "\n"
    result = {"benchmark": "wild_vs_aligned", "command": command_line(), "cells": cells,
              "summary": summary, "config": {k: str(v) for k, v in vars(args).items()}}
    print(json.dumps({"summary": summary}))
    print(table)
    write_results(result, table, args.json_out, args.md_out)


if __name__ == "__main__":
    main()
