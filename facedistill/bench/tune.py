"""``bench --tune``: the fastest CPU settings per (ONNX file, batch size), by measurement.

For each ONNX file and batch size every candidate :class:`~facedistill.runtime.tuning.Setting`
runs the same seeded input in shuffled *blocks*: each round, each candidate runs a few calls
back to back, the first ones of a block untimed. Blocks rather than single interleaved calls
because some candidates let ONNX Runtime's workers spin after a call, which steals the cores
from whatever runs next (``benchmarks/results/ort_spinning.md``); the untimed calls at the
start of a block absorb that, and the order of the blocks is shuffled every round (seeded), so
no candidate always follows the same one. The candidates:

* ONNX Runtime: intra-op threads 1 and its default (one per physical core, with the workers
  pinned to cores, which an explicit count is not: 1.3x faster without spinning on the 2-core
  AVX-512 machine), graph optimization ``all`` and ``extended``, with and without I/O binding,
  with and without spinning (more than 1 thread);
* OpenVINO (when installed): threads 1 and its default, latency and throughput hints;
* the two baselines the choice must beat: **ONNX Runtime's defaults** (its thread count, its
  spinning pool, plain ``run``) and **OpenVINO's defaults**.

A candidate whose probabilities differ from ONNX Runtime's defaults by more than
:data:`TOLERANCE` of its precision is not chosen (recorded with the difference). The choice per
batch size: ``shared`` = the fastest non-spinning setting, ``dedicated`` = the fastest of all.
A policy's default (ONNX Runtime's defaults; for ``shared`` its default threads without
spinning) is kept unless a candidate beats it by more than :data:`NOISE`. Written atomically
to ``<file>.tune.json`` (:mod:`facedistill.runtime.tuning`), which
``Predictor`` reads.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from facedistill.bench.stats import Clock, summarize
from facedistill.io import atomic_write_json, sha256_file
from facedistill.runtime.backends import open_setting
from facedistill.runtime.cpu import int8_class
from facedistill.runtime.openvino import have_openvino
from facedistill.runtime.tuning import TUNE_FORMAT, Setting, machine_key, tune_path

TOLERANCE = {"fp32": 1e-4, "fp16": 2e-3, "bf16": 2e-2, "int8": 2e-2}
"""Largest probability difference to ONNX Runtime's defaults a candidate may show (OpenVINO
and ONNX Runtime order their sums differently; INT8 kernels round differently)."""
ORT_DEFAULTS = "ort defaults"
SHARED_DEFAULT = Setting(threads=None, spin=False)
"""What an untuned Predictor runs: ONNX Runtime's default threads, no spinning."""
NOISE = 0.03
"""A candidate must beat its policy's default by more than this to replace it: medians of one
setting moved by a few percent between runs on the 2-core machines."""
OV_DEFAULTS = "ov defaults"
BLOCK_S = 0.01
"""About this long per block (at least :data:`MIN_BLOCK` calls)."""
MIN_BLOCK, MAX_BLOCK, DISCARD, MIN_ROUNDS = 3, 50, 2, 5

Progress = Callable[[int, int], None]


def candidates(cores: int, openvino: bool) -> list[tuple[str, Setting]]:
    """(name, setting) of everything tried, the two baselines first."""
    baseline = Setting(threads=None, spin=True)
    out = [(ORT_DEFAULTS, baseline)]
    if openvino:
        out.append((OV_DEFAULTS, Setting(backend="ov", threads=None, hint=None)))
    for threads in (1, None) if cores > 1 else (1,):
        for opt_level in ("all", "extended"):
            for io in (False, True):
                for spin in ((False,) if threads == 1 else (False, True)):
                    s = Setting(threads=threads, opt_level=opt_level, io_binding=io, spin=spin)
                    if s != baseline:
                        out.append((s.label(), s))
    if openvino:
        for threads in dict.fromkeys((1, None)):
            for hint in ("latency", "throughput"):
                s = Setting(backend="ov", threads=threads, hint=hint)
                out.append((s.label(), s))
    return out


def measure_blocks(calls: Sequence[Callable[[], Any]], seconds: float, warmup: int = 3,
                   clock: Clock = time.perf_counter, seed: int = 0) -> list[list[float]]:
    """Milliseconds per call of each of ``calls``, measured in blocks, every call once per
    round in an order shuffled each round with ``seed`` (see the module docstring), for about
    ``seconds`` per call in all."""
    n = len(calls)
    per_call = []
    for call in calls:
        for _ in range(warmup):
            call()
        t0 = clock()
        call()
        per_call.append(max(clock() - t0, 1e-6))
    block = [min(MAX_BLOCK, max(MIN_BLOCK, round(BLOCK_S / t))) for t in per_call]
    round_s = sum((b + DISCARD) * t for b, t in zip(block, per_call, strict=True))
    rounds = max(MIN_ROUNDS, math.ceil(seconds * n / round_s)) if round_s > 0 else MIN_ROUNDS
    out: list[list[float]] = [[] for _ in range(n)]
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        for i in rng.permutation(n).tolist():
            for j in range(block[i] + DISCARD):
                t0 = clock()
                calls[i]()
                t1 = clock()
                if j >= DISCARD:
                    out[i].append((t1 - t0) * 1000.0)
    return out


def tune_file(path: str | os.PathLike[str], batches: Sequence[int], seconds: float = 0.5,
              openvino: bool | None = None, progress: Progress | None = None,
              cores: int | None = None) -> dict[str, Any]:
    """Tune one ONNX file at ``batches``; writes and returns its tuning record."""
    from facedistill.bench.core import make_input

    path = Path(path)
    openvino = have_openvino() if openvino is None else openvino
    cores = cores or _physical_cores()
    tried = candidates(cores, openvino)
    backends = [open_setting(path, s) for _, s in tried]
    try:
        info = backends[0].info
        record: dict[str, Any] = {
            "format": TUNE_FORMAT, "onnx": path.name, "onnx_sha256": sha256_file(path),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_key(), "cpu_class": int8_class(), "precision": info.precision,
            "method": {"seconds_per_candidate": seconds, "block_s": BLOCK_S,
                       "untimed_per_block": DISCARD, "tolerance": TOLERANCE.get(
                           info.precision, 1e-3)},
            "batches": {}, "candidates": []}
        tol = record["method"]["tolerance"]
        for bi, b in enumerate(batches):
            x = make_input(info.preprocess, b)
            ref = backends[0].run(x)
            diffs = [float(np.abs(be.run(x) - ref).max()) for be in backends]
            times = measure_blocks([lambda be=be, x=x: be.run(x) for be in backends], seconds)
            rows = []
            for (name, s), ms, diff in zip(tried, times, diffs, strict=True):
                st = summarize(ms)
                rows.append({"name": name, "batch": b, "setting": s.to_json(),
                             "median_ms": st["median"], "p90_ms": st["p90"], "runs": len(ms),
                             "max_abs_diff": diff, "agrees": diff <= tol})
            record["candidates"] += rows
            record["batches"][str(b)] = _choose(rows)
            if progress is not None:
                progress(bi + 1, len(batches))
        atomic_write_json(tune_path(path), record)
        return record
    finally:
        for be in backends:
            be.close()


def _choose(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per policy the fastest agreeing candidate - unless the runtime's own default for that
    policy (ONNX Runtime's defaults for ``dedicated``; its default threads without spinning,
    what an untuned Predictor runs, for ``shared``) is within :data:`NOISE` of it: a setting
    replaces the default only when it is measurably faster, not by the luck of one run."""
    ok = [r for r in rows if r["agrees"]]
    by_name = {r["name"]: r for r in rows}

    def pick(pool: list[dict[str, Any]], default: str) -> dict[str, Any]:
        best = min(pool, key=lambda r: r["median_ms"])
        base = by_name.get(default)
        if base is not None and base in pool and base["median_ms"] <= best["median_ms"] * (
                1 + NOISE):
            best = base
        return {"setting": best["setting"], "median_ms": best["median_ms"],
                "p90_ms": best["p90_ms"], "name": best["name"]}

    shared = pick([r for r in ok if not r["setting"]["spin"]], SHARED_DEFAULT.label())
    dedicated = pick(ok, ORT_DEFAULTS)
    ort_ms = by_name[ORT_DEFAULTS]["median_ms"]
    ov = by_name.get(OV_DEFAULTS)
    best_default = min(ort_ms, ov["median_ms"]) if ov else ort_ms
    return {"shared": shared, "dedicated": dedicated, "ort_defaults_ms": ort_ms,
            "ov_defaults_ms": None if ov is None else ov["median_ms"],
            "shared_vs_best_default": best_default / shared["median_ms"],
            "dedicated_vs_best_default": best_default / dedicated["median_ms"]}


def _physical_cores() -> int:
    """Cores as ONNX Runtime counts its default threads (physical, else logical)."""
    from facedistill.runtime.cpu import cpuinfo_blocks

    pairs = {(b.get("physical id"), b.get("core id")) for b in cpuinfo_blocks()
             if b.get("core id") is not None}
    return len(pairs) or os.cpu_count() or 1


def tune_files(paths: Sequence[str | os.PathLike[str]], batches: Sequence[int],
               seconds: float = 0.5, progress: Progress | None = None) -> list[dict[str, Any]]:
    """:func:`tune_file` for every path, progress over all of them."""
    out = []
    total = len(paths) * len(batches)
    for i, p in enumerate(paths):
        def step(d: int, _t: int, base: int = i * len(batches)) -> None:
            if progress is not None:
                progress(base + d, total)
        out.append(tune_file(p, batches, seconds, progress=step))
    return out


def summary_rows(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per (file, batch) for the bench result and its table."""
    rows = []
    for rec in records:
        for b, entry in rec["batches"].items():
            rows.append({"onnx": rec["onnx"], "precision": rec["precision"], "batch": int(b),
                         "shared": entry["shared"]["name"],
                         "shared_ms": entry["shared"]["median_ms"],
                         "dedicated": entry["dedicated"]["name"],
                         "dedicated_ms": entry["dedicated"]["median_ms"],
                         "ort_defaults_ms": entry["ort_defaults_ms"],
                         "ov_defaults_ms": entry["ov_defaults_ms"],
                         "shared_vs_best_default": entry["shared_vs_best_default"]})
    return rows
