"""Does :class:`~facedistill.nn.models.TapConv2d` pay? Training steps/s per conv path.

TNet's and SNet1's conv6 (3x3, 512 -> 1280) sees a 1x1 map at 32 px and a 2x2 map at 64 px,
block5 a 2x2 map at 32 px. oneDNN's backward for such tiny maps is slow on some CPUs (a 2-core
AVX2 EPYC: 4 GFLOP/s for conv6 at 1x1). For each model and input size this times a whole
training step (forward, BCE, backward, AdamW; batch 64, the Trainer's channels_last layout and
fused AdamW) with the trunk's convolutions on three paths, interleaved round by round:

- ``native``: every conv on PyTorch's own kernel (``centre`` and ``dense`` off);
- ``centre``: a k x k conv on a 1x1 map runs as its centre tap (exact);
- ``centre+dense`` (the default): also maps of <= 4 pixels with >= 64 input channels as one
  dense layer (``_SmallMapConv``: no multiplications by the zero padding);
- ``default, unfused AdamW``: the default conv paths with the per-tensor AdamW loop, for what
  the fused optimizer (the Trainer's) saves.

It also checks that the three paths agree: the largest absolute difference of the logits and of
every parameter's gradient against ``native`` on the same batch.

    python benchmarks/small_map_conv.py [--models tnet,snet1] [--sizes 32,64] [--rounds 3]
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
from facedistill.errors import UserError
from facedistill.io import command_line, write_results
from facedistill.nn.models import TapConv2d, build_model
from facedistill.runtime.cpu import cpu_record

# name -> (centre tap, dense layer's minimum input channels, fused AdamW)
PATHS = {"native": (False, None, True), "centre": (True, None, True),
         "centre+dense": (True, TapConv2d.dense_min_channels, True),
         "default, unfused AdamW": (True, TapConv2d.dense_min_channels, False)}
DEFAULT = "centre+dense"


def set_path(model: torch.nn.Module, path: str) -> None:
    centre, dense, _ = PATHS[path]
    for m in model.modules():
        if isinstance(m, TapConv2d):
            m.centre, m.dense_min_channels = centre, dense


def batch(size: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, size, size, generator=g).contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, 2, (n, 40), generator=g).float()


def step_fn(arch: str, path: str, size: int, n: int) -> Callable[[], None]:
    torch.manual_seed(0)
    model = build_model(arch).to(memory_format=torch.channels_last)
    set_path(model, path)
    x, y = batch(size, n)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=PATHS[path][2] or None)

    def step() -> None:
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def agreement(arch: str, size: int, n: int) -> dict[str, dict[str, float]]:
    """Max |difference| of logits and gradients of each path against ``native``."""
    x, y = batch(size, n)
    torch.manual_seed(0)
    model = build_model(arch).to(memory_format=torch.channels_last)
    out: dict[str, tuple[torch.Tensor, list[torch.Tensor]]] = {}  # train mode: batch statistics
    for path in [p for p in PATHS if PATHS[p][2]]:  # the conv paths (the optimizer plays no part)
        set_path(model, path)
        model.zero_grad(set_to_none=True)
        logits = model(x)
        F.binary_cross_entropy_with_logits(logits, y).backward()
        out[path] = logits.detach(), [p.grad.clone() for p in model.parameters()]
    ref_logits, ref_grads = out["native"]
    return {path: {"logits": float((lg - ref_logits).abs().max()),
                   "grads": max(float((g - r).abs().max()) for g, r in zip(gs, ref_grads, strict=True))}
            for path, (lg, gs) in out.items() if path != "native"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="tnet,snet1")
    ap.add_argument("--sizes", default="32,64")
    ap.add_argument("--batch", type=int, default=64, help="the Trainer's default batch")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds; the median is kept")
    ap.add_argument("--seconds", type=float, default=2.0, help="per path and round")
    ap.add_argument("--json-out")
    ap.add_argument("--md-out")
    args = ap.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    try:  # the registry's own one-line error for an unknown name
        [build_model(m, width=0.125) for m in models]
    except UserError as exc:
        ap.error(str(exc))
    sizes = [int(s) for s in args.sizes.split(",")]

    rows = []
    for arch in models:
        for size in sizes:
            fns = {p: step_fn(arch, p, size, args.batch) for p in PATHS}
            samples: dict[str, list[float]] = {p: [] for p in PATHS}
            for _ in range(args.rounds):
                for p in PATHS:
                    samples[p].append(images_per_s(fns[p], args.batch, args.seconds))
            rate = {p: median(v) for p, v in samples.items()}
            rows.append({"model": arch, "size": size,
                         "images_per_s": {p: round(v, 1) for p, v in rate.items()},
                         "vs_native": {p: round(v / rate["native"], 3) for p, v in rate.items()},
                         "max_abs_diff": agreement(arch, size, 8)})
            print(f"{arch:6s} {size:3d} " + "  ".join(f"{p} {v:6.1f}" for p, v in rate.items()),
                  flush=True)

    cpu = cpu_record()
    result = {"benchmark": "small_map_conv", "batch": args.batch, "rounds": args.rounds,
              "threads": torch.get_num_threads(), "torch": torch.__version__,
              "cpu": cpu["model"] or platform.machine(), "cpu_class": cpu["int8_class"],
              "rows": rows, "command": command_line()}
    isa = {"x86-avx2": "AVX2 only (no AVX-512)", "x86-avx512": "AVX-512",
           "x86-vnni": "AVX-512 VNNI"}.get(str(cpu["int8_class"]), str(cpu["int8_class"]))
    lines = [f"Training step images/s (batch {args.batch}, channels_last, "
             f"{result['threads']} threads, {isa}, torch {torch.__version__}; median of "
             f"{args.rounds} interleaved rounds; ratio to native in brackets).", "",
             "| model | size | " + " | ".join(PATHS) + " | max abs diff (logits / grads) |",
             "|---|---:|" + "---:|" * len(PATHS) + "---|"]
    for r in rows:
        cells = [f"{r['images_per_s'][p]:.1f} ({r['vs_native'][p]:.2f}x)" for p in PATHS]
        diff = r["max_abs_diff"][DEFAULT]
        lines.append(f"| {r['model']} | {r['size']} | " + " | ".join(cells)
                     + f" | {diff['logits']:.1e} / {diff['grads']:.1e} |")
    lines += ["", f"Made by: `{result['command']}`"]
    markdown = "\n".join(lines) + "\n"
    print(json.dumps(result))
    print()
    print(markdown)
    write_results(result, markdown, args.json_out, args.md_out)


if __name__ == "__main__":
    main()
