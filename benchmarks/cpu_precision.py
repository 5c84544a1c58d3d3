"""Does bf16 autocast or channels_last pay on this CPU? Images/s of each model, side by side.

For every model and each of the four modes (fp32 / bf16 autocast, each in the default NCHW
and the channels_last memory layout) it times a training step (forward, BCE loss, backward,
AdamW) and an inference forward (``torch.no_grad``, eval mode) on random input, interleaving
the modes round by round so that a noisy machine hits them alike. It prints one JSON line
and a table of images/s with each mode's ratio to fp32 NCHW, and says what the Trainer's
``precision = "auto"`` / ``channels_last = "auto"`` pick on this machine
(:func:`facedistill.pipeline.train.resolve_precision`, ``resolve_channels_last``).

    python benchmarks/cpu_precision.py [--size 32] [--batch 64] [--rounds 3]
        [--json-out FILE] [--md-out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Callable
from statistics import median

import torch
import torch.nn.functional as F

from facedistill.bench.stats import images_per_s
from facedistill.io import command_line, write_results
from facedistill.nn.models import build_model, list_models
from facedistill.pipeline.train import (
    cpu_has_amx,
    cpu_has_bf16,
    resolve_channels_last,
    resolve_precision,
)

MODES = ("fp32", "fp32+cl", "bf16", "bf16+cl")


def step_fn(arch: str, mode: str, size: int, batch: int, train: bool) -> Callable[[], None]:
    """One training step or one inference forward of ``arch`` in ``mode``, ready to call."""
    torch.manual_seed(0)
    model = build_model(arch)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 2, (batch, 40)).float()
    if mode.endswith("+cl"):
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    bf16 = mode.startswith("bf16")
    if not train:
        model.eval()

        def forward() -> None:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                model(x)
        return forward
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=32, help="input size (the demo's is 32)")
    ap.add_argument("--batch", type=int, default=64, help="the Trainer's default batch")
    ap.add_argument("--models", default="tnet,snet1,snet2,snet3")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds; the median is kept")
    ap.add_argument("--seconds", type=float, default=1.0, help="per mode and round")
    ap.add_argument("--json-out")
    ap.add_argument("--md-out")
    args = ap.parse_args()

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(list_models()))
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(list_models())}")
    rows = []
    for arch in models:
        for kind in ("train", "infer"):
            fns = {mode: step_fn(arch, mode, args.size, args.batch, kind == "train")
                   for mode in MODES}
            samples: dict[str, list[float]] = {mode: [] for mode in MODES}
            for _ in range(args.rounds):
                for mode in MODES:
                    samples[mode].append(images_per_s(fns[mode], args.batch, args.seconds))
            rate = {mode: median(v) for mode, v in samples.items()}
            rows.append({"model": arch, "kind": kind,
                         "images_per_s": {m: round(v, 1) for m, v in rate.items()},
                         "vs_fp32": {m: round(v / rate["fp32"], 3) for m, v in rate.items()},
                         "best": max(rate, key=rate.__getitem__)})
            print(f"{arch:6s} {kind:5s} " + "  ".join(f"{m} {v:7.0f}" for m, v in rate.items()),
                  flush=True)

    cpu = torch.device("cpu")
    precision = resolve_precision("auto", cpu)
    result = {
        "benchmark": "cpu_precision", "size": args.size, "batch": args.batch,
        "rounds": args.rounds, "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
        "avx512_bf16_or_amx": cpu_has_bf16(), "amx": cpu_has_amx(),
        "auto_precision": precision,
        "auto_channels_last": resolve_channels_last("auto"),
        "rows": rows, "command": command_line(),
    }
    lines = [f"Training step and inference forward, images/s at {args.size}x{args.size}, batch "
             f"{args.batch}, {result['threads']} threads, torch {torch.__version__} "
             f"(median of {args.rounds} interleaved rounds; ratio to fp32 NCHW in brackets).", "",
             "| model | pass | " + " | ".join(MODES) + " | fastest |",
             "|---|---|" + "---:|" * len(MODES) + "---|"]
    for r in rows:
        cells = [f"{r['images_per_s'][m]:.0f} ({r['vs_fp32'][m]:.2f}x)" for m in MODES]
        lines.append(f"| {r['model']} | {r['kind']} | " + " | ".join(cells) + f" | {r['best']} |")
    lines += ["", f"This CPU: native bf16 instructions {result['avx512_bf16_or_amx']}, AMX "
              f"{result['amx']}. `precision = \"auto\"` picks **{precision}**, "
              f"`channels_last = \"auto\"` picks **{result['auto_channels_last']}**.", "",
              f"Made by: `{result['command']}`"]
    markdown = "\n".join(lines) + "\n"
    print(json.dumps(result))
    print()
    print(markdown)
    write_results(result, markdown, args.json_out, args.md_out)


if __name__ == "__main__":
    main()
