"""The cascade paper's Table 1 on our wild faces: face-region localization with and without
multi-net learning, over seeds; and how well the learned boxes sit on the wild landmarks.

For every seed and MNL mode an FRL net (``facedistill train --arch frl --mnl MODE``) trains on
the wild variant of the synthetic dataset: face-box crops with a margin, no landmark alignment,
or with ``--frame photo`` the whole photos padded to squares (the net must find the face too):

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
where a fixed box drifts off the face; for photos, also beside a fixed box in the true face box
(what a system with a face detector places). Distances are in face-crop widths for both
frames. The heat-map rule of the boxes is chosen on val (the joint runs) and used for every
mode. Each run lands in ``--out/<mode>/seed<S>``; a finished one is reused, an
unfinished one resumes. Prints a JSON line per run, then the summary JSON line and a Markdown
table (mean +- std over seeds); ``--png-out`` draws CAM overlays and boxes of test faces for
the last joint run.

    python benchmarks/frl_table1.py [--data data/wild] [--n 6000] [--epochs 3] [--width 0.25]
        [--seeds 0,1,2] [--modes off,joint,mutual] [--frame face|photo] [--out runs/frl]
        [--json-out benchmarks/results/frl_table1.json --md-out ... --png-out ...]
"""

from __future__ import annotations

import argparse
import json
import os
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


CELL_FORMAT = 2  # cells score every heat-map rule (1: minmax only)


def score_boxes(args: argparse.Namespace, run: str) -> dict[str, Any]:
    """Every heat-map rule's box scores for one run: on the test images, on test crops of
    loosened face boxes (``--jitter``; a face-crop net only) and the mean centre distance on
    val (the loosened crops for a face-crop net, as the rule is chosen where a fixed box fails),
    against fixed boxes placed on the training images (no localization) and, for a net that
    sees the photo, a fixed box in the face detector's box."""
    def outputs(split: str, **kw: Any) -> FRLOutputs:
        return frl_outputs(run, str(args.data), split, workers=args.workers, **kw)

    loosen = {"box_jitter": args.jitter} if args.frame == "face" else {}
    test, val = outputs("test"), outputs("val", jitter_seed=2, **loosen)
    test_j = outputs("test", jitter_seed=1, **loosen) if loosen else None
    trainset = outputs("train", limit=args.prior_images)
    fixed, detector = landmark_priors(trainset), landmark_priors(trainset, face=True)
    out: dict[str, Any] = {"boxes": {}, "boxes_jitter": {}, "val_distance": {}}
    for rule in MAP_RULES:
        priors = {**cam_priors(trainset, rule=rule), **fixed}
        out["boxes"][rule] = box_hits(test, priors, rule=rule, detector=detector)
        if test_j is not None:
            out["boxes_jitter"][rule] = box_hits(test_j, priors, rule=rule, detector=detector)
        on_val = box_hits(val, priors, rule=rule)
        out["val_distance"][rule] = float(np.mean([on_val[g]["learned_dist"]
                                                   for g in LANDMARKS_OF]))
    return out


def run_one(args: argparse.Namespace, mode: str, seed: int) -> dict[str, Any]:
    out = args.out / mode / f"seed{seed}"
    cell = out / "cell.json"
    if cell.exists():
        done = json.loads(cell.read_text())
        if done.get("format") == CELL_FORMAT and done.get("jitter") == args.jitter:
            return done
    cfg = TrainConfig(arch="frl", mnl=mode, width=args.width, size=args.size,
                      variant="wild", frame=args.frame, epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, workers=args.workers, seed=seed,
                      box_jitter=args.train_jitter)
    t0 = time.perf_counter()
    train(cfg, args.data, out, resume=(out / "last.pt").exists())
    seconds = time.perf_counter() - t0
    if cell.exists():  # trained before: keep its training time, score the boxes anew
        seconds = json.loads(cell.read_text())["seconds"]
    val = frl_outputs(str(out), str(args.data), "val", workers=args.workers)
    test = frl_outputs(str(out), str(args.data), "test", workers=args.workers)
    names = list(ATTRIBUTES)
    loc = metrics.evaluate(val.loc, val.labels, test.loc, test.labels, names)
    cls = metrics.evaluate(val.cls, val.labels, test.cls, test.labels, names)
    result = {"format": CELL_FORMAT, "mode": mode, "seed": seed, "seconds": seconds,
              "loc_mean_balanced": loc["mean_balanced"],
              "cls_mean_balanced": cls["mean_balanced"] if mode != "off" else None,
              "n_test": int(len(test.labels)), "run": str(out), "jitter": args.jitter,
              **score_boxes(args, str(out))}
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


BOX_KEYS = ("learned", "prior", "detector", "learned_dist", "prior_dist", "detector_dist",
            "fell_back")


def choose_rule(cells: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    """The heat-map rule (:data:`~facedistill.pipeline.frl.MAP_RULES`) that places the boxes
    best on val (mean centre distance over groups and ``mode``'s runs); every rule's test
    scores beside it."""
    mine = [c for c in cells if c["mode"] == mode]
    rules: dict[str, Any] = {}
    for rule in MAP_RULES:
        rules[rule] = {"val_distance": over_seeds([c["val_distance"][rule] for c in mine])}
        for g in LANDMARKS_OF:
            for key in ("learned_dist", "prior_dist", "detector_dist"):
                rules[rule][f"{g}_{key}"] = over_seeds([c["boxes"][rule][g][key] for c in mine])
                if mine[0]["boxes_jitter"]:
                    rules[rule][f"jitter_{g}_{key}"] = over_seeds(
                        [c["boxes_jitter"][rule][g][key] for c in mine])
    chosen = min(rules, key=lambda r: rules[r]["val_distance"]["mean"])
    return {"mode": mode, "chosen": chosen, "rules": rules}


def summarize(cells: list[dict[str, Any]], rule: str) -> dict[str, Any]:
    """Per MNL mode: both branches' accuracy and the boxes of heat-map ``rule`` over seeds."""
    out: dict[str, Any] = {}
    for mode in dict.fromkeys(c["mode"] for c in cells):
        mine = [c for c in cells if c["mode"] == mode]
        row: dict[str, Any] = {"loc": over_seeds([c["loc_mean_balanced"] for c in mine])}
        if mine[0]["cls_mean_balanced"] is not None:
            row["cls"] = over_seeds([c["cls_mean_balanced"] for c in mine])
        for prefix, key in (("", "boxes"), ("jitter_", "boxes_jitter")):
            if not mine[0][key]:
                continue
            for group in LANDMARKS_OF:
                for name in BOX_KEYS:
                    row[f"{prefix}{group}_{name}"] = over_seeds(
                        [c[key][rule][group][name] for c in mine])
        row["seconds"] = over_seeds([c["seconds"] for c in mine])
        out[mode] = row
    return out


def _pm(s: dict[str, float], scale: float = 100.0, digits: int = 2) -> str:
    return f"{scale * s['mean']:.{digits}f} +- {scale * s['std']:.{digits}f}"


def rules_markdown(rules: dict[str, Any], args: argparse.Namespace) -> str:
    jit = args.frame == "face"
    where = (f"crops of boxes loosened by {100 * args.jitter:.0f}%" if jit else "the photos")
    prefix = "jitter_" if jit else ""
    lines = ["", f"Heat-map rules for the boxes ({rules['mode']} runs, {where}): chosen on val "
             "by the mean centre distance, then test's centre distance (% of the face crop), "
             "learned vs fixed box.", "",
             "| rule | val distance | eyes | nose | mouth |", "|---|---:|---:|---:|---:|"]
    for rule, row in rules["rules"].items():
        mark = " (chosen)" if rule == rules["chosen"] else ""
        cells = " | ".join(f"{100 * row[f'{prefix}{g}_learned_dist']['mean']:.1f} vs "
                           f"{100 * row[f'{prefix}{g}_prior_dist']['mean']:.1f}"
                           for g in LANDMARKS_OF)
        lines.append(f"| {rule}{mark} | {100 * row['val_distance']['mean']:.1f} | {cells} |")
    return "\n".join(lines) + "\n"


def markdown(summary: dict[str, Any], args: argparse.Namespace, rule: str) -> str:
    seen = (f"{args.size} px face-box crops" if args.frame == "face"
            else f"whole photos padded to {args.size} px squares")
    lines = [
        f"FRL on wild synthetic faces ({args.n} images, {seen}, width {args.width:g}, "
        f"{args.epochs} epochs, training boxes loosened by up to "
        f"{100 * args.train_jitter:.0f}%, seeds {args.seeds}); mean balanced accuracy on "
        "test (%), thresholds from val; mean +- std over seeds.", "",
        "| MNL | localization branch | classification branch | train s |",
        "|---|---:|---:|---:|"]
    for mode, row in summary.items():
        cls = _pm(row["cls"]) if "cls" in row else "-"
        lines.append(f"| {mode} | {_pm(row['loc'])} | {cls} | "
                     f"{row['seconds']['mean']:.0f} |")
    views = [("", "the test crops" if args.frame == "face" else "the test photos")]
    if args.frame == "face":
        views.append(("jitter_", f"test crops of face boxes loosened by up to "
                                 f"{100 * args.jitter:.0f}% (shift and scale)"))
    fixed = ("a fixed box at the training crops' mean landmark position" if args.frame == "face"
             else "a fixed box at the training photos' mean landmark position (no detector) "
                  "and a fixed box in the true face box (with a detector)")
    for prefix, what in views:
        detector = args.frame == "photo"
        head = "| MNL | group | contains: learned | contains: fixed | "
        head += "contains: detector | " if detector else ""
        head += "distance: learned | distance: fixed | "
        head += "distance: detector | " if detector else ""
        head += "flat map |"
        lines += ["", f"Boxes (heat-map rule {rule}) vs the wild landmarks on {what}: share "
                  "containing the group's landmarks (%) and centre distance to them (% of the "
                  f"face crop), learned vs {fixed}.", "", head,
                  "|---|---|" + "---:|" * (head.count("|") - 3)]
        names = ["learned", "prior"] + (["detector"] if detector else [])
        for mode, row in summary.items():
            for g in LANDMARKS_OF:
                k = f"{prefix}{g}"
                vals = [_pm(row[f"{k}_{n}"], digits=1) for n in names]
                vals += [_pm(row[f"{k}_{n}_dist"], digits=1) for n in names]
                vals.append(_pm(row[f"{k}_fell_back"], digits=1))
                lines.append(f"| {mode} | {g} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def draw(test: FRLOutputs, images: np.ndarray, priors: dict[str, tuple[float, float]],
         path: Path, rule: str, count: int = 6) -> None:
    """CAM overlays (one column per group) with the group's box (sized to the face), for
    ``count`` test faces."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from facedistill.pipeline.frl import group_maps

    groups = list(GROUPS)
    fig, axes = plt.subplots(count, len(groups) + 1, figsize=(1.6 * (len(groups) + 1),
                                                                1.6 * count))
    for r in range(count):
        heats = group_maps(test.cams[r], rule=rule, logits=test.loc[r])
        boxes = cam_boxes(test.cams[r], priors, rule=rule, logits=test.loc[r])
        scale = float(test.unit[r]) if test.unit is not None else 1.0
        axes[r, 0].imshow(images[r])
        axes[r, 0].set_title("input" if r == 0 else "", fontsize=8)
        if test.landmarks is not None:
            pts = test.landmarks[r] * images.shape[1]
            axes[r, 0].plot(pts[:, 0], pts[:, 1], "c.", markersize=4)
        for c, g in enumerate(groups, start=1):
            ax = axes[r, c]
            ax.imshow(images[r])
            side = images.shape[1]
            ax.imshow(heats[g], cmap="jet", alpha=0.45, extent=(0, side, side, 0),
                      interpolation="bilinear")
            b = boxes[g]
            x0, y0, x1, y1 = type(b)(b.cx, b.cy, min(1.0, b.side * scale)).corners()
            ax.add_patch(Rectangle((x0 * side, y0 * side), (x1 - x0) * side,
                                   (y1 - y0) * side, fill=False,
                                   edgecolor="white" if not boxes[g].prior else "grey", lw=1.2))
            if r == 0:
                ax.set_title(g, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, dpi=80, format="png")
    plt.close(fig)
    buf.seek(0)
    with Image.open(buf) as img, atomic_path(path) as tmp:  # 256 colours: a fifth of the bytes
        img.convert("RGB").quantize(256).save(tmp, format="png", optimize=True)


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
    ap.add_argument("--frame", choices=("face", "photo"), default="face",
                    help="what the nets see: face-box crops or the whole photos (train --frame)")
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
            print(json.dumps({k: v for k, v in cell.items() if not k.startswith("boxes")}),
                  flush=True)
            cells.append(cell)
    # the boxes' rule is chosen on the MNL runs (joint) and used for every mode
    best = "joint" if any(c["mode"] == "joint" for c in cells) else cells[0]["mode"]
    rules = choose_rule(cells, best)
    summary = summarize(cells, rules["chosen"])
    best_run = [c["run"] for c in cells if c["mode"] == best][-1]
    test = frl_outputs(best_run, str(args.data), "test")
    aligned = alignment(test, args.size)
    result = {"benchmark": "frl_table1", "command": command_line(), "cells": cells,
              "summary": summary, "alignment": aligned, "map_rules": rules,
              "config": {k: str(v) for k, v in vars(args).items()}}
    table = markdown(summary, args, rules["chosen"]) + rules_markdown(rules, args)
    spread = max(max(v) for v in aligned["landmark_std_pct_xy"].values())
    table += (f"\nWhere the landmarks are in what the net sees: every wild landmark's position "
              f"varies by at most {spread:.1f}% of the input (std over the test images), the "
              f"eyes are {aligned['eye_distance_px']['mean']:.1f} +- "
              f"{aligned['eye_distance_px']['std']:.1f} px apart in {args.size} px inputs.\n")
    if args.png_out:
        where = args.md_out.parent if args.md_out else Path.cwd()
        table += (f"\n![CAM overlays and boxes]"
                  f"({Path(os.path.relpath(args.png_out, where)).as_posix()})\n")
    print(json.dumps({"summary": summary}))
    print(table)
    write_results(result, table, args.json_out, args.md_out)
    if args.png_out:
        trainset = frl_outputs(best_run, str(args.data), "train", limit=args.prior_images)
        draw(test, crops(best_run, args.data, 6), cam_priors(trainset, rule=rules["chosen"]),
             args.png_out, rules["chosen"])


if __name__ == "__main__":
    main()
