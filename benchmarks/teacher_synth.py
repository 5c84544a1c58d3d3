"""The synthetic dataset's quality bar: is it learnable but not saturated?

Trains the demo teacher on the embedded synthetic dataset (or reuses a finished run), scores it
on the test split with thresholds searched on val (Eq 7-9), and trains a linear classifier on
the raw pixels as a floor. The bar:

* teacher mean balanced accuracy on test in [82%, 95%], with >= 8 attributes under 90%;
* the linear probe on raw pixels >= 5 points below the teacher;
* every attribute's prevalence within 5 points of CelebA's.

Prints one JSON line, then a Markdown table; ``--json-out`` / ``--md-out`` save them.

    python benchmarks/teacher_synth.py [--config configs/demo.toml] [--data data/synth]
        [--teacher runs/demo/teacher | --out runs/bench-teacher [--arch ... --epochs ...]]

"The demo teacher" is the one configs/demo.toml trains ([train]); ``--teacher`` scores a
finished run of it (the pipeline's) instead of training another. The pixel probe sees the
images at the teacher's input size.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from facedistill import metrics
from facedistill.attributes import ATTRIBUTES, CELEBA_PREVALENCE
from facedistill.config import TrainConfig
from facedistill.data.celeba import CelebAIndex
from facedistill.data.synth import SynthConfig, generate
from facedistill.io import command_line, write_results
from facedistill.nn.checkpoint import load_checkpoint
from facedistill.pipeline.data.dataset import CelebA
from facedistill.pipeline.evaluate import evaluate_checkpoint
from facedistill.pipeline.train import train

BAR = {"mean_low": 0.82, "mean_high": 0.95, "hard_below": 0.90, "hard_count": 8,
       "probe_gap": 0.05, "prevalence_tolerance": 0.05}


def pixels(index: CelebAIndex, split: str, size: int) -> tuple[torch.Tensor, np.ndarray]:
    """The split's eval-preprocessed images flattened: [N, 3*size*size] float32, labels."""
    ds = CelebA(index, split, size=size)
    loader = torch.utils.data.DataLoader(ds, batch_size=256, num_workers=1)
    xs, ys = [], []
    for x, y in loader:
        xs.append(x.flatten(1))
        ys.append(y)
    return torch.cat(xs), torch.cat(ys).numpy()


def linear_probe(index: CelebAIndex, size: int, epochs: int, seed: int) -> dict:
    """Logistic regression per attribute on raw pixels (one linear layer, AdamW, full data)."""
    torch.manual_seed(seed)
    xtr, ytr = pixels(index, "train", size)
    xva, yva = pixels(index, "val", size)
    xte, yte = pixels(index, "test", size)
    mean, std = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xva, xte = ((x - mean) / std for x in (xtr, xva, xte))
    layer = torch.nn.Linear(xtr.shape[1], len(ATTRIBUTES))
    opt = torch.optim.AdamW(layer.parameters(), lr=1e-3, weight_decay=1e-2)
    ytr_t = torch.from_numpy(ytr)
    best = (-1.0, None)
    for _ in range(epochs):
        perm = torch.randperm(len(xtr))
        for i in range(0, len(xtr), 256):
            idx = perm[i:i + 256]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(layer(xtr[idx]),
                                                                        ytr_t[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            val_scores = layer(xva).numpy()
        score = metrics.mean_balanced_accuracy(val_scores, yva)
        if score > best[0]:  # early stopping on val, as the teacher's best.pt
            best = (score, {k: v.clone() for k, v in layer.state_dict().items()})
    layer.load_state_dict(best[1])
    with torch.no_grad():
        val_scores, test_scores = layer(xva).numpy(), layer(xte).numpy()
    return metrics.evaluate(val_scores, yva, test_scores, yte, list(ATTRIBUTES))


def demo_recipe(config: Path) -> tuple[dict, dict]:
    """The demo's teacher recipe ([train]) and dataset ([data.synth]) from its TOML."""
    from facedistill.config import read_toml

    toml = read_toml(config)
    keys = ("arch", "width", "size", "epochs", "warmup", "lr", "pos_weight", "batch_size", "seed")
    train_cfg = {k: v for k, v in toml.get("train", {}).items() if k in keys}
    known = {f.name for f in fields(SynthConfig)}
    synth = {k: v for k, v in toml.get("data", {}).get("synth", {}).items() if k in known}
    return train_cfg, synth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=Path("configs/demo.toml"),
                    help="where the demo teacher's recipe and dataset come from")
    ap.add_argument("--teacher", type=Path,
                    help="score this finished run (e.g. runs/demo/teacher) instead of training")
    ap.add_argument("--data", type=Path, default=Path("data/synth"))
    ap.add_argument("--out", type=Path, default=Path("runs/bench-teacher"))
    for name, kind in (("arch", str), ("width", float), ("epochs", int), ("size", int),
                       ("warmup", float), ("lr", float), ("seed", int)):
        ap.add_argument(f"--{name}", type=kind, help="overrides the config's [train] value")
    ap.add_argument("--pos-weight", choices=("none", "sqrt", "balanced"))
    ap.add_argument("--probe-epochs", type=int, default=15)
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--md-out", type=Path)
    args = ap.parse_args()

    recipe, synth = demo_recipe(args.config)
    for name in ("arch", "width", "epochs", "size", "warmup", "lr", "seed", "pos_weight"):
        if getattr(args, name) is not None:
            recipe[name] = getattr(args, name)
    if not (args.data / "list_attr_celeba.txt").exists():
        generate(args.data, SynthConfig(**synth))
    index = CelebAIndex.load(args.data)
    start = time.perf_counter()
    run = args.teacher or args.out
    if args.teacher is None:
        cfg = TrainConfig(**recipe)
        finished = (run / "last.pt").exists() and \
            load_checkpoint(run, prefer="last.pt").get("epoch") == cfg.epochs
        if not finished:
            train(cfg, args.data, run, resume=(run / "last.pt").exists(), index=index)
    train_seconds = time.perf_counter() - start
    summary = load_checkpoint(run)
    recipe = {k: summary["config"].get(k) for k in ("arch", "width", "size", "epochs", "lr",
                                                    "warmup", "pos_weight")}
    teacher = evaluate_checkpoint(run, data=args.data, split="test")
    probe = linear_probe(index, recipe["size"], args.probe_epochs, summary["config"]["seed"])

    prevalence = index.attrs.mean(axis=0)
    prev_gap = {n: float(prevalence[j] - CELEBA_PREVALENCE[n] / 100.0)  # table in percent
                for j, n in enumerate(ATTRIBUTES)}
    rows = []
    for t, p in zip(teacher["attributes"], probe["attributes"], strict=True):
        rows.append({"attribute": t["name"], "teacher": t["balanced"], "probe": p["balanced"],
                     "prevalence": float(prevalence[ATTRIBUTES.index(t["name"])]),
                     "celeba_prevalence": CELEBA_PREVALENCE[t["name"]] / 100.0})
    hard = [r["attribute"] for r in rows if r["teacher"] < BAR["hard_below"]]
    mean_t, mean_p = teacher["mean_balanced"], probe["mean_balanced"]
    checks = {
        "teacher_mean_in_range": BAR["mean_low"] <= mean_t <= BAR["mean_high"],
        "hard_attributes": len(hard) >= BAR["hard_count"],
        "probe_gap": mean_t - mean_p >= BAR["probe_gap"],
        "prevalence": max(abs(v) for v in prev_gap.values()) <= BAR["prevalence_tolerance"],
    }
    result = {
        "benchmark": "teacher_synth",
        "teacher": {**recipe, "run": str(run), "best_epoch": summary.get("epoch"),
                    "precision": summary.get("precision")},
        "config": str(args.config),
        "data": str(args.data), "images": len(index), "splits": index.split_sizes(),
        "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
        "train_seconds": None if args.teacher else round(train_seconds, 1),
        "teacher_mean_balanced": mean_t, "teacher_mean_accuracy": teacher["mean_accuracy"],
        "probe_mean_balanced": mean_p, "gap_points": round(100 * (mean_t - mean_p), 2),
        "hard_attributes": hard, "max_prevalence_gap": max(abs(v) for v in prev_gap.values()),
        "bar": BAR, "checks": checks, "bar_met": all(checks.values()), "rows": rows,
        "command": command_line(),
    }
    md = [f"teacher {recipe['arch']} x{recipe['width']:g} @{recipe['size']}px, "
          f"{recipe['epochs']} epochs: "
          f"mean balanced accuracy {100 * mean_t:.2f}% (test; thresholds from val); "
          f"linear probe on raw pixels {100 * mean_p:.2f}%; "
          f"{len(hard)} attributes under 90%; bar met: {result['bar_met']}", "",
          "| attribute | teacher bal. acc. | pixel probe | prevalence | CelebA |",
          "|---|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: r["teacher"]):
        md.append(f"| {r['attribute']} | {100 * r['teacher']:.2f} | {100 * r['probe']:.2f} | "
                  f"{100 * r['prevalence']:.1f} | {100 * r['celeba_prevalence']:.1f} |")
    md.append(f"| **mean** | **{100 * mean_t:.2f}** | **{100 * mean_p:.2f}** | | |")
    md += ["", f"Made by: `{result['command']}`"]
    print(json.dumps(result))
    print()
    print("\n".join(md))
    write_results(result, "\n".join(md) + "\n", args.json_out, args.md_out)


if __name__ == "__main__":
    main()
