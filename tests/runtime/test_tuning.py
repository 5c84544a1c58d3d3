"""``bench --tune``: candidates measured in rotated blocks, the sidecar it writes, and the
Predictor that runs each call with the setting tuned for its batch size. Real ONNX Runtime;
speed itself is never asserted (benchmarks/cpu_floor.py measures it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from facedistill.bench import markdown_table, run_bench
from facedistill.bench import tune as tune_mod
from facedistill.runtime import Predictor
from facedistill.runtime.tuning import Setting, parse_tuning, read_tuning, tune_path


@pytest.fixture
def model(tiny_onnx: Path, tmp_path: Path) -> Path:
    """A private copy: a sidecar beside the session's shared file would tune other tests."""
    return Path(shutil.copy(tiny_onnx, tmp_path / "snet3.fp32.onnx"))


def test_candidates_hold_both_baselines_and_each_setting_once() -> None:
    ort_only = tune_mod.candidates(cores=2, openvino=False)
    names = [n for n, _ in ort_only]
    assert names[0] == tune_mod.ORT_DEFAULTS and len(set(names)) == len(names)
    # 1 thread: 2 opt levels x I/O binding on/off; ORT's default threads (pinned workers): the
    # same x spinning on/off, less the one that is the baseline itself
    assert len(ort_only) == 1 + 4 + 7
    assert not any(s.spin for _, s in ort_only if s.threads == 1)
    assert {s.threads for _, s in ort_only} == {1, None}
    assert len({s for _, s in ort_only}) == len(ort_only)
    with_ov = tune_mod.candidates(cores=2, openvino=True)
    assert [n for n, _ in with_ov][1] == tune_mod.OV_DEFAULTS
    assert sum(s.backend == "ov" for _, s in with_ov) == 1 + 4
    assert len(tune_mod.candidates(cores=1, openvino=False)) == 1 + 4


class StepClock:
    """Every read advances 1 ms: each timed call takes exactly 1 ms."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 0.001
        return self.t


def test_blocks_run_each_call_once_a_round_in_shuffled_order_without_their_first_calls() -> None:
    order: list[int] = []
    n = 4
    calls = [lambda i=i: order.append(i) for i in range(n)]
    times = tune_mod.measure_blocks(calls, seconds=0.1, warmup=2, clock=StepClock())
    block = round(tune_mod.BLOCK_S / 0.001)  # 10 calls per block at 1 ms a call
    rounds = len(times[0]) // block
    assert rounds >= tune_mod.MIN_ROUNDS and all(len(t) == rounds * block for t in times)
    assert all(ms == pytest.approx(1.0) for t in times for ms in t)
    measured = order[n * 3:]  # after 2 warm-ups + 1 probe call each
    size = block + tune_mod.DISCARD
    assert len(measured) == n * rounds * size
    blocks = [measured[k * size:(k + 1) * size] for k in range(n * rounds)]
    assert all(len(set(b)) == 1 for b in blocks)  # a block is one call, back to back
    heads = [b[0] for b in blocks]
    per_round = [heads[r * n:(r + 1) * n] for r in range(rounds)]
    assert all(sorted(r) == list(range(n)) for r in per_round)
    # shuffled, seeded: the same order again with the same seed, and not one fixed cycle, so
    # no call always follows the same one
    assert len({tuple(r) for r in per_round}) > 1
    before = {(r[i - 1], r[i]) for r in per_round for i in range(1, n)}
    assert len({b for b, a in before if a == 0}) > 1
    again: list[int] = []
    tune_mod.measure_blocks([lambda i=i: again.append(i) for i in range(n)], seconds=0.1,
                            warmup=2, clock=StepClock())
    assert again == order


def test_tune_writes_a_sidecar_the_predictor_runs(model: Path) -> None:
    rec = tune_mod.tune_file(model, (1, 3), seconds=0.05, openvino=False)
    path = tune_path(model)
    assert path.name == "snet3.fp32.onnx.tune.json" and json.loads(path.read_text()) == rec
    tuning, why = read_tuning(model)
    assert why is None and tuning is not None and sorted(tuning.choices) == [1, 3]
    for b in (1, 3):
        rows = [c for c in rec["candidates"] if c["batch"] == b]
        assert all(c["agrees"] and c["max_abs_diff"] <= 1e-4 for c in rows)
        entry = rec["batches"][str(b)]
        fair = [c for c in rows if not c["setting"]["spin"]]
        for policy, pool, default in (("shared", fair, tune_mod.SHARED_DEFAULT.label()),
                                      ("dedicated", rows, tune_mod.ORT_DEFAULTS)):
            fastest = min(c["median_ms"] for c in pool)
            base = next(c for c in pool if c["name"] == default)
            keep = base["median_ms"] <= fastest * (1 + tune_mod.NOISE)
            assert entry[policy]["name"] == default if keep else (
                entry[policy]["median_ms"] == fastest)
        assert not entry["shared"]["setting"]["spin"]
        assert entry["shared_vs_best_default"] == pytest.approx(
            entry["ort_defaults_ms"] / entry["shared"]["median_ms"])

    tuned = Predictor(model)
    plain = Predictor(model, tuned=False)
    assert tuned.tuning is not None and plain.tuning is None
    want = {str(b): Setting.from_json(rec["batches"][str(b)]["shared"]["setting"], "s").to_json()
            for b in (1, 3)}
    assert tuned.describe()["tuning"]["settings"] == want
    assert tuned._backend_for(1) is tuned._backend
    assert tuned._backend_for(3).describe()["intra_op_threads"] == (
        want["3"]["threads"] or 0)
    x = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    for batch in (x[:1], x):
        got = np.stack([p.probabilities for p in tuned.predict_batch(list(batch))])
        ref = np.stack([p.probabilities for p in plain.predict_batch(list(batch))])
        np.testing.assert_allclose(got, ref, atol=1e-5)
    # explicit threads mean the user's settings, not the tuned ones
    assert Predictor(model, threads=1).tuning is None
    assert Predictor(model, spin=True).describe()["tuning"]["policy"] == "dedicated"


def test_a_tuning_applies_only_to_its_file_and_machine(model: Path) -> None:
    tune_mod.tune_file(model, (1,), seconds=0.02, openvino=False)
    path = tune_path(model)
    rec = json.loads(path.read_text())
    other = dict(rec, machine={**rec["machine"], "cpu_model": "Some Other CPU"})
    path.write_text(json.dumps(other))
    tuning, why = read_tuning(model)
    assert tuning is None and "cpu_model" in why and "bench --tune" in why
    assert Predictor(model).tuning is None and "cpu_model" in Predictor(model).tuning_note
    path.write_text(json.dumps(rec))
    with open(model, "ab") as f:  # the file changed since it was tuned
        f.write(b"\0")
    assert "another version of the file" in read_tuning(model)[1]
    path.write_text("{not json")
    assert "not a readable tuning" in read_tuning(model)[1]
    with pytest.raises(ValueError, match=r"batches.1.shared"):
        parse_tuning({**rec, "batches": {"1": {}}}, path)


def test_bench_tune_reports_and_writes(model: Path) -> None:
    res = run_bench([model], batch=(1,), warmup=1, iters=3, threads=1, tune=True,
                    tune_seconds=0.02)
    (row,) = res.tuning
    assert row["onnx"] == model.name and row["batch"] == 1 and row["shared_ms"] > 0
    assert tune_path(model).is_file()
    md = markdown_table(res)
    assert "Tuned settings" in md and "| snet3.fp32.onnx | 1 |" in md


def test_bench_tune_without_onnx_is_a_one_line_error(tiny_teacher: Path) -> None:
    from facedistill.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["bench", str(tiny_teacher), "--tune", "--iters", "1"])
    assert exc.value.code == 2
