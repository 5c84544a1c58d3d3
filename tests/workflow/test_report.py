"""The report's verdict and per-model choice, on hand-made rows: the accuracy gate first,
then latency within the measured noise (a tie), then file size; rejected variants say why."""

from __future__ import annotations

from facedistill.workflow.report import _pick, _why_missing, ship_variants, verdict


def _row(model: str, acc: float, timings: dict[str, tuple[float, float, int]]) -> dict:
    row = {"model": model, "arch": model, "mean_balanced": acc, "delta": acc - 0.70}
    for p in ("fp32", "fp16", "int8"):
        ms, p90, size = timings.get(p, (None, None, None))
        row.update({f"{p}_ms_b1": ms, f"{p}_p90_b1": p90, f"{p}_bytes": size,
                    f"{p}_onnx": f"{model}.{p}.onnx" if ms is not None else None})
    row["ship"] = ship_variants(row, [1])
    return row


def test_a_tie_within_noise_goes_to_the_smaller_file() -> None:
    # fp32 0.568 ms, int8 0.574 ms: within either's spread, so a tie; int8 is 3.5x smaller
    row = _row("snet3", 0.75, {"fp32": (0.568, 0.600, 1_270_000),
                               "int8": (0.574, 0.610, 360_000)})
    assert row["ship"]["1"] == {"precision": "int8", "tied": ["fp32", "int8"]}
    # a clear gap is no tie: the faster file wins whatever its size
    fast = _row("snet3", 0.75, {"fp32": (0.40, 0.41, 1_270_000), "int8": (0.57, 0.58, 360_000)})
    assert fast["ship"]["1"] == {"precision": "fp32", "tied": []}
    assert _pick([]) is None


def test_the_verdict_is_the_fastest_model_within_the_gate_of_the_best() -> None:
    rows = [_row("teacher", 0.70, {"fp32": (1.1, 1.2, 8_000_000)}),
            _row("snet3", 0.745, {"fp32": (0.5, 0.52, 1_300_000)}),
            _row("cascade", 0.752, {"fp32": (2.2, 2.3, 11_000_000)})]
    chosen = verdict(rows, [1], max_drop=1.0)
    assert (chosen["model"], chosen["precision"]) == ("snet3", "fp32")  # 0.7 pt below best
    assert chosen["path"] == "snet3.fp32.onnx" and chosen["ms"] == {"1": 0.5}
    strict = verdict(rows, [1], max_drop=0.5)
    assert strict["model"] == "cascade"  # nothing else within half a point
    assert verdict(rows, [], max_drop=1.0) is None


def test_a_rejected_int8_says_by_how_much() -> None:
    gate = {"max_drop_points": 1.0, "results": {"int8": {"drop_points": 1.43, "passed": False}}}
    assert _why_missing("int8", {"gate": gate}, gate) == \
        "rejected: -1.43 pt on val, more than the gate's 1"
    assert _why_missing("fp16", {"gate": gate}, gate) == "not exported (export precision)"
