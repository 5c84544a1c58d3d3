"""The cascade paper's Table 1 on our wild faces: face-region localization with and without
multi-net learning, over seeds; and how well the learned boxes sit on the wild landmarks.

For every seed and MNL mode an FRL net (``facedistill train --arch frl --mnl MODE``) trains on
the wild variant of the synthetic dataset (face-box crops with a margin, no landmark
alignment):

* ``off``    - the localization branch alone (the paper's "without MNL");
* ``joint``  - both branches on the labels, one shared trunk;
* ``mutual`` - joint, plus each branch fitting the other's detached probabilities.

Scores, on the wild test split with thresholds searched on val: the mean balanced accuracy of
the localization branch (every mode) and of the classification branch (joint, mutual). Boxes:
per attribute group with landmarks (eyes, nose, mouth), the share of test images whose box
contains the group's landmarks and the mean distance of its centre to them, for the learned
boxes and for a fixed box at the mean landmark position of the training images (the best box a
system without a detector could place; a flat map falls back to the group's mean CAM box),
on the test crops and on crops of face boxes loosened by ``--jitter`` (a loose detector's),
where a fixed box drifts off the face. The heat-map rule of the boxes is chosen on val (the
joint runs). Each run lands in ``--out/<mode>/seed<S>``; a finished one is reused, an
unfinished one resumes. Prints a JSON line per run, then the summary JSON line and a Markdown
table (mean +- std over seeds); ``--png-out`` draws CAM overlays and boxes of test faces for
the last joint run.

    python benchmarks/frl_table1.py [--data data/wild] [--n 6000] [--epochs 3] [--width 0.25]
        [--seeds 0,1,2] [--modes off,joint,mutual] [--out runs/frl]
        [--json-out benchmarks/results/frl_table1.json --md-out ... --png-out ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from facedistill import metrics
from facedistill.attributes import ATTRIBUTES
from facedistill.bench.stats import over_seeds
from facedistill.config import SynthConfig, TrainConfig
from facedistill.io import atomic_path, atomic_write_json, command_line, write_results
from facedistill.pipeline.frl import (
    GROUPS,
    LANDMARKS_OF,
    MAP_RULES,
    FRLOutputs,
    box_hits,
    cam_boxes,
    cam_priors,
    frl_outputs,
    landmark_priors,
)
from facedistill.pipeline.train import train


def ensure_data(args: argparse.Namespace) -> None:
    from facedistill.data.synth import generate

    generate(args.data, SynthConfig(n=args.n, size=args.data_size, seed=args.data_seed,
                                    wild=True, images_per_identity=5))


def jittered_boxes(args: argparse.Namespace, run: str) -> dict[str, Any]:
    """The box scores on test crops of loosened face boxes (``--jitter``): the fixed box was
    placed on the training crops, as a detector-free system would."""
    test = frl_outputs(run, str(args.data), "test", workers=args.workers,
                       box_jitter=args.jitter, jitter_seed=1)
    trainset = frl_outputs(run, str(args.data), "train", workers=args.workers,
                           limit=args.prior_images)
    return box_hits(test, {**cam_priors(trainset), **landmark_priors(trainset)})


def run_one(args: argparse.Namespace, mode: str, seed: int) -> dict[str, Any]:
    out = args.out / mode / f"seed{seed}"
    cell = out / "cell.json"
    if cell.exists():
        done = json.loads(cell.read_text())
        if done.get("jitter") != args.jitter:  # a cell from before --jitter: score it now
            done |= {"jitter": args.jitter, "boxes_jitter": jittered_boxes(args, done["run"])}
            atomic_write_json(cell, done)
        return done
    cfg = TrainConfig(arch="frl", mnl=mode, width=args.width, size=args.size,
                      variant="wild", epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      workers=args.workers, seed=seed, box_jitter=args.train_jitter)
    t0 = time.perf_counter()
    train(cfg, args.data, out, resume=(out / "last.pt").exists())
    seconds = time.perf_counter() - t0
    val = frl_outputs(str(out), str(args.data), "val", workers=args.workers)
    test = frl_outputs(str(out), str(args.data), "test", workers=args.workers)
    trainset = frl_outputs(str(out), str(args.data), "train", workers=args.workers,
                           limit=args.prior_images)
    names = list(ATTRIBUTES)
    loc = metrics.evaluate(val.loc, val.labels, test.loc, test.labels, names)
    cls = metrics.evaluate(val.cls, val.labels, test.cls, test.labels, names)
    priors = {**cam_priors(trainset), **landmark_priors(trainset)}
    result = {"mode": mode, "seed": seed, "seconds": seconds,
              "loc_mean_balanced": loc["mean_balanced"],
              "cls_mean_balanced": cls["mean_balanced"] if mode != "off" else None,
              "boxes": box_hits(test, priors), "n_test": int(len(test.labels)),
              "run": str(out), "jitter": args.jitter,
              "boxes_jitter": jittered_boxes(args, str(out))}
    atomic_write_json(cell, result)
    return result


def alignment(test: FRLOutputs, size: int) -> dict[str, Any]:
    """How aligned the face-box crops already are: the spread (std, % of the crop) of each wild
    landmark's position over the test crops, and the eye distance in crop pixels."""
    assert test.landmarks is not None
    names = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")
    spread = {n: [float(100 * v) for v in test.landmarks[:, i].std(axis=0)]
              for i, n in enumerate(names)}
    eyes = np.hypot(*(test.landmarks[:, 1] - test.landmarks[:, 0]).T) * size
    return {"landmark_std_pct_xy": spread, "eye_distance_px": over_seeds(list(eyes)),
            "crop_px": size}


def summarize(cells: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in dict.fromkeys(c["mode"] for c in cells):
        mine = [c for c in cells if c["mode"] == mode]
        row: dict[str, Any] = {"loc": over_seeds([c["loc_mean_balanced"] for c in mine])}
        if mine[0]["cls_mean_balanced"] is not None:
            row["cls"] = over_seeds([c["cls_mean_balanced"] for c in mine])
        for group in LANDMARKS_OF:
            for key in ("learned", "prior", "learned_dist", "prior_dist", "fell_back"):
                row[f"{group}_{key}"] = over_seeds([c["boxes"][group][key] for c in mine])
                row[f"jitter_{group}_{key}"] = over_seeds([c["boxes_jitter"][group][key]
                                                           for c in mine])
        row["seconds"] = over_seeds([c["seconds"] for c in mine])
        out[mode] = row
    return out


def _pm(s: dict[str, float], scale: float = 100.0, digits: int = 2) -> str:
    return f"{scale * s['mean']:.{digits}f} +- {scale * s['std']:.{digits}f}"


def map_rules(args: argparse.Namespace, runs: list[str]) -> dict[str, Any]:
    """Which heat-map rule (:data:`~facedistill.pipeline.frl.MAP_RULES`) places the boxes
    best: chosen on the val split's loosened crops (mean centre distance over the groups and
    runs), reported on test's."""
    per_rule: dict[str, dict[str, list[Any]]] = {r: {"val": [], "test": []} for r in MAP_RULES}
    for run in runs:
        val = frl_outputs(run, str(args.data), "val", workers=args.workers,
                          box_jitter=args.jitter, jitter_seed=2)
        test = frl_outputs(run, str(args.data), "test", workers=args.workers,
                           box_jitter=args.jitter, jitter_seed=1)
        trainset = frl_outputs(run, str(args.data), "train", workers=args.workers,
                               limit=args.prior_images)
        for rule in MAP_RULES:
            priors = {**cam_priors(trainset, rule=rule), **landmark_priors(trainset)}
            on_val = box_hits(val, priors, rule=rule)
            per_rule[rule]["val"].append(np.mean([on_val[g]["learned_dist"]
                                                  for g in LANDMARKS_OF]))
            per_rule[rule]["test"].append(box_hits(test, priors, rule=rule))
    out: dict[str, Any] = {}
    for rule, got in per_rule.items():
        out[rule] = {"val_distance": over_seeds(got["val"])}
        for g in LANDMARKS_OF:
            for key in ("learned", "prior", "learned_dist", "prior_dist"):
                out[rule][f"{g}_{key}"] = over_seeds([t[g][key] for t in got["test"]])
    chosen = min(out, key=lambda r: out[r]["val_distance"]["mean"])
    return {"chosen": chosen, "rules": out}


def rules_markdown(rules: dict[str, Any], mode: str, jitter: float) -> str:
    lines = ["", f"Heat-map rules for the boxes ({mode} runs, crops of boxes loosened by "
             f"{100 * jitter:.0f}%): chosen on val by the mean centre distance, then test's "
             "centre distance (% of the crop), learned vs fixed box.", "",
             "| rule | val distance | eyes | nose | mouth |", "|---|---:|---:|---:|---:|"]
    for rule, row in rules["rules"].items():
        mark = " (chosen)" if rule == rules["chosen"] else ""
        cells = " | ".join(f"{100 * row[f'{g}_learned_dist']['mean']:.1f} | "
                           f"{100 * row[f'{g}_prior_dist']['mean']:.1f}"
                           .replace(" | ", " vs ", 1) for g in LANDMARKS_OF)
        lines.append(f"| {rule}{mark} | {100 * row['val_distance']['mean']:.1f} | {cells} |")
    return "\n".join(lines) + "\n"


def markdown(summary: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"FRL on wild synthetic faces ({args.n} images, {args.size} px crops, width "
        f"{args.width:g}, {args.epochs} epochs, training boxes loosened by up to "
        f"{100 * args.train_jitter:.0f}%, seeds {args.seeds}); mean balanced accuracy on "
        "test (%), thresholds from val; mean +- std over seeds.", "",
        "| MNL | localization branch | classification branch | train s |",
        "|---|---:|---:|---:|"]
    for mode, row in summary.items():
        cls = _pm(row["cls"]) if "cls" in row else "-"
        lines.append(f"| {mode} | {_pm(row['loc'])} | {cls} | "
                     f"{row['seconds']['mean']:.0f} |")
    for prefix, what in (("", "the test crops"),
                         ("jitter_", f"test crops of face boxes loosened by up to "
                                     f"{100 * args.jitter:.0f}% (shift and scale)")):
        lines += ["", f"Boxes vs the wild landmarks on {what}: share containing the group's "
                  "landmarks (%) and centre distance to them (% of the crop), learned vs a fixed "
                  "box at the training crops' mean landmark position.", "",
                  "| MNL | group | contains: learned | contains: fixed | distance: learned | "
                  "distance: fixed | flat map |", "|---|---|---:|---:|---:|---:|---:|"]
        for mode, row in summary.items():
            for g in LANDMARKS_OF:
                k = f"{prefix}{g}"
                lines.append(f"| {mode} | {g} | {_pm(row[f'{k}_learned'], digits=1)} | "
                             f"{_pm(row[f'{k}_prior'], digits=1)} | "
                             f"{_pm(row[f'{k}_learned_dist'], digits=1)} | "
                             f"{_pm(row[f'{k}_prior_dist'], digits=1)} | "
                             f"{_pm(row[f'{k}_fell_back'], digits=1)} |")
    return "\n".join(lines) + "\n"


def draw(test: FRLOutputs, images: np.ndarray, priors: dict[str, tuple[float, float]],
         path: Path, count: int = 6) -> None:
    """CAM overlays (one column per group) with the group's box, for ``count`` test faces."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from facedistill.pipeline.frl import group_maps

    groups = list(GROUPS)
    fig, axes = plt.subplots(count, len(groups) + 1, figsize=(1.6 * (len(groups) + 1),
                                                                1.6 * count))
    for r in range(count):
        heats = group_maps(test.cams[r])
        boxes = cam_boxes(test.cams[r], priors)
        axes[r, 0].imshow(images[r])
        axes[r, 0].set_title("crop" if r == 0 else "", fontsize=8)
        if test.landmarks is not None:
            pts = test.landmarks[r] * images.shape[1]
            axes[r, 0].plot(pts[:, 0], pts[:, 1], "c.", markersize=4)
        for c, g in enumerate(groups, start=1):
            ax = axes[r, c]
            ax.imshow(images[r])
            side = images.shape[1]
            ax.imshow(heats[g], cmap="jet", alpha=0.45, extent=(0, side, side, 0),
                      interpolation="bilinear")
            x0, y0, x1, y1 = boxes[g].corners()
            ax.add_patch(Rectangle((x0 * side, y0 * side), (x1 - x0) * side,
                                   (y1 - y0) * side, fill=False,
                                   edgecolor="white" if not boxes[g].prior else "grey", lw=1.2))
            if r == 0:
                ax.set_title(g, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


def crops(run: str, data: Path, count: int) -> np.ndarray:
    """The first ``count`` wild test crops as the net sees them (RGB uint8)."""
    from facedistill.data.celeba import CelebAIndex
    from facedistill.nn.checkpoint import load_checkpoint
    from facedistill.runtime.images import load_image
    from facedistill.runtime.preprocess import Preprocess

    ckpt = load_checkpoint(run)
    pre = Preprocess.from_record(ckpt["preprocess"])
    index = CelebAIndex.load(data, variant="wild")
    out = []
    for pos in index.select("test")[:count]:
        img = load_image(index.image_path(int(pos)))
        out.append(np.asarray(pre.resize(img, box=index.bbox[pos].tolist())))
    return np.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("data/wild"))
    ap.add_argument("--n", type=int, default=6000)
    ap.add_argument("--data-size", type=int, default=64, help="synth --size of the dataset")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=64, help="crop side the nets see")
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--modes", default="off,joint,mutual")
    ap.add_argument("--train-jitter", type=float, default=0.0,
                    help="train on face boxes loosened by up to this fraction (train --box-jitter)")
    ap.add_argument("--jitter", type=float, default=0.15,
                    help="loosen the test face boxes by up to this fraction (shift, scale)")
    ap.add_argument("--prior-images", type=int, default=1000,
                    help="training images the fixed boxes and fallbacks are averaged over")
    ap.add_argument("--out", type=Path, default=Path("runs/frl"))
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--md-out", type=Path)
    ap.add_argument("--png-out", type=Path)
    args = ap.parse_args()
    ensure_data(args)
    cells = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for mode in args.modes.split(","):
            cell = run_one(args, mode, seed)
            print(json.dumps(cell), flush=True)
            cells.append(cell)
    summary = summarize(cells)
    # the boxes' analyses and pictures use the MNL runs (joint), not the test's best mode
    best = "joint" if "joint" in summary else next(iter(summary))
    best_runs = [c["run"] for c in cells if c["mode"] == best]
    best_run = best_runs[-1]
    test = frl_outputs(best_run, str(args.data), "test")
    aligned = alignment(test, args.size)
    rules = map_rules(args, best_runs)
    result = {"benchmark": "frl_table1", "command": command_line(), "cells": cells,
              "summary": summary, "alignment": aligned, "map_rules": rules,
              "config": {k: str(v) for k, v in vars(args).items()}}
    table = markdown(summary, args) + rules_markdown(rules, best, args.jitter)
    spread = max(max(v) for v in aligned["landmark_std_pct_xy"].values())
    table += (f"\nThe face-box crops are nearly aligned already: every wild landmark's position "
              f"varies by at most {spread:.1f}% of the crop (std over the test crops), the eyes "
              f"are {aligned['eye_distance_px']['mean']:.1f} +- "
              f"{aligned['eye_distance_px']['std']:.1f} px apart in {args.size} px crops.\n")
    print(json.dumps({"summary": summary}))
    print(table)
    write_results(result, table, args.json_out, args.md_out)
    if args.png_out:
        trainset = frl_outputs(best_run, str(args.data), "train", limit=args.prior_images)
        draw(test, crops(best_run, args.data, 6), cam_priors(trainset), args.png_out)


if __name__ == "__main__":
    main()
