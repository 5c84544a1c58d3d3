"""The cascade paper's Table 3 on our data: TNet, SNet1, SNet2, SNet3 side by side.

Reads a finished pipeline run (``facedistill pipeline``; ``make demo`` makes ``runs/demo``):
per model our trained parameter count, the architecture's count at width 1 beside the paper's
published one, our mean balanced accuracy on the synthetic test split beside the paper's on
uCelebA (91.07 / 91.02 / 90.89 / 90.60), the compression ratio to the teacher (ours as trained
and the paper's) and the accuracy delta to the teacher. The goal we track: SNet3 within 1 point
of TNet at >= 40x fewer parameters.

Prints one JSON line, then a Markdown table; writes JSON, Markdown and a PNG (accuracy vs
parameters, log scale) when asked.

    python benchmarks/table3.py --run runs/demo [--json-out benchmarks/results/table3.json
        --md-out benchmarks/results/table3.md --png-out benchmarks/results/table3.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from facedistill.io import atomic_path, write_results
from facedistill.nn.models import PAPER, model_info

ORDER = ("tnet", "snet1", "snet2", "snet3")


def table(run: Path) -> dict[str, Any]:
    report = json.loads((run / "report.json").read_text())
    state = json.loads((run / "pipeline.json").read_text())
    rows = []
    teacher = report["models"][0]
    paper_teacher = PAPER["tnet"]["params"]
    for m in sorted(report["models"], key=lambda r: ORDER.index(r["arch"])):
        arch = m["arch"]
        full = model_info(arch, 1.0, m["input_size"])
        paper = PAPER.get(arch, {})
        rows.append({
            "model": arch, "trained_width": m["width"], "params": m["params"],
            "macs": m["macs"], "params_width1": full["params"],
            "paper_params": paper.get("params"),
            "mean_balanced": m["mean_balanced"], "paper_acc": paper.get("mean_acc"),
            "compression": teacher["params"] / m["params"],
            "compression_width1": model_info(teacher["arch"], 1.0)["params"] / full["params"],
            "paper_compression": paper_teacher / paper["params"] if paper else None,
            "delta": m["mean_balanced"] - teacher["mean_balanced"],
            "paper_delta": (paper.get("mean_acc", 0) - PAPER["tnet"]["mean_acc"]) / 100
            if paper else None,
        })
    stages = state["stages"]
    train = {name: rec.get("seconds") for name, rec in stages.items()}
    snet3 = next((r for r in rows if r["model"] == "snet3"), None)
    goal = None
    if snet3 is not None:
        goal = {"snet3_within_1_point": snet3["delta"] >= -0.01,
                "snet3_delta_points": 100 * snet3["delta"],
                "compression": snet3["compression"], "compression_40x": snet3["compression"] >= 40}
    return {"run": str(run), "rows": rows, "goal": goal, "stage_seconds": train,
            "config": state.get("config")}


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| model | trained as | params | paper params | width-1 params | mean bal. acc (ours, "
        "synthetic test) | paper acc (uCelebA) | compression (ours) | compression (paper) | "
        "delta to TNet (ours) | delta (paper) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        pp = f"{r['paper_params'] / 1e6:.2f}M" if r["paper_params"] else "n/a"
        pc = f"{r['paper_compression']:.1f}x" if r["paper_compression"] else "n/a"
        pd = f"{100 * r['paper_delta']:+.2f}" if r["paper_delta"] is not None else "n/a"
        lines.append(
            f"| {r['model']} | x{r['trained_width']:g} | {r['params']:,} | {pp} | "
            f"{r['params_width1']:,} | {100 * r['mean_balanced']:.2f}% | {r['paper_acc']:.2f}% | "
            f"{r['compression']:.1f}x | {pc} | {100 * r['delta']:+.2f} | {pd} |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    rows = result["rows"]
    ax.plot([r["params"] for r in rows], [100 * r["mean_balanced"] for r in rows], "o-",
            label="ours (synthetic, as trained)")
    ax.plot([r["paper_params"] for r in rows], [r["paper_acc"] for r in rows], "s--",
            label="paper (uCelebA)")
    for r in rows:
        ax.annotate(r["model"], (r["params"], 100 * r["mean_balanced"]),
                    textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("mean balanced accuracy (%)")
    ax.set_title("Table 3: accuracy vs parameters")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, default=Path("runs/demo"),
                    help="a finished pipeline run folder")
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--md-out", type=Path)
    ap.add_argument("--png-out", type=Path)
    args = ap.parse_args()
    result = table(args.run)
    md = markdown(result)
    print(json.dumps(result))
    print(md)
    write_results(result, md, args.json_out, args.md_out)
    if args.png_out:
        plot(result, args.png_out)


if __name__ == "__main__":
    main()
