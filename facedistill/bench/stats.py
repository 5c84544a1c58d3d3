"""Latency statistics and the interleaved measuring loop (numpy-free, torch-free).

The loop takes plain callables, one per measured *config* (an artifact variant at one batch
size), and a clock, so a deterministic fake clock gives exact numbers in tests.

Fairness on a noisy machine: configs are never measured one after the other. Every config is
warmed up first, then the loop runs *rounds*; a round calls every config once, in an order
rotated by one place per round, so drifts (thermal throttling, a neighbour's job, a frequency
change) hit every config alike and ratios between them stay meaningful.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

Clock = Callable[[], float]
Progress = Callable[[int, int], None]
RunOnce = Callable[[], "float | None"]
"""Runs one inference; returns the GPU compute time in ms (CUDA events) or ``None`` on a CPU."""

MIN_ROUNDS = 3
"""In ``seconds`` mode the loop runs at least this many rounds even when time is up."""


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of already sorted values, linear interpolation between
    closest ranks (numpy's default ``linear`` method): ``pos = q / 100 * (n - 1)``."""
    n = len(sorted_values)
    if n == 0:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} outside 0..100")
    pos = q / 100.0 * (n - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


def summarize(values_ms: Sequence[float]) -> dict[str, float]:
    """``median``, ``p90``, ``p99``, ``mean``, ``min``, ``max``, ``std`` (population) in ms."""
    if not values_ms:
        raise ValueError("no samples to summarize")
    s = sorted(float(v) for v in values_ms)
    mean = math.fsum(s) / len(s)
    var = math.fsum((v - mean) ** 2 for v in s) / len(s)
    return {
        "median": percentile(s, 50.0),
        "p90": percentile(s, 90.0),
        "p99": percentile(s, 99.0),
        "mean": mean,
        "min": s[0],
        "max": s[-1],
        "std": math.sqrt(var),
    }


def over_seeds(values: Sequence[float]) -> dict[str, float]:
    """``{"mean", "std", "n"}`` of one number measured once per seed (sample std, 0 for one
    seed): how the benchmarks report a comparison."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": float(mean), "std": float(std), "n": n}


def images_per_s(fn: Callable[[], object], batch: int, seconds: float,
                 clock: Clock = time.perf_counter) -> float:
    """Images/s of ``fn`` (one batch of ``batch`` images per call): two warm-up calls (oneDNN
    picks and caches its kernels on the first), then calls for at least ``seconds`` and two."""
    fn()
    fn()
    n, start = 0, clock()
    while True:
        fn()
        n += 1
        elapsed = clock() - start
        if elapsed >= seconds and n >= 2:
            return n * batch / elapsed


def throughput(mean_ms: float, batch: int) -> float:
    """Images per second at a mean latency of ``mean_ms`` per batch of ``batch`` images."""
    return batch / (mean_ms / 1000.0) if mean_ms > 0 else math.inf


@dataclass
class Samples:
    """What the loop measured for one config: host latencies and (GPU) compute times in ms."""

    host_ms: list[float] = field(default_factory=list)
    gpu_ms: list[float] = field(default_factory=list)
    warmup: int = 0

    @property
    def runs(self) -> int:
        return len(self.host_ms)


def rotation(n: int, round_index: int) -> list[int]:
    """The order of ``n`` configs in round ``round_index``: ``0..n-1`` rotated left by
    ``round_index`` places (round 0: 0,1,2; round 1: 1,2,0; ...)."""
    if n == 0:
        return []
    k = round_index % n
    return [*range(k, n), *range(k)]


def interleave(
    calls: Sequence[RunOnce],
    *,
    warmup: int = 10,
    iters: int | None = None,
    seconds: float | None = None,
    min_rounds: int = MIN_ROUNDS,
    clock: Clock = time.perf_counter,
    progress: Progress | None = None,
) -> list[Samples]:
    """Warm every config up, then measure in rotated rounds.

    ``iters``: exactly that many rounds (every config runs ``iters`` times). ``seconds``: rounds
    go on until ``seconds * len(calls)`` seconds of measuring have passed (about ``seconds`` per
    config) and at least ``min_rounds`` rounds ran. Exactly one of the two is given.

    Every call is timed by two clock reads around it; in ``seconds`` mode the loop reads the
    clock once more at the start and after every round. ``progress(done, total)`` counts calls
    (warm-up included); in ``seconds`` mode ``total`` is an estimate refined every round.
    """
    if (iters is None) == (seconds is None):
        raise ValueError("give exactly one of iters and seconds")
    if iters is not None and iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if seconds is not None and not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    n = len(calls)
    out = [Samples(warmup=warmup) for _ in range(n)]
    if n == 0:
        return out

    done = 0
    planned_rounds = iters if iters is not None else max(min_rounds, 1)

    def report() -> None:
        if progress is not None:
            progress(done, n * (warmup + planned_rounds))

    for call in calls:
        for _ in range(warmup):
            call()
            done += 1
            report()

    budget = None if seconds is None else seconds * n
    start = clock() if budget is not None else 0.0
    r = 0
    while True:
        if iters is not None and r >= iters:
            break
        for i in rotation(n, r):
            t0 = clock()
            gpu = calls[i]()
            t1 = clock()
            out[i].host_ms.append((t1 - t0) * 1000.0)
            if gpu is not None:
                out[i].gpu_ms.append(float(gpu))
            done += 1
        r += 1
        if budget is not None:
            elapsed = clock() - start
            if elapsed >= budget and r >= min_rounds:
                planned_rounds = r
                report()
                break
            per_round = elapsed / r
            left = math.ceil((budget - elapsed) / per_round) if per_round > 0 else 1
            planned_rounds = max(min_rounds, r + max(left, 0), r + 1)
        report()
    return out
