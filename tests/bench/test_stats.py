"""Latency statistics and the interleaved loop, on a fake clock: exact numbers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from facedistill.bench.stats import (
    interleave,
    percentile,
    rotation,
    summarize,
    throughput,
)


class FakeClock:
    """Returns the given timestamps (seconds) one per call; fails when they run out."""

    def __init__(self, stamps: list[float]) -> None:
        self._it: Iterator[float] = iter(stamps)
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return next(self._it)


def test_percentiles_interpolate_linearly_like_numpy() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100 ms
    assert percentile(values, 50) == pytest.approx(50.5, abs=1e-12)
    assert percentile(values, 90) == pytest.approx(90.1, abs=1e-12)
    assert percentile(values, 99) == pytest.approx(99.01, abs=1e-12)
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    np = pytest.importorskip("numpy")
    for q in (10, 37.5, 90, 99):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), abs=1e-12)
    with pytest.raises(ValueError):
        percentile([], 50)


def test_summary_of_known_samples() -> None:
    s = summarize([4.0, 1.0, 3.0, 2.0])
    assert s["median"] == 2.5 and s["min"] == 1.0 and s["max"] == 4.0
    assert s["mean"] == 2.5
    assert s["p90"] == pytest.approx(3.7, abs=1e-12)  # pos 2.7 between 3 and 4
    assert s["p99"] == pytest.approx(3.97, abs=1e-12)
    assert s["std"] == pytest.approx(1.118033988749895, abs=1e-12)
    assert throughput(10.0, 32) == pytest.approx(3200.0)


def test_rounds_rotate_the_order() -> None:
    assert [rotation(3, r) for r in range(4)] == [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]
    assert rotation(0, 5) == []


def test_interleave_iters_on_a_fake_clock_gives_exact_latencies() -> None:
    order: list[str] = []

    def make(name: str) -> object:
        def call() -> None:
            order.append(name)
        return call

    a, b = make("a"), make("b")
    # 2 rounds x 2 configs = 4 timed calls, 2 reads each; durations 1, 2, 3, 4 ms in call order
    # round 0: a (1 ms), b (2 ms); round 1 (rotated): b (3 ms), a (4 ms)
    stamps = [0.0, 0.001, 1.0, 1.002, 2.0, 2.003, 3.0, 3.004]
    clock = FakeClock(stamps)
    progress: list[tuple[int, int]] = []
    out = interleave([a, b], warmup=2, iters=2, clock=clock,
                     progress=lambda d, t: progress.append((d, t)))
    assert order == ["a", "a", "b", "b", "a", "b", "b", "a"]  # warm-up, then rotated rounds
    assert clock.reads == 8
    assert out[0].host_ms == pytest.approx([1.0, 4.0], abs=1e-9)
    assert out[1].host_ms == pytest.approx([2.0, 3.0], abs=1e-9)
    assert out[0].runs == out[1].runs == 2 and out[0].warmup == 2
    assert summarize(out[0].host_ms)["median"] == pytest.approx(2.5, abs=1e-9)
    assert progress[-1] == (8, 8)


def test_interleave_records_gpu_times() -> None:
    gpu = iter([0.5, 0.25, 0.75])
    out = interleave([lambda: next(gpu)], warmup=0, iters=3,
                     clock=FakeClock([0, 0.001, 1, 1.001, 2, 2.001]))
    assert out[0].gpu_ms == [0.5, 0.25, 0.75]
    assert summarize(out[0].gpu_ms)["median"] == 0.5


def test_interleave_seconds_stops_on_budget_after_min_rounds() -> None:
    # one config, 10 ms per call; budget 0.05 s -> stops when >= 0.05 s elapsed
    t = [0.0]

    def clock() -> float:
        return t[0]

    def call() -> None:
        t[0] += 0.010

    out = interleave([call], warmup=0, seconds=0.05, min_rounds=3, clock=clock)
    assert out[0].runs == 5 and out[0].host_ms == pytest.approx([10.0] * 5)
    # a tiny budget still runs min_rounds
    out = interleave([call], warmup=0, seconds=1e-6, min_rounds=3, clock=clock)
    assert out[0].runs == 3
    # two configs share the budget: seconds is per config, so 0.05 s x 2 at 10 ms per call
    out = interleave([call, call], warmup=0, seconds=0.05, min_rounds=1, clock=clock)
    assert [s.runs for s in out] == [5, 5]


@pytest.mark.parametrize("kw", [{}, {"iters": 1, "seconds": 1.0}, {"iters": 0},
                                {"seconds": 0.0}, {"iters": 1, "warmup": -1}])
def test_interleave_rejects_bad_plans(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        interleave([lambda: None], **kw)  # type: ignore[arg-type]


def test_over_seeds_is_mean_and_sample_std() -> None:
    import numpy as np

    from facedistill.bench.stats import over_seeds

    values = [0.61, 0.64, 0.66]
    got = over_seeds(values)
    assert got["n"] == 3 and got["mean"] == pytest.approx(np.mean(values))
    assert got["std"] == pytest.approx(np.std(values, ddof=1))
    assert over_seeds([0.5]) == {"mean": 0.5, "std": 0.0, "n": 1}
