"""The cascade's cost per stage: params, MACs and ONNX Runtime latency of each stage of one or
more cascade checkpoints (``facedistill cascade``), beside the whole cascade as one graph.

Stages, each exported to ONNX on its own (fp32, opset 18) and timed in ONNX Runtime on this CPU:

* ``whole``  - the whole-image subnet on the face crop;
* ``crops``  - cutting the regions (GridSample) from the face crop;
* ``parts``  - the part subnets on the regions;
* ``head``   - the switch and the attribute relation layer over the 40 + 40 scores;
* ``cascade``- everything as the one graph ``facedistill export`` ships.

All sessions of a run are timed round by round in one process (rotating order), with the same
thread count (threads do not spin between calls, so no session steals the next one's cores),
batch 1 and 32; medians over rounds. The sum of the stages against the one graph
shows what running the stages separately would cost. Prints a JSON line, then a Markdown table.

    python benchmarks/cascade_latency.py --cascade runs/cascade/cascade/seed0
        [--cascade runs/cascade/small_cascade_distilled/seed0] [--threads 2] [--rounds 60]
        [--json-out benchmarks/results/cascade_latency.json --md-out ...md]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facedistill.bench.environment import environment
from facedistill.io import command_line, write_results
from facedistill.nn.checkpoint import load_checkpoint, model_from_checkpoint
from facedistill.nn.models import count_macs, count_params

STAGES = ("whole", "crops", "parts", "head", "cascade")


class Stage(nn.Module):
    """One method of the cascade (``crops``, ``score_crops``, ``combine``) as a module."""

    def __init__(self, owner: nn.Module, method: str) -> None:
        super().__init__()
        self.owner, self.method = owner, method

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        out = getattr(self.owner, self.method)(*((x,) if y is None else (x, y)))
        return out[0] if isinstance(out, tuple) else out


def stage_graphs(model: nn.Module, size: int, tmp: Path) -> dict[str, tuple[Path, list]]:
    """Each stage as an ONNX file and an example input maker: {stage: (path, shapes)}."""
    g, side = len(model.parts.boxes.groups), model.parts.part_size
    modules: dict[str, tuple[nn.Module, list[tuple[int, ...]]]] = {
        "whole": (model.whole, [(3, size, size)]),
        "crops": (Stage(model.parts, "crops"), [(3, size, size)]),
        "parts": (Stage(model.parts, "score_crops"), [(g, 3, side, side)]),
        "head": (Stage(model, "combine"), [(model.num_attrs,), (model.num_attrs,)]),
        "cascade": (model, [(3, size, size)]),
    }
    out = {}
    for name, (module, shapes) in modules.items():
        path = tmp / f"{name}.onnx"
        example = tuple(torch.randn(2, *s) for s in shapes)
        batch = torch.export.Dim("batch")
        torch.onnx.export(module.eval(), example, str(path), dynamo=True, external_data=False,
                          opset_version=18,
                          dynamic_shapes={"xy"[i]: {0: batch} for i in range(len(shapes))},
                          verbose=False)
        out[name] = (path, shapes)
    return out


def time_sessions(graphs: dict[str, dict[str, tuple[Path, list]]], batches: list[int],
                  threads: int, rounds: int) -> dict[str, dict[str, dict[str, float]]]:
    """Median ms per call of every (model, stage) at every batch, round-robin."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # no spinning: with many sessions interleaved, one session's spinning pool would steal the
    # cores of the next (benchmarks/results/ort_spinning.md)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    jobs = []
    for model, stages in graphs.items():
        for stage, (path, shapes) in stages.items():
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            names = [i.name for i in sess.get_inputs()]
            for b in batches:
                rng = np.random.default_rng(b)
                feed = {n: rng.standard_normal((b, *s), dtype=np.float32)
                        for n, s in zip(names, shapes, strict=True)}
                for _ in range(3):
                    sess.run(None, feed)
                jobs.append((model, stage, b, sess, feed, []))
    for r in range(rounds):
        shift = r % len(jobs)
        for *_, sess, feed, times in jobs[shift:] + jobs[:shift]:
            t0 = time.perf_counter()
            sess.run(None, feed)
            times.append(time.perf_counter() - t0)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for model, stage, b, _, _, times in jobs:
        out.setdefault(model, {}).setdefault(stage, {})[str(b)] = 1e3 * statistics.median(times)
    return out


def cost(model: nn.Module, size: int) -> dict[str, dict[str, int]]:
    a = model.num_attrs
    whole, parts = count_macs(model.whole, size), count_macs(model.parts, size)
    head = 2 * a + a * a  # the mix and the relation layer
    return {"params": {"whole": count_params(model.whole), "crops": 0,
                       "parts": count_params(model.parts), "head": a * a + a,
                       "cascade": count_params(model)},
            "macs": {"whole": whole, "crops": 0, "parts": parts, "head": head,
                     "cascade": whole + parts + head}}


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [f"The cascade per stage on this CPU ({env.get('cpu_model') or '?'}, INT8 class "
             f"{env.get('cpu_int8_class') or '?'}, "
             f"{result['threads']} ONNX Runtime threads, fp32; median ms per call over "
             f"{result['rounds']} rounds, stages interleaved in one process).", ""]
    batches = result["batches"]
    head = ["model", "stage", "params", "MACs"] + [f"ms @ batch {b}" for b in batches]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    for name, rec in result["models"].items():
        for stage in STAGES:
            ms = [f"{rec['ms'][stage][str(b)]:.3f}" for b in batches]
            lines.append(f"| {name} | {stage} | {rec['params'][stage] / 1e6:.3f}M | "
                         f"{rec['macs'][stage] / 1e6:.1f}M | " + " | ".join(ms) + " |")
        sums = [f"{sum(rec['ms'][s][str(b)] for s in STAGES[:-1]):.3f}" for b in batches]
        lines.append(f"| {name} | sum of the stages | | | " + " | ".join(sums) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cascade", type=Path, action="append", required=True,
                    help="a cascade run folder or best.pt (repeat)")
    ap.add_argument("--name", action="append", help="a label per --cascade")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--md-out", type=Path)
    args = ap.parse_args()
    names = args.name or [str(c) for c in args.cascade]
    if len(names) != len(args.cascade):
        ap.error("give one --name per --cascade")
    batches = [int(b) for b in args.batches.split(",")]
    models, graphs = {}, {}
    with tempfile.TemporaryDirectory(prefix="cascade-latency-") as tmp:
        for name, run in zip(names, args.cascade, strict=True):
            ckpt = load_checkpoint(run)
            if ckpt["arch"]["arch"] != "cascade":
                ap.error(f"{run} is a {ckpt['arch']['arch']} run, not a cascade")
            model = model_from_checkpoint(ckpt)
            size = int(ckpt["preprocess"]["size"][0])
            where = Path(tmp) / name.replace("/", "_")
            where.mkdir()
            graphs[name] = stage_graphs(model, size, where)
            models[name] = {"checkpoint": str(ckpt["path"]), "size": size,
                            "arch": ckpt["arch"], **cost(model, size)}
        ms = time_sessions(graphs, batches, args.threads, args.rounds)
    for name in models:
        models[name]["ms"] = ms[name]
    result = {"benchmark": "cascade_latency", "command": command_line(),
              "environment": environment(threads=args.threads, query_tools=False), "threads": args.threads, "rounds": args.rounds,
              "batches": batches, "models": models}
    table = markdown(result)
    print(json.dumps(result))
    print(table)
    write_results(result, table, args.json_out, args.md_out)


if __name__ == "__main__":
    main()
