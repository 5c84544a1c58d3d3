"""Balanced accuracy and the exact threshold search, checked against brute force."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from facedistill import metrics
from facedistill.errors import UserError
from facedistill.metrics import (
    binary_rates,
    evaluate,
    mean_balanced_accuracy,
    search_thresholds,
)

# --------------------------------------------------------------------------- brute force


def brute_rule(s: np.ndarray, y: np.ndarray, reverse: bool) -> tuple[Fraction, float, float]:
    """Best rule over every candidate threshold value ``v`` (each distinct value, plus one above
    the max): positive iff ``s >= v`` (or ``s < v`` when ``reverse``). Returns the exact best
    ``tpr + tnr``, its float balanced accuracy computed as ``(tp/P + tn/N) / 2``, and the lowest
    candidate value reaching it."""
    s_list, y_list = s.tolist(), [bool(v) for v in y]
    n_pos = sum(y_list)
    n_neg = len(y_list) - n_pos
    best: tuple[Fraction, float, float] | None = None
    for v in [*sorted(set(s_list)), max(s_list) + 1.0]:
        pred = [(x < v) if reverse else (x >= v) for x in s_list]
        tp = sum(p and t for p, t in zip(pred, y_list, strict=True))
        tn = sum(not p and not t for p, t in zip(pred, y_list, strict=True))
        exact = Fraction(tp, n_pos) + Fraction(tn, n_neg)
        if best is None or exact > best[0]:  # strict: the lowest v wins ties
            best = (exact, (tp / n_pos + tn / n_neg) / 2, v)
    assert best is not None
    return best


def check_against_brute(scores: np.ndarray, labels: np.ndarray, polarity: str) -> None:
    res = search_thresholds(scores, labels, polarity=polarity)
    s2 = scores.reshape(len(scores), -1)
    y2 = labels.reshape(len(labels), -1)
    for c in range(s2.shape[1]):
        s, y = s2[:, c], y2[:, c].astype(bool)
        if y.all() or not y.any():
            assert res.single_class[c]
            continue
        assert not res.single_class[c]
        pos = brute_rule(s, y, reverse=False)
        rev = brute_rule(s, y, reverse=True)
        use_rev = polarity == "both" and rev[0] > pos[0]
        exact, balanced, v_best = rev if use_rev else pos
        assert res.sign[c] == (-1 if use_rev else 1)
        assert abs(res.balanced[c] - balanced) <= 1e-12
        # The threshold sits in (next lower distinct value, chosen value]: the lowest of the
        # equally good thresholds, and realising exactly the same split.
        t = res.thresholds[c]
        lower = s[s < v_best]
        assert t <= v_best
        if lower.size:
            assert lower.max() < t
        else:
            assert t < v_best
        assert float(exact) / 2 == pytest.approx(res.balanced[c], abs=1e-12)
    # Applying the returned thresholds reproduces the searched rates bit for bit.
    applied = binary_rates(scores, labels, res.thresholds, res.sign)
    np.testing.assert_array_equal(applied.balanced, res.balanced)
    np.testing.assert_array_equal(applied.tpr, res.tpr)
    np.testing.assert_array_equal(applied.tnr, res.tnr)


def random_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    m = int(rng.choice([1, 2, 3, 7, 40, 250]))
    c = int(rng.integers(1, 6))
    labels = rng.random((m, c)) < rng.uniform(0.05, 0.95, size=c)
    kind = seed % 4
    scores = rng.normal(size=(m, c)) + rng.normal(size=c) * labels
    if kind == 1:
        scores = np.round(scores, 1)  # heavy ties
    elif kind == 2:
        scores = rng.integers(-2, 3, size=(m, c)).astype(np.float64)  # very heavy ties
    elif kind == 3:
        scores[:, 0] = 0.25  # a constant column
    labels[:, -1] = labels[:, -1] if seed % 3 else seed % 2  # sometimes one class only
    return scores, labels.astype(np.int64)


# --------------------------------------------------------------------------- search


@pytest.mark.parametrize("polarity", ["positive", "both"])
@pytest.mark.parametrize("seed", range(40))
def test_search_matches_brute_force(seed: int, polarity: str) -> None:
    scores, labels = random_case(seed)
    check_against_brute(scores, labels, polarity)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=hnp.arrays(
        np.int8,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12),
        elements=st.integers(-3, 3),
    ),
    bits=st.integers(0, 2**64 - 1),
    polarity=st.sampled_from(["positive", "both"]),
)
def test_search_matches_brute_force_hypothesis(data: np.ndarray, bits: int, polarity: str) -> None:
    labels = np.random.default_rng(bits).random(data.shape) < 0.5
    check_against_brute(data.astype(np.float64) / 2, labels, polarity)


def test_search_small_hand_case() -> None:
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.8, 0.2])
    labels = np.array([0, 1, 0, 1, 0, 0])
    res = search_thresholds(scores, labels)
    # Best: positive iff s >= 0.4 (tpr 2/2, tnr 3/4) -> threshold midway between 0.35 and 0.4.
    assert res.thresholds[0] == pytest.approx(0.375)
    assert res.balanced[0] == (1.0 + 0.75) / 2
    assert (res.tpr[0], res.tnr[0]) == (1.0, 0.75)
    assert res.sign.dtype == np.int8 and res.sign[0] == 1
    assert res.thresholds.dtype == np.float64 and res.thresholds.shape == (1,)


def test_reversed_rule_is_chosen_and_exact() -> None:
    scores = np.array([[-1.0], [0.0], [0.0], [2.0], [3.0]])
    labels = np.array([[1], [1], [0], [0], [0]])
    pos = search_thresholds(scores, labels)
    both = search_thresholds(scores, labels, polarity="both")
    assert pos.sign[0] == 1 and both.sign[0] == -1
    # Reversed: positive iff s < t with t in (0, 2] -> tpr 1, tnr 2/3.
    assert both.thresholds[0] == 1.0
    assert both.balanced[0] == (1.0 + 2 / 3) / 2
    assert both.balanced[0] > pos.balanced[0]


def test_polarity_tie_keeps_positive_rule() -> None:
    # A perfectly symmetric column: both rules reach 0.75; the positive rule wins the tie.
    scores = np.array([0.0, 1.0, 2.0, 3.0])
    labels = np.array([0, 1, 1, 0])
    res = search_thresholds(scores, labels, polarity="both")
    assert res.sign[0] == 1 and res.balanced[0] == 0.75
    assert res.thresholds[0] == 0.5  # the lowest of the equally good thresholds


def test_threshold_endpoints() -> None:
    # All positives below all negatives with the positive rule: every split scores <= 0.5, and
    # "everything positive" (lowest threshold) is min - 1.0.
    res = search_thresholds(np.array([1.0, 2.0, 5.0]), np.array([1, 0, 0]))
    assert res.balanced[0] == 0.5 and res.thresholds[0] == 0.0
    res = search_thresholds(np.array([1.0, 2.0, 5.0]), np.array([1, 1, 0]), polarity="both")
    assert res.sign[0] == -1 and res.balanced[0] == 1.0 and res.thresholds[0] == 3.5
    res = search_thresholds(np.array([1.0, 2.0, 5.0]), np.array([0, 1, 1]))
    assert res.thresholds[0] == 1.5 and res.balanced[0] == 1.0
    # "Above the max" always ties with "everything positive" (both 0.5) and loses the tie, so
    # it is only reachable through the helper: max + 1.0, or the next float where that rounds.
    big = np.finfo(np.float64).max
    sorted_block = np.array([[1.0, 3.0], [1.0, big]])
    got = metrics._split_thresholds(sorted_block, np.array([2, 2]))
    np.testing.assert_array_equal(got, [4.0, np.inf])
    got = metrics._split_thresholds(sorted_block, np.array([0, 1]))
    np.testing.assert_array_equal(got, [0.0, big / 2])


def test_adjacent_floats_and_extremes() -> None:
    a = 1.0
    b = np.nextafter(a, 2.0)  # no float strictly between a and b
    big = np.finfo(np.float64).max
    scores = np.array([[a, -big], [b, big], [a, -big], [b, big]])
    labels = np.array([[0, 0], [1, 1], [0, 0], [1, 1]])
    res = search_thresholds(scores, labels, polarity="both")
    np.testing.assert_array_equal(res.balanced, [1.0, 1.0])
    assert res.thresholds[0] == b  # midpoint rounds onto a neighbour -> the upper value
    assert np.isfinite(res.thresholds).all()
    assert res.thresholds[1] == 0.0  # halves first: no overflow to inf
    applied = binary_rates(scores, labels, res.thresholds, res.sign)
    np.testing.assert_array_equal(applied.balanced, [1.0, 1.0])


def test_single_class_columns_use_fallback() -> None:
    scores = np.array([[0.5, 0.5], [-0.5, -0.5], [1.0, 1.0], [0.25, 0.25]])
    labels = np.array([[1, 0], [1, 0], [1, 0], [1, 0]])
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        res = search_thresholds(scores, labels, fallback=0.3, polarity="both")
    np.testing.assert_array_equal(res.single_class, [True, True])
    np.testing.assert_array_equal(res.thresholds, [0.3, 0.3])
    np.testing.assert_array_equal(res.sign, [1, 1])
    assert res.tpr[0] == 0.5 and np.isnan(res.tnr[0]) and res.balanced[0] == 0.5
    assert np.isnan(res.tpr[1]) and res.tnr[1] == 0.5 and res.balanced[1] == 0.5
    res = search_thresholds(scores, labels)  # default fallback 0.0
    assert res.balanced[0] == 0.75 and res.balanced[1] == 0.25


def test_one_row_and_one_dimensional_input() -> None:
    res = search_thresholds(np.array([0.7]), np.array([True]))
    assert res.single_class[0] and res.thresholds[0] == 0.0 and res.balanced[0] == 1.0
    res = search_thresholds([0.1, 0.9], [False, True])
    assert res.thresholds.shape == (1,) and res.balanced[0] == 1.0 and res.thresholds[0] == 0.5


def test_label_dtypes_agree() -> None:
    scores, labels = random_case(5)
    ref = search_thresholds(scores, labels)
    for lab in (labels.astype(bool), labels.astype(np.float32), labels.astype(np.uint8)):
        got = search_thresholds(scores.astype(np.float32).astype(np.float64), lab)
        np.testing.assert_array_equal(got.balanced, ref.balanced)


def test_blocks_of_columns_give_the_same_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    scores = np.round(rng.normal(size=(9, 7)), 1)
    labels = rng.random((9, 7)) < 0.4
    ref = search_thresholds(scores, labels, polarity="both")
    ref_rates = binary_rates(scores, labels, ref.thresholds, ref.sign)
    for budget in (1, 9, 20, 50):
        monkeypatch.setattr(metrics, "CHUNK_ELEMENTS", budget)
        got = search_thresholds(scores, labels, polarity="both")
        for field in ("thresholds", "balanced", "tpr", "tnr", "sign", "single_class"):
            np.testing.assert_array_equal(getattr(got, field), getattr(ref, field))
        rates = binary_rates(scores, labels, ref.thresholds, ref.sign)
        np.testing.assert_array_equal(rates.balanced, ref_rates.balanced)
    monkeypatch.setattr(metrics, "CHUNK_ELEMENTS", 9)
    scores[4, 5] = np.nan  # found in a later block, reported with its global column
    with pytest.raises(UserError, match=r"column 5, row 4: nan"):
        search_thresholds(scores, labels)


def test_scale_matches_cumulative_reference() -> None:
    rng = np.random.default_rng(11)
    m, c = 200_000, 40
    labels = rng.random((m, c)) < rng.uniform(0.02, 0.6, size=c)
    scores = (rng.normal(size=(m, c)) + labels * rng.uniform(0, 2, size=c)).astype(np.float32)
    scores[:, 1] = np.round(scores[:, 1], 1)  # many ties in one column
    res = search_thresholds(scores, labels)
    applied = binary_rates(scores, labels, res.thresholds)
    np.testing.assert_array_equal(applied.balanced, res.balanced)
    for col in (0, 1, c - 1):
        # Independent reference: np.unique + bincount, positives at or above each value.
        values, inverse = np.unique(scores[:, col].astype(np.float64), return_inverse=True)
        pos_per = np.bincount(inverse, weights=labels[:, col], minlength=len(values))
        cnt_per = np.bincount(inverse, minlength=len(values))
        n_pos, n_neg = labels[:, col].sum(), m - labels[:, col].sum()
        pos_below = np.concatenate([[0], np.cumsum(pos_per)[:-1]])
        neg_below = np.concatenate([[0], np.cumsum(cnt_per - pos_per)[:-1]])
        balanced = ((n_pos - pos_below) / n_pos + neg_below / n_neg) / 2
        best = int(np.argmax(balanced))
        assert res.balanced[col] == pytest.approx(balanced[best], abs=1e-12)
        assert values[best - 1] < res.thresholds[col] <= values[best]


# --------------------------------------------------------------------------- binary_rates


def test_binary_rates_hand_computed() -> None:
    s = np.array([0.9, 0.4, -0.2, -1.0, 0.0, 2.0])
    y = np.array([1, 1, 0, 0, 1, 0])
    scores = np.stack([s, s, s], axis=1)
    labels = np.stack([y, y, y], axis=1)
    r = binary_rates(scores, labels, [0.0, 0.5, 0.0], sign=[1, 1, -1])
    # col 0, s >= 0: predicted [1,1,0,0,1,1]; TP 3/3, TN 2/3 (rows 2, 3), accuracy 5/6.
    # col 1, s >= 0.5: predicted [1,0,0,0,0,1]; TP 1/3, TN 2/3, accuracy 3/6.
    # col 2, s < 0: predicted [0,0,1,1,0,0]; TP 0/3, TN 1/3 (row 5), accuracy 1/6.
    np.testing.assert_allclose(r.tpr, [1.0, 1 / 3, 0.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(r.tnr, [2 / 3, 2 / 3, 1 / 3], rtol=0, atol=1e-15)
    np.testing.assert_allclose(r.balanced, [5 / 6, 1 / 2, 1 / 6], rtol=0, atol=1e-15)
    np.testing.assert_allclose(r.accuracy, [5 / 6, 3 / 6, 1 / 6], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(r.n_pos, [3, 3, 3])
    np.testing.assert_array_equal(r.n_neg, [3, 3, 3])
    assert r.n_pos.dtype == np.int64 and r.balanced.dtype == np.float64


def test_binary_rates_single_class_no_warnings() -> None:
    scores = np.array([[0.5, 0.5], [-0.5, -0.5], [1.0, 1.0]])
    labels = np.array([[1, 0], [1, 0], [1, 0]])
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        r = binary_rates(scores, labels, 0.0)
        assert mean_balanced_accuracy(scores, labels, 0.0) == pytest.approx(0.5)
    assert r.tpr[0] == pytest.approx(2 / 3) and np.isnan(r.tnr[0])
    assert np.isnan(r.tpr[1]) and r.tnr[1] == pytest.approx(1 / 3)
    np.testing.assert_allclose(r.balanced, [2 / 3, 1 / 3])
    np.testing.assert_allclose(r.accuracy, [2 / 3, 1 / 3])
    np.testing.assert_array_equal(r.n_pos, [3, 0])


def test_binary_rates_infinite_thresholds() -> None:
    r = binary_rates([0.0, 1.0], [0, 1], [np.inf])
    assert (r.tpr[0], r.tnr[0]) == (0.0, 1.0)
    r = binary_rates([0.0, 1.0], [0, 1], -np.inf)
    assert (r.tpr[0], r.tnr[0]) == (1.0, 0.0)


def test_mean_balanced_accuracy() -> None:
    scores = np.array([[0.1, 3.0], [0.9, 2.0], [0.6, 1.0]])
    labels = np.array([[0, 1], [1, 0], [1, 0]])
    assert mean_balanced_accuracy(scores, labels) == 1.0  # searched in-sample
    # at 0.5: col 0 perfect; col 1 everything positive -> (1 + 0) / 2
    assert mean_balanced_accuracy(scores, labels, 0.5) == 0.75


# --------------------------------------------------------------------------- evaluate


def _eval_case() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    val_s = np.array([0.2, 0.4, 0.6, 1.2, 1.4, 1.6])
    val_y = np.array([0, 0, 0, 1, 1, 1])
    test_s = np.array([0.1, 0.5, 1.0, 0.95, 2.0, 0.3, 1.5])
    test_y = np.array([0, 0, 0, 1, 1, 1, 1])
    return (
        np.stack([val_s, val_s], 1),
        np.stack([val_y, val_y], 1),
        np.stack([test_s, test_s], 1),
        np.stack([test_y, np.zeros_like(test_y)], 1),  # attribute B: no positives in test
    )


def test_evaluate_applies_val_thresholds_to_test() -> None:
    report = evaluate(*_eval_case(), ["A", "B"])
    a, b = report["attributes"]
    # val: separable between 0.6 and 1.2 -> threshold 0.9, val balanced 1.
    assert a["threshold"] == pytest.approx(0.9) and a["val_balanced"] == 1.0
    # test A at 0.9: predicted [0,0,1,1,1,0,1]; TP 3/4 (rows 3,4,6), TN 2/3 (rows 0,1).
    assert a["tpr"] == 0.75 and a["tnr"] == pytest.approx(2 / 3)
    assert a["balanced"] == pytest.approx(17 / 24)
    assert a["accuracy_at_threshold"] == pytest.approx(5 / 7)
    # plain threshold 0: everything positive -> accuracy 4/7, balanced (1 + 0) / 2.
    assert a["accuracy"] == pytest.approx(4 / 7) and a["balanced_at_plain"] == 0.5
    assert (a["n_pos"], a["n_neg"], a["single_class"]) == (4, 3, False)
    # test B (all negative) at 0.9: TN 3/7 (rows 0,1,5); tpr undefined.
    assert b["tpr"] is None and b["tnr"] == pytest.approx(3 / 7)
    assert b["balanced"] == pytest.approx(3 / 7)
    assert b["accuracy"] == 0.0 and b["balanced_at_plain"] == 0.0
    assert (b["n_pos"], b["n_neg"], b["single_class"]) == (0, 7, True)

    assert report["mean_balanced"] == pytest.approx((17 / 24 + 3 / 7) / 2)
    assert report["mean_accuracy"] == pytest.approx((4 / 7 + 0.0) / 2)
    assert report["mean_balanced_at_plain"] == pytest.approx(0.25)
    assert report["thresholds_from"] == "val"
    assert report["single_class"] == ["B"] and report["val_single_class"] == []
    assert (report["n_val"], report["n_test"]) == (6, 7)
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text) == report


def test_evaluate_given_thresholds_and_val_single_class() -> None:
    val_s, val_y, test_s, test_y = _eval_case()
    report = evaluate(val_s, val_y, test_s, test_y, ["A", "B"], thresholds=[0.0, 1.1])
    a, b = report["attributes"]
    assert report["thresholds_from"] == "given"
    assert a["threshold"] == 0.0 and a["balanced"] == 0.5 and a["val_balanced"] == 0.5
    assert b["threshold"] == 1.1 and b["val_balanced"] == 1.0 and b["tnr"] == pytest.approx(5 / 7)

    val_y = val_y.copy()
    val_y[:, 1] = 0  # no positives in val for B: threshold falls back to the plain threshold
    report = evaluate(val_s, val_y, test_s, test_y, ["A", "B"], plain_threshold=0.7)
    assert report["val_single_class"] == ["B"]
    assert report["attributes"][1]["threshold"] == 0.7
    assert report["attributes"][1]["val_balanced"] == 0.5  # 3 of 6 val scores are below 0.7
    json.dumps(report, allow_nan=False)


def test_evaluate_infinite_threshold_is_null_in_json() -> None:
    val_s, val_y, test_s, test_y = _eval_case()
    report = evaluate(val_s, val_y, test_s, test_y, ["A", "B"], thresholds=[np.inf, 0.0])
    assert report["attributes"][0]["threshold"] is None
    json.dumps(report, allow_nan=False)


def test_evaluate_errors() -> None:
    val_s, val_y, test_s, test_y = _eval_case()
    with pytest.raises(UserError, match="3 attribute names but val scores have 2 columns"):
        evaluate(val_s, val_y, test_s, test_y, ["A", "B", "C"])
    with pytest.raises(UserError, match="thresholds must be a scalar or have 2 entries"):
        evaluate(val_s, val_y, test_s, test_y, ["A", "B"], thresholds=[0.0, 1.0, 2.0])
    bad = test_s.copy()
    bad[2, 1] = np.inf
    with pytest.raises(UserError, match=r"^test scores column 1 \('B'\), row 2: inf"):
        evaluate(val_s, val_y, bad, test_y, ["A", "B"])
    with pytest.raises(UserError, match=r"^val scores shape \(6, 2\) does not match"):
        evaluate(val_s, val_y[:, :1], test_s, test_y, ["A", "B"])


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("fn", [search_thresholds, mean_balanced_accuracy])
def test_input_errors(fn) -> None:
    s = np.zeros((5, 2))
    y = np.zeros((5, 2), dtype=np.int64)
    with pytest.raises(UserError, match=r"scores shape \(5, 2\) does not match labels shape"):
        fn(s, np.zeros((5, 3)))
    with pytest.raises(UserError, match=r"scores shape \(4,\) does not match labels shape \(5,\)"):
        fn(np.zeros(4), np.zeros(5))
    for bad_value in (2, -1):
        bad = y.copy()
        bad[3, 1] = bad_value
        with pytest.raises(UserError, match=rf"^labels column 1, row 3: {bad_value} is not 0 or 1"):
            fn(s, bad)
    bad_f = y.astype(np.float64)
    bad_f[1, 0] = np.nan
    with pytest.raises(UserError, match=r"labels column 0, row 1: nan is not 0 or 1"):
        fn(s, bad_f)
    for value, text in ((np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")):
        bad_s = s.copy()
        bad_s[4, 1] = value
        with pytest.raises(UserError, match=rf"^scores column 1, row 4: {text} is not a finite"):
            fn(bad_s, y)
    with pytest.raises(UserError, match=r"empty \(0 rows\)"):
        fn(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(UserError, match="empty"):
        fn([], [])
    with pytest.raises(UserError, match="no columns"):
        fn(np.zeros((3, 0)), np.zeros((3, 0)))
    with pytest.raises(UserError, match="1-D"):
        fn(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)))
    with pytest.raises(UserError, match="must be numbers"):
        fn(np.array(["a", "b"]), np.array([0, 1]))


def test_option_errors() -> None:
    s, y = np.array([0.0, 1.0]), np.array([0, 1])
    with pytest.raises(UserError, match="polarity"):
        search_thresholds(s, y, polarity="negative")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="fallback"):
        search_thresholds(s, y, fallback=float("nan"))
    with pytest.raises(UserError, match="sign entries must be"):
        binary_rates(s, y, 0.0, sign=[0])
    with pytest.raises(UserError, match="thresholds entry 0 is NaN"):
        binary_rates(s, y, [np.nan])
    with pytest.raises(UserError, match="thresholds must be a scalar or have 1 entries"):
        binary_rates(s, y, [0.0, 1.0])


def test_module_does_not_import_torch() -> None:
    code = "import sys, facedistill.metrics; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
