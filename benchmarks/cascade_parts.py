"""Parts and whole on unaligned faces (the cascade paper's PaW classifier with its region switch):
part subnets on the face regions a trained FRL net finds, a whole-image subnet on the face
crop, and the switch choosing per attribute on val, over seeds.

For every seed, on the wild variant of the synthetic dataset (face-box crops, no alignment):

* ``whole``  - a whole-image model (``--whole-arch`` at ``--whole-width``) on the face crops;
* ``parts``  - ``train --arch parts``: one SNet3-shaped subnet per attribute group on the crop
  of its region, the boxes from the FRL run of the same seed (``--frl-runs``/seed<S>, e.g.
  ``benchmarks/frl_table1.py``'s joint runs; the heat-map rule it chose on val);
* ``fixed``  - the control: the same part subnets on the FRL's mean box per region, the same
  for every image (``--part-boxes fixed``);
* ``fixed_switch``, ``fixed_relations`` - the switch and relations on the control's parts;
* ``switch`` - per attribute the part subnet's score where it beats the whole's on val, else
  the whole's (thresholds searched on val for the switched scores);
* ``relations`` - the switched scores through the attribute relation layer (40 x 40, from
  identity, fitted on the training split's switched scores, its decay chosen on val);
* ``budget`` - the whole-image model widened to the parameters of the switched cascade (FRL +
  parts + whole), so the cascade is compared at an equal parameter budget;
* ``small_*`` - the compressed cascade (the Table 3 analogue on unaligned faces): SNet3 as the
  whole-image subnet and the fixed-box parts at ``--small-parts-width``, each distilled from
  the seed's uncompressed subnet by ``--method`` (``small_distilled``) or trained on the
  labels alone (``small_labels``), put together by ``facedistill cascade``'s
  :func:`~facedistill.pipeline.cascade.assemble`; ``small_budget``: a whole-image SNet3 widened
  to the compressed cascade's parameters.

Scores: mean balanced accuracy on the wild test split, thresholds from val; params. Each run
lands in ``--out/<model>/seed<S>`` and is reused when done. Prints a JSON line per seed, then
the summary JSON line and a Markdown table (mean +- std over seeds); ``--png-out`` draws the
"face region selection" figure: per attribute, part vs whole val accuracy and the switch's pick.

    python benchmarks/cascade_parts.py [--data data/wild] [--frl-runs runs/frl/joint]
        [--frl-json benchmarks/results/frl_table1.json] [--epochs 3] [--seeds 0,1,2]
        [--out runs/cascade] [--json-out ... --md-out ... --png-out ...]
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
from facedistill.config import DistillConfig, TrainConfig
from facedistill.io import atomic_path, atomic_write_json, command_line, write_results
from facedistill.nn.models import build_model, count_params
from facedistill.pipeline.cascade import assemble, region_switch, relation_layer
from facedistill.pipeline.compress import compress
from facedistill.pipeline.evaluate import checkpoint_scores
from facedistill.pipeline.frl import GROUPS, group_of
from facedistill.pipeline.train import train


def budget_width(arch: str, params: int) -> float:
    """The width at which ``arch`` has about ``params`` parameters (bisection)."""
    lo, hi = 0.05, 4.0
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if count_params(build_model(arch, width=mid)) < params else (lo, mid)
    return round((lo + hi) / 2, 3)


def fit(args: argparse.Namespace, name: str, seed: int, **fields: Any) -> tuple[str, float]:
    """Train (or reuse) one run; its folder and training seconds."""
    out = args.out / name / f"seed{seed}"
    done = out / "done.json"
    if done.exists():
        return str(out), json.loads(done.read_text())["seconds"]
    cfg = TrainConfig(size=args.size, variant="wild", epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, workers=args.workers, seed=seed,
                      **fields)
    t0 = time.perf_counter()
    train(cfg, args.data, out, resume=(out / "last.pt").exists())
    seconds = time.perf_counter() - t0
    atomic_write_json(done, {"seconds": seconds})
    return str(out), seconds


def combine(args: argparse.Namespace, part_run: str, parts: Any, whole_run: str, whole: Any,
            names: list[str]) -> tuple[Any, dict[str, Any]]:
    """The region switch of ``parts`` against ``whole`` (val/test scores of the two runs) and
    the relation layer over the switched scores, fitted on their training-split scores."""
    switched = region_switch(parts, whole, names)
    p_train, w_train = (checkpoint_scores(r, args.data, "train")[2:] for r in (part_run,
                                                                              whole_run))
    use = switched.use_part
    related = relation_layer((np.where(use, p_train[0], w_train[0]), p_train[1]),
                             (np.where(use, parts[0], whole[0]), parts[1],
                              np.where(use, parts[2], whole[2]), parts[3]), names)
    return switched, related


def with_fixed(args: argparse.Namespace, cell: dict[str, Any], seed: int) -> dict[str, Any]:
    """``cell`` with the control: the part subnets on the FRL's mean box per region for every
    image (``--part-boxes fixed``), so that what the per-image boxes add can be read off."""

    frl = str(args.frl_runs / f"seed{seed}")
    names = list(ATTRIBUTES)
    run, secs = fit(args, "fixed", seed, arch="parts", width=args.parts_width, frl=frl,
                    box_rule=cell["rule"], part_boxes="fixed")
    s = checkpoint_scores(run, args.data, "test")
    cell["mean_balanced"]["fixed"] = metrics.evaluate(*s, names)["mean_balanced"]
    cell["seconds"]["fixed"] = secs
    # the same switch and relation layer on the fixed-box parts
    whole_run = str(args.out / "whole" / f"seed{seed}")
    switched, related = combine(args, run, s, whole_run,
                                checkpoint_scores(whole_run, args.data, "test"), names)
    cell["mean_balanced"]["fixed_switch"] = switched.report["mean_balanced"]
    cell["mean_balanced"]["fixed_relations"] = related["mean_balanced"]
    cell["fixed_parts_chosen"] = int(switched.use_part.sum())
    return fixed_params(args, cell)


def fixed_params(args: argparse.Namespace, cell: dict[str, Any]) -> dict[str, Any]:
    """The fixed-box models' params: the part subnets without the FRL, which only gave them
    their boxes (it does not ship with them)."""
    fixed = count_params(build_model("parts", width=args.parts_width, fixed=True))
    cell["params"]["fixed"] = fixed
    cell["params"]["fixed_switch"] = cell["params"]["whole"] + fixed
    cell["params"]["fixed_relations"] = cell["params"]["fixed_switch"] + len(ATTRIBUTES) * (
        len(ATTRIBUTES) + 1)
    return cell


def distil(args: argparse.Namespace, name: str, seed: int, teacher: str, method: str,
           **fields: Any) -> str:
    """Distil (or reuse) one student of ``teacher`` by ``method`` (``labels``: the same
    student from the labels alone, the twin that shows what the teacher adds)."""
    out = args.out / name / f"seed{seed}"
    done = out / "done.json"
    if done.exists():
        return str(out)
    cfg = TrainConfig(size=args.size, variant="wild", epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, workers=args.workers, seed=seed,
                      **fields)
    t0 = time.perf_counter()
    compress(cfg, [teacher], args.data, out, DistillConfig(method=method, k=args.k, split="val"),
             resume=(out / "last.pt").exists())
    atomic_write_json(done, {"seconds": time.perf_counter() - t0})
    return str(out)


def with_compressed(args: argparse.Namespace, cell: dict[str, Any], seed: int
                    ) -> dict[str, Any]:
    """``cell`` with the compressed cascade (the Table 3 analogue on unaligned faces): the
    whole-image subnet distilled into SNet3 (``--small-whole-arch``), the fixed-box part
    subnets into parts at ``--small-parts-width``, both by ``--method`` from the seed's
    uncompressed ones, put together by :func:`assemble` (switch + relations); beside it
    the same cascade trained from the labels alone, the whole-image SNet3 alone, and a
    whole-image model at the compressed cascade's parameter budget."""
    frl = str(args.frl_runs / f"seed{seed}")
    names = list(ATTRIBUTES)
    whole_t = str(args.out / "whole" / f"seed{seed}")
    parts_t = str(args.out / "fixed" / f"seed{seed}")
    parts = {"arch": "parts", "width": args.small_parts_width, "frl": frl,
             "box_rule": cell["rule"], "part_boxes": "fixed"}
    whole = {"arch": args.small_whole_arch, "width": 1.0}
    scores = {}
    for method, tag in ((args.method, "distilled"), ("labels", "labels")):
        w = distil(args, f"small_whole_{tag}", seed, whole_t, method, **whole)
        p = distil(args, f"small_parts_{tag}", seed, parts_t, method, **parts)
        rec = assemble(w, p, args.out / f"small_cascade_{tag}" / f"seed{seed}", data=args.data)
        scores[f"small_{tag}"] = rec["mean_balanced"]["cascade"]
        scores[f"small_whole_{tag}"] = rec["mean_balanced"]["whole"]
        scores[f"small_parts_{tag}"] = rec["mean_balanced"]["parts"]
        cell["params"].update({f"small_{tag}": rec["params"]["cascade"],
                               f"small_whole_{tag}": rec["params"]["whole"],
                               f"small_parts_{tag}": rec["params"]["parts"]})
    width = budget_width(args.small_whole_arch, cell["params"]["small_distilled"])
    budget_run, _ = fit(args, "small_budget", seed, arch=args.small_whole_arch, width=width)
    scores["small_budget"] = metrics.evaluate(*checkpoint_scores(budget_run, args.data, "test"),
                                              names)["mean_balanced"]
    cell["params"]["small_budget"] = count_params(build_model(args.small_whole_arch,
                                                              width=width))
    cell["small_budget_width"] = width
    cell["mean_balanced"].update(scores)
    return cell


def run_seed(args: argparse.Namespace, seed: int, rule: str) -> dict[str, Any]:
    cell = args.out / f"seed{seed}.json"
    if cell.exists():
        done = json.loads(cell.read_text())
        if "fixed_relations" not in done["mean_balanced"]:  # a cell from before the control
            atomic_write_json(cell, with_fixed(args, done, seed))
            done = json.loads(cell.read_text())
        if "small_distilled" not in done["mean_balanced"]:  # ... or before the compression
            atomic_write_json(cell, with_compressed(args, fixed_params(args, done), seed))
        return json.loads(cell.read_text())
    frl = str(args.frl_runs / f"seed{seed}")
    names = list(ATTRIBUTES)
    whole_run, whole_s = fit(args, "whole", seed, arch=args.whole_arch, width=args.whole_width)
    parts_run, parts_s = fit(args, "parts", seed, arch="parts", width=args.parts_width,
                             frl=frl, box_rule=rule)
    parts_model = build_model("parts", width=args.parts_width)
    params = {"whole": count_params(build_model(args.whole_arch, width=args.whole_width)),
              "parts": count_params(parts_model)}
    params["switch"] = params["whole"] + params["parts"]
    width = budget_width(args.whole_arch, params["switch"])
    budget_run, budget_s = fit(args, "budget", seed, arch=args.whole_arch, width=width)
    params["budget"] = count_params(build_model(args.whole_arch, width=width))
    whole = checkpoint_scores(whole_run, args.data, "test")
    parts = checkpoint_scores(parts_run, args.data, "test")
    budget = checkpoint_scores(budget_run, args.data, "test")
    switched, related = combine(args, parts_run, parts, whole_run, whole, names)
    params["relations"] = params["switch"] + len(names) * (len(names) + 1)
    def score(s: Any) -> float:
        return metrics.evaluate(*s, names)["mean_balanced"]

    result = {"seed": seed, "rule": rule, "budget_width": width, "params": params,
              "seconds": {"whole": whole_s, "parts": parts_s, "budget": budget_s},
              "mean_balanced": {"whole": score(whole), "parts": score(parts),
                                "switch": switched.report["mean_balanced"],
                                "relations": related["mean_balanced"],
                                "budget": score(budget)},
              "relation_decay": related["decay"], "relation_val": related["val_by_decay"],
              "switch": switched.to_record(names)}
    atomic_write_json(cell, with_compressed(args, with_fixed(args, result, seed), seed))
    return json.loads(cell.read_text())


MODELS = {"whole": "whole-image model", "parts": "part subnets (FRL boxes)",
          "fixed": "part subnets (the FRL's mean boxes, the same for every image)",
          "switch": "parts + whole, region switch",
          "relations": "parts + whole, switch + attribute relations",
          "fixed_switch": "fixed-box parts + whole, region switch",
          "fixed_relations": "fixed-box parts + whole, switch + attribute relations",
          "budget": "whole-image model, switch's params",
          "small_whole_distilled": "compressed: whole-image SNet3, distilled",
          "small_parts_distilled": "compressed: fixed-box parts, distilled",
          "small_distilled": "compressed cascade (distilled subnets, switch + relations)",
          "small_whole_labels": "compressed: whole-image SNet3, labels only",
          "small_parts_labels": "compressed: fixed-box parts, labels only",
          "small_labels": "compressed cascade, labels only",
          "small_budget": "whole-image model, compressed cascade's params"}


def summarize(cells: list[dict[str, Any]]) -> dict[str, Any]:
    out = {m: {"mean_balanced": over_seeds([c["mean_balanced"][m] for c in cells]),
               "params": cells[0]["params"][m]} for m in MODELS}
    out["parts_chosen"] = over_seeds([c["switch"]["parts_chosen"] for c in cells])
    per = {}
    for name in ATTRIBUTES:
        rows = [c["switch"]["attributes"][name] for c in cells]
        per[name] = {"part_val": float(np.mean([r["part_val"] for r in rows])),
                     "whole_val": float(np.mean([r["whole_val"] for r in rows])),
                     "use_part": sum(r["use_part"] for r in rows)}
    out["attributes"] = per
    return out


def markdown(summary: dict[str, Any], args: argparse.Namespace, cells: list[dict[str, Any]]
             ) -> str:
    lines = [f"Parts and whole on wild synthetic faces ({args.size} px face-box crops, "
             f"{args.epochs} epochs, seeds {args.seeds}; parts x{args.parts_width:g} on the "
             f"boxes of the FRL runs in {args.frl_runs} (rule {cells[0]['rule']}), whole "
             f"{args.whole_arch} x{args.whole_width:g}, budget {args.whole_arch} "
             f"x{cells[0]['budget_width']:g}); mean balanced accuracy on test (%), thresholds "
             "from val; mean +- std over seeds. The FRL-box parts' params include the frozen "
             "FRL's; the fixed-box ones have no FRL (it only gave them their boxes).",
             "", "| model | mean balanced accuracy | params |", "|---|---:|---:|"]
    for m, what in MODELS.items():
        s = summary[m]["mean_balanced"]
        lines.append(f"| {what} | {100 * s['mean']:.2f} +- {100 * s['std']:.2f} | "
                     f"{summary[m]['params'] / 1e6:.2f}M |")
    pc = summary["parts_chosen"]
    lines += ["", f"The switch took the part subnet for {pc['mean']:.1f} +- {pc['std']:.1f} of "
              "40 attributes. Per group (mean over seeds of the val balanced accuracy, %, and "
              "how many seed x attribute choices went to the part):", "",
              "| group | part val | whole val | part chosen |", "|---|---:|---:|---:|"]
    for g, members in GROUPS.items():
        rows = [summary["attributes"][n] for n in members]
        lines.append(f"| {g} | {100 * np.mean([r['part_val'] for r in rows]):.1f} | "
                     f"{100 * np.mean([r['whole_val'] for r in rows]):.1f} | "
                     f"{sum(r['use_part'] for r in rows)} / {len(rows) * len(cells)} |")
    return "\n".join(lines) + "\n"


def draw(summary: dict[str, Any], n_seeds: int, path: Path) -> None:
    """The face region selection figure: per attribute (by group), part vs whole val balanced
    accuracy; a filled marker where the switch took the part in most seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(ATTRIBUTES, key=lambda n: (list(GROUPS).index(group_of(n)), n))
    per = summary["attributes"]
    fig, ax = plt.subplots(figsize=(12, 4.2))
    x = np.arange(len(names))
    ax.bar(x - 0.2, [100 * per[n]["whole_val"] for n in names], 0.4, label="whole", color="#999")
    ax.bar(x + 0.2, [100 * per[n]["part_val"] for n in names], 0.4, label="part",
           color=["#1f77b4" if per[n]["use_part"] * 2 > n_seeds else "#aec7e8" for n in names])
    ax.set_xticks(x, names, rotation=90, fontsize=7)
    ax.set_ylabel("val balanced accuracy (%)")
    ax.set_ylim(45, 100)
    ax.set_title("Face region selection: part (dark: the switch's pick in most seeds) vs whole")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("data/wild"))
    ap.add_argument("--frl-runs", type=Path, default=Path("runs/frl/joint"))
    ap.add_argument("--frl-json", type=Path, default=Path("benchmarks/results/frl_table1.json"),
                    help="the FRL benchmark's result, for the heat-map rule it chose on val")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--whole-arch", default="tnet")
    ap.add_argument("--whole-width", type=float, default=0.25)
    ap.add_argument("--parts-width", type=float, default=0.5)
    ap.add_argument("--small-whole-arch", default="snet3",
                    help="the compressed cascade's whole-image subnet")
    ap.add_argument("--small-parts-width", type=float, default=0.25,
                    help="the compressed cascade's part subnets' width")
    ap.add_argument("--method", default="selected", help="how the subnets are distilled")
    ap.add_argument("--k", type=int, default=512, help="selected neurons (method selected)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", type=Path, default=Path("runs/cascade"))
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--md-out", type=Path)
    ap.add_argument("--png-out", type=Path)
    args = ap.parse_args()
    rule = "minmax"
    if args.frl_json.exists():
        rule = json.loads(args.frl_json.read_text())["map_rules"]["chosen"]
    cells = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        cell = run_seed(args, seed, rule)
        print(json.dumps({k: v for k, v in cell.items() if k != "switch"}), flush=True)
        cells.append(cell)
    summary = summarize(cells)
    table = markdown(summary, args, cells)
    if args.png_out:
        draw(summary, len(cells), args.png_out)
    result = {"benchmark": "cascade_parts", "command": command_line(), "cells": cells,
              "summary": summary, "config": {k: str(v) for k, v in vars(args).items()}}
    print(json.dumps({"summary": {m: summary[m] for m in MODELS}}))
    print(table)
    write_results(result, table, args.json_out, args.md_out)


if __name__ == "__main__":
    main()
