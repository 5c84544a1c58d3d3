"""Balanced accuracy (paper Eq. 7-9) with an exact per-attribute threshold search.

For attribute ``j`` with decision scores ``r`` (one per image) and a threshold ``e``::

    TPR = |{positives with r >= e}| / |positives|
    TNR = |{negatives with r <  e}| / |negatives|
    balanced accuracy = (TPR + TNR) / 2

The threshold of each attribute is searched exactly (every distinct score value is a candidate)
on the validation split and then applied unchanged to the test split (:func:`evaluate`). Plain
accuracy at a fixed threshold (logit 0, i.e. probability 0.5) is reported beside it.

numpy only, no torch: the neuron-selection code uses :func:`search_thresholds` on raw neuron
responses (one neuron's responses tiled across the 40 attribute columns; columns are paired,
column ``c`` of the scores is scored against column ``c`` of the labels).

Conventions shared by every function here:

* ``scores`` are ``[M, C]`` (or ``[M]``, read as ``C = 1``) finite numbers, ``labels`` the same
  shape with values in {0, 1} (bool, int or float). Bad input raises :class:`UserError` naming
  the column and the (0-based) row.
* A column with only one class present (``single_class``) has one undefined rate (NaN in
  ``tpr``/``tnr``); its balanced accuracy is the rate of the present class, so means over
  attributes stay defined and no division by zero ever happens.
* Work is done a block of columns at a time (at most :data:`CHUNK_ELEMENTS` matrix elements per
  block, a handful of temporaries of that size each), so 200,000 x 1,280 inputs stay within a
  few hundred MB and are never copied or converted as a whole.

Public API: :func:`search_thresholds`, :func:`binary_rates`, :func:`evaluate`,
:func:`mean_balanced_accuracy`, :class:`ThresholdSearch`, :class:`BinaryRates`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from facedistill.errors import UserError

__all__ = [
    "CHUNK_ELEMENTS",
    "BinaryRates",
    "ThresholdSearch",
    "binary_rates",
    "evaluate",
    "mean_balanced_accuracy",
    "search_thresholds",
    "search_thresholds_cross",
]

CHUNK_ELEMENTS = 1 << 22
"""Matrix elements (rows x columns) handled per block of columns. A block of the search holds
about six temporaries of this many 8-byte elements (~200 MB peak); a block always has at least
one column, however many rows there are."""

Polarity = Literal["positive", "both"]


@dataclass(frozen=True)
class ThresholdSearch:
    """Result of :func:`search_thresholds`, one entry per column.

    ``thresholds`` follow the rule "positive iff score >= threshold" where ``sign`` is +1 and
    "positive iff score < threshold" where ``sign`` is -1 (only with ``polarity="both"``).
    ``balanced``, ``tpr`` and ``tnr`` are measured on the searched data at that threshold.
    """

    thresholds: np.ndarray  # float64 [C]
    balanced: np.ndarray  # float64 [C]
    tpr: np.ndarray  # float64 [C], NaN where the column has no positives
    tnr: np.ndarray  # float64 [C], NaN where the column has no negatives
    sign: np.ndarray  # int8 [C], +1 or -1
    single_class: np.ndarray  # bool [C]


@dataclass(frozen=True)
class BinaryRates:
    """Result of :func:`binary_rates`, one entry per column."""

    balanced: np.ndarray  # float64 [C]; the present class's rate in a single-class column
    tpr: np.ndarray  # float64 [C], NaN where the column has no positives
    tnr: np.ndarray  # float64 [C], NaN where the column has no negatives
    accuracy: np.ndarray  # float64 [C], plain accuracy (TP + TN) / M
    n_pos: np.ndarray  # int64 [C]
    n_neg: np.ndarray  # int64 [C]


# --------------------------------------------------------------------------- input checks


def _as_2d(x: ArrayLike, what: str) -> np.ndarray:
    """``x`` as a 2-D numeric array (a view where possible; no dtype conversion yet)."""
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{what} cannot be read as a numeric array ({exc})") from None
    if arr.dtype.kind not in "biuf":
        raise UserError(f"{what} must be numbers, got dtype {arr.dtype}")
    if arr.ndim == 1:
        return arr[:, None]
    if arr.ndim != 2:
        raise UserError(f"{what} must be 1-D [M] or 2-D [M, C], got shape {arr.shape}")
    return arr


def _prepare(scores: ArrayLike, labels: ArrayLike, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes (``what`` prefixes messages, e.g. ``"val "``); values are checked per block."""
    s = _as_2d(scores, f"{what}scores")
    y = _as_2d(labels, f"{what}labels")
    if s.shape != y.shape:
        raise UserError(
            f"{what}scores shape {np.shape(scores)} does not match "
            f"{what}labels shape {np.shape(labels)}"
        )
    if s.shape[0] == 0:
        raise UserError(f"{what}scores are empty (0 rows)")
    if s.shape[1] == 0:
        raise UserError(f"{what}scores have no columns")
    return s, y


def _column(col: int, names: Sequence[str] | None) -> str:
    return f"column {col} ({names[col]!r})" if names is not None else f"column {col}"


def _blocks(n_rows: int, n_cols: int) -> Iterator[tuple[int, int]]:
    step = max(1, CHUNK_ELEMENTS // max(n_rows, 1))
    for start in range(0, n_cols, step):
        yield start, min(start + step, n_cols)


def _load_block(
    s: np.ndarray, y: np.ndarray, a: int, b: int, what: str, names: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Columns ``a:b`` transposed to contiguous ``[c, M]`` (rows of a block are columns of the
    input, so sorts and sums run along the fast axis): float64 scores and bool labels, checked."""
    return _load_scores(s, a, b, what, names), _load_labels(y, a, b, what, names)


def _load_scores(
    s: np.ndarray, a: int, b: int, what: str = "", names: Sequence[str] | None = None
) -> np.ndarray:
    """Score columns ``a:b`` as a checked (finite) contiguous float64 ``[c, M]`` block."""
    sc = np.array(s[:, a:b].T, dtype=np.float64, order="C")
    finite = np.isfinite(sc)
    if not finite.all():
        col, row = np.argwhere(~finite)[0]
        raise UserError(
            f"{what}scores {_column(a + int(col), names)}, row {int(row)}: "
            f"{sc[col, row]} is not a finite number"
        )
    return sc


def _load_labels(
    y: np.ndarray, a: int, b: int, what: str = "", names: Sequence[str] | None = None
) -> np.ndarray:
    """Label columns ``a:b`` as a checked (0/1) contiguous bool ``[c, M]`` block."""
    yc = y[:, a:b].T
    if yc.dtype != np.bool_:
        bad = (yc != 0) & (yc != 1)  # NaN compares unequal to both, so it is caught too
        if bad.any():
            col, row = np.argwhere(bad)[0]
            raise UserError(
                f"{what}labels {_column(a + int(col), names)}, row {int(row)}: "
                f"{yc[col, row].item()!r} is not 0 or 1"
            )
        yc = yc != 0
    return np.ascontiguousarray(yc, dtype=np.bool_)


def _per_column(value: ArrayLike | None, n: int, what: str, default: float) -> np.ndarray:
    """A scalar or ``[C]`` argument as float64 ``[C]`` (``None`` -> ``default``)."""
    arr = np.asarray(default if value is None else value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        raise UserError(f"{what} must be a scalar or have {n} entries, got shape {arr.shape}")
    if np.isnan(arr).any():
        raise UserError(f"{what} entry {int(np.argmax(np.isnan(arr)))} is NaN")
    return arr


def _signs(sign: ArrayLike | None, n: int) -> np.ndarray:
    arr = _per_column(sign, n, "sign", 1.0)
    if not np.isin(arr, (-1.0, 1.0)).all():
        raise UserError("sign entries must be +1 or -1")
    return arr.astype(np.int8)


# --------------------------------------------------------------------------- rates


def _rates(
    tp: np.ndarray, tn: np.ndarray, n_pos: np.ndarray, n_neg: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(balanced, tpr, tnr) from integer counts. The one place rates are computed, so the
    search and :func:`binary_rates` give bit-identical numbers for the same threshold."""
    tpr = np.full(tp.shape, np.nan)
    tnr = np.full(tn.shape, np.nan)
    np.divide(tp, n_pos, out=tpr, where=n_pos > 0)
    np.divide(tn, n_neg, out=tnr, where=n_neg > 0)
    balanced = np.where(n_pos == 0, tnr, np.where(n_neg == 0, tpr, (tpr + tnr) / 2))
    return balanced, tpr, tnr


def _count(
    s: np.ndarray,
    y: np.ndarray,
    thresholds: np.ndarray,
    sign: np.ndarray,
    what: str,
    names: Sequence[str] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tp, tn, n_pos) per column of a checked ``[M, C]`` pair at the given thresholds."""
    n_rows, n_cols = s.shape
    tp = np.empty(n_cols, np.int64)
    tn = np.empty(n_cols, np.int64)
    n_pos = np.empty(n_cols, np.int64)
    for a, b in _blocks(n_rows, n_cols):
        sc, yc = _load_block(s, y, a, b, what, names)
        t = thresholds[a:b, None]
        pred = sc >= t
        rev = sign[a:b] < 0
        if rev.any():
            pred[rev] = sc[rev] < t[rev]
        tp[a:b] = np.count_nonzero(pred & yc, axis=1)
        tn[a:b] = np.count_nonzero(~(pred | yc), axis=1)
        n_pos[a:b] = np.count_nonzero(yc, axis=1)
    return tp, tn, n_pos


def _binary_rates(
    s: np.ndarray,
    y: np.ndarray,
    thresholds: ArrayLike,
    sign: ArrayLike | None,
    what: str,
    names: Sequence[str] | None,
) -> BinaryRates:
    n_rows, n_cols = s.shape
    thr = _per_column(thresholds, n_cols, "thresholds", 0.0)
    tp, tn, n_pos = _count(s, y, thr, _signs(sign, n_cols), what, names)
    n_neg = n_rows - n_pos
    balanced, tpr, tnr = _rates(tp, tn, n_pos, n_neg)
    return BinaryRates(balanced, tpr, tnr, (tp + tn) / n_rows, n_pos, n_neg)


def binary_rates(
    scores: ArrayLike,
    labels: ArrayLike,
    thresholds: ArrayLike,
    sign: ArrayLike | None = None,
) -> BinaryRates:
    """TPR, TNR, balanced and plain accuracy of every column at fixed thresholds.

    ``thresholds`` is a scalar or ``[C]`` (``±inf`` allowed, NaN not); a row is called positive
    iff ``score >= threshold``, or iff ``score < threshold`` where ``sign`` (scalar or ``[C]`` of
    +1/-1, default +1) is -1. A rate whose class is absent is NaN and the balanced accuracy of
    that column is the other rate (no division by zero, no warning).
    """
    s, y = _prepare(scores, labels, "")
    return _binary_rates(s, y, thresholds, sign, "", None)


# --------------------------------------------------------------------------- threshold search


def _split_thresholds(s_sorted: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Threshold values for split positions ``idx`` ``[c, R]`` (or ``[c]``) of the sorted rows
    ``s_sorted`` ``[c, M]``; the result has the shape of ``idx``.

    Split ``i`` calls sorted rows ``[i, M)`` positive. It is returned as the midpoint between the
    distinct values either side (``s[i-1] < t <= s[i]``, which generalises better to unseen data
    than the value itself), ``s[0] - 1.0`` for ``i = 0`` and ``s[M-1] + 1.0`` for ``i = M``. No
    sample value lies strictly between the neighbours, so ``score >= t`` and its complement
    ``score < t`` select exactly the same rows as the split for either rule. Where the midpoint
    rounds onto the lower neighbour (adjacent floats) the upper value itself is used, and where
    ``max + 1.0`` rounds back to ``max`` the next float up is used.
    """
    if idx.ndim == 1:
        return _split_thresholds(s_sorted, idx[:, None])[:, 0]
    n_rows = s_sorted.shape[1]
    lo = np.take_along_axis(s_sorted, np.maximum(idx - 1, 0), axis=1)
    hi = np.take_along_axis(s_sorted, np.minimum(idx, n_rows - 1), axis=1)
    mid = lo * 0.5 + hi * 0.5  # halves first: no overflow near the float64 limits
    mid = np.where((mid > lo) & (mid <= hi), mid, hi)
    above = lo + 1.0
    with np.errstate(over="ignore"):  # the float64 maximum steps up to +inf, which is exact
        above = np.where(above > lo, above, np.nextafter(lo, np.inf))
    return np.where(idx == 0, hi - 1.0, np.where(idx == n_rows, above, mid))


def _search_block(
    sc: np.ndarray, yc: np.ndarray, both: bool, fallback: float
) -> tuple[np.ndarray, ...]:
    """Exact search on one checked block (``[c, M]`` float64 scores, bool labels, column-paired):
    each column is sorted once, then :func:`_search_sorted`; results ``[c]``."""
    s_sorted, order = _sort_rows(sc)
    y_sorted = np.take_along_axis(yc, order, axis=1)[:, None, :]
    del order
    return tuple(r[:, 0] for r in _search_sorted(s_sorted, y_sorted, both, fallback))


def _sort_rows(sc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(sc, axis=1)
    return np.take_along_axis(sc, order, axis=1), order


def _search_sorted(
    s_sorted: np.ndarray, y_sorted: np.ndarray, both: bool, fallback: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact search on ``c`` score rows already sorted (``s_sorted`` ``[c, M]``) against ``R``
    label rows each, in the same order (``y_sorted`` ``[c, R, M]``); every result is ``[c, R]``.

    With ``cum_pos[i]`` the positives among the ``i`` lowest scores, split ``i`` (rows
    ``[i, M)`` called positive) has ``tp = P - cum_pos[i]`` and ``tn = i - cum_pos[i]``.
    Balanced accuracy is ranked by the exact integer

        2*P*N * balanced = tp*N + tn*P = P*(N + i) - M*cum_pos[i]

    so ties are real ties, not float noise. Only splits at the start, at the end, and between
    two different values are candidates (a split inside a run of equal scores is not realisable
    by a threshold). Among equal scores the first (lowest) split wins. The reversed rule (rows
    ``[0, i)`` positive) scores ``2*P*N - score`` at the same split: it is its exact complement,
    so it needs no second sort and no negation of the scores.
    """
    n_cols, n_rep, n_rows = y_sorted.shape
    cum_pos = np.zeros((n_cols, n_rep, n_rows + 1), np.int64)
    np.cumsum(y_sorted, axis=2, out=cum_pos[:, :, 1:])
    n_pos = cum_pos[:, :, n_rows].copy()
    n_neg = n_rows - n_pos

    score = n_pos[:, :, None] * (n_neg[:, :, None] + np.arange(n_rows + 1, dtype=np.int64))
    score -= cum_pos * n_rows
    candidate = np.ones((n_cols, 1, n_rows + 1), np.bool_)  # shared by the R label rows
    candidate[:, 0, 1:n_rows] = s_sorted[:, 1:] != s_sorted[:, :-1]

    idx = np.argmax(np.where(candidate, score, -1), axis=2)
    sign = np.ones((n_cols, n_rep), np.int8)
    if both:
        rev_idx = np.argmin(np.where(candidate, score, np.iinfo(np.int64).max), axis=2)
        rev_score = np.take_along_axis(score, rev_idx[:, :, None], axis=2)[:, :, 0]
        best = np.take_along_axis(score, idx[:, :, None], axis=2)[:, :, 0]
        rev_better = 2 * n_pos * n_neg - rev_score > best
        idx = np.where(rev_better, rev_idx, idx)
        sign[rev_better] = -1
    del score, candidate

    cp = np.take_along_axis(cum_pos, idx[:, :, None], axis=2)[:, :, 0]
    tp = np.where(sign > 0, n_pos - cp, cp)
    tn = np.where(sign > 0, idx - cp, n_neg - (idx - cp))
    thresholds = _split_thresholds(s_sorted, idx)

    # A single-class column: every split scores the same, so no threshold is better than
    # another; use the caller's fallback and report the present class's rate there.
    single = (n_pos == 0) | (n_neg == 0)
    if single.any():
        at_or_above = np.broadcast_to(
            np.count_nonzero(s_sorted >= fallback, axis=1)[:, None], single.shape
        )[single]
        thresholds[single] = fallback
        sign[single] = 1
        tp[single] = np.where(n_pos[single] > 0, at_or_above, 0)
        tn[single] = np.where(n_neg[single] > 0, n_rows - at_or_above, 0)

    balanced, tpr, tnr = _rates(tp, tn, n_pos, n_neg)
    return thresholds, balanced, tpr, tnr, sign, single


def _search_options(polarity: str, fallback: float) -> float:
    """Check the search's options; the fallback threshold as a float."""
    if polarity not in ("positive", "both"):
        raise UserError(f"polarity must be 'positive' or 'both', got {polarity!r}")
    fallback = float(fallback)
    if math.isnan(fallback):
        raise UserError("fallback threshold is NaN")
    return fallback


def _search_outputs(shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Empty arrays for the fields of :class:`ThresholdSearch`, in order."""
    return (np.empty(shape), np.empty(shape), np.empty(shape), np.empty(shape),
            np.empty(shape, np.int8), np.empty(shape, np.bool_))


def _search(
    s: np.ndarray,
    y: np.ndarray,
    polarity: str,
    fallback: float,
    what: str,
    names: Sequence[str] | None,
) -> ThresholdSearch:
    fallback = _search_options(polarity, fallback)
    n_rows, n_cols = s.shape
    out = _search_outputs((n_cols,))
    for a, b in _blocks(n_rows, n_cols):
        sc, yc = _load_block(s, y, a, b, what, names)
        for dst, src in zip(out, _search_block(sc, yc, polarity == "both", fallback), strict=True):
            dst[a:b] = src
    return ThresholdSearch(*out)


def search_thresholds(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    polarity: Polarity = "positive",
    fallback: float = 0.0,
) -> ThresholdSearch:
    """Per column, the threshold with the best balanced accuracy on ``(scores, labels)``.

    Exact: every distinct score value is a candidate (plus "above the maximum", i.e. nothing
    positive, which always ties with "everything positive" at 0.5 and so is never chosen by the
    tie rule). Among equally good thresholds the lowest wins, so results are deterministic. The
    returned value sits between the chosen score value and the next lower one (see
    :func:`_split_thresholds`), so applying it to the same data reproduces ``balanced`` exactly.

    ``polarity="both"`` also tries the reversed rule "positive iff score < threshold" (useful for
    a neuron whose response falls with the attribute) and keeps it only where strictly better,
    recording ``sign = -1``.

    A column without positives or without negatives has no meaningful optimum: its threshold is
    ``fallback`` (default 0.0, probability 0.5 for logits), ``single_class`` is set and
    ``balanced`` is the present class's rate at ``fallback``.
    """
    s, y = _prepare(scores, labels, "")
    return _search(s, y, polarity, fallback, "", None)


def search_thresholds_cross(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    polarity: Polarity = "positive",
    fallback: float = 0.0,
) -> ThresholdSearch:
    """:func:`search_thresholds` for every (score column, label column) pair.

    ``scores`` ``[M, N]`` (e.g. N neuron responses), ``labels`` ``[M, A]``; every field of the
    result is ``[N, A]``: entry ``[i, j]`` is exactly what :func:`search_thresholds` gives for
    score column ``i`` tiled against label column ``j``. Each score column is sorted once and
    the sorted order is shared by all ``A`` label columns. Work goes a block of score columns at
    a time, so memory stays bounded (a block is at least one score column, ``A`` rows of ``M``).
    """
    fallback = _search_options(polarity, fallback)
    s = _as_2d(scores, "scores")
    y = _as_2d(labels, "labels")
    if s.shape[0] != y.shape[0]:
        raise UserError(
            f"scores have {s.shape[0]} rows but labels have {y.shape[0]} "
            f"(shapes {np.shape(scores)} and {np.shape(labels)})"
        )
    if s.shape[0] == 0:
        raise UserError("scores are empty (0 rows)")
    if s.shape[1] == 0 or y.shape[1] == 0:
        raise UserError(f"scores {s.shape} and labels {y.shape} must both have columns")
    n_rows, n_cols = s.shape
    n_attrs = y.shape[1]
    yt = _load_labels(y, 0, n_attrs)  # [A, M]
    out = _search_outputs((n_cols, n_attrs))
    step = max(1, CHUNK_ELEMENTS // max(n_rows * n_attrs, 1))
    for a in range(0, n_cols, step):
        b = min(a + step, n_cols)
        sc = _load_scores(s, a, b)
        s_sorted, order = _sort_rows(sc)
        y_sorted = yt[:, order].transpose(1, 0, 2)  # every label column in each score's order
        del order, sc
        res = _search_sorted(s_sorted, y_sorted, polarity == "both", fallback)
        for dst, src in zip(out, res, strict=True):
            dst[a:b] = src
    return ThresholdSearch(*out)


def mean_balanced_accuracy(
    scores: ArrayLike, labels: ArrayLike, thresholds: ArrayLike | None = None
) -> float:
    """Mean over columns of the balanced accuracy: at ``thresholds`` (scalar or ``[C]``) when
    given, else at the thresholds searched on this same data (an optimistic, in-sample figure;
    fine for tracking training progress, not for reporting)."""
    s, y = _prepare(scores, labels, "")
    if thresholds is None:
        balanced = _search(s, y, "positive", 0.0, "", None).balanced
    else:
        balanced = _binary_rates(s, y, thresholds, None, "", None).balanced
    return float(np.mean(balanced))


# --------------------------------------------------------------------------- report


def _num(x: Any) -> float | None:
    """A float for JSON: NaN and ±inf become None (``json.dumps(allow_nan=False)`` safe)."""
    x = float(x)
    return x if math.isfinite(x) else None


def evaluate(
    val_scores: ArrayLike,
    val_labels: ArrayLike,
    test_scores: ArrayLike,
    test_labels: ArrayLike,
    names: Sequence[str],
    *,
    plain_threshold: float = 0.0,
    thresholds: ArrayLike | None = None,
) -> dict[str, Any]:
    """Search thresholds on val (or take ``thresholds``), apply them to test; a JSON-ready dict.

    Per attribute (``attributes``, in column order):

    * ``balanced``, ``tpr``, ``tnr``: test, at ``threshold`` (searched on val, or given);
      ``accuracy_at_threshold`` is the plain accuracy there.
    * ``accuracy``, ``balanced_at_plain``: test, at the fixed ``plain_threshold``.
    * ``val_balanced``: val balanced accuracy at ``threshold`` (in-sample when searched).
    * ``n_pos``, ``n_neg``, ``single_class``: test counts; ``val_single_class`` likewise for val
      (such an attribute gets ``plain_threshold`` as its threshold).

    Means are plain means over attributes; a single-class attribute counts with the rate of the
    class it has (it cannot be left out without changing the denominator between splits).
    NaN and infinite values are written as None. Top-level ``single_class`` and
    ``val_single_class`` list the names of such attributes.
    """
    names = [str(n) for n in names]
    vs, vy = _prepare(val_scores, val_labels, "val ")
    ts, ty = _prepare(test_scores, test_labels, "test ")
    for what, arr in (("val", vs), ("test", ts)):
        if arr.shape[1] != len(names):
            raise UserError(
                f"{len(names)} attribute names but {what} scores have {arr.shape[1]} columns"
            )
    n_attrs = len(names)
    plain = float(plain_threshold)
    if not math.isfinite(plain):
        raise UserError(f"plain threshold must be a finite number, got {plain}")

    if thresholds is None:
        search = _search(vs, vy, "positive", plain, "val ", names)
        thr, sign, source = search.thresholds, search.sign, "val"
        val_balanced, val_single = search.balanced, search.single_class
    else:
        thr = _per_column(thresholds, n_attrs, "thresholds", 0.0)
        sign, source = np.ones(n_attrs, np.int8), "given"
        val = _binary_rates(vs, vy, thr, sign, "val ", names)
        val_balanced, val_single = val.balanced, (val.n_pos == 0) | (val.n_neg == 0)

    test = _binary_rates(ts, ty, thr, sign, "test ", names)
    at_plain = _binary_rates(ts, ty, plain, None, "test ", names)
    test_single = (test.n_pos == 0) | (test.n_neg == 0)

    attributes = [
        {
            "name": name,
            "balanced": _num(test.balanced[j]),
            "tpr": _num(test.tpr[j]),
            "tnr": _num(test.tnr[j]),
            "accuracy": _num(at_plain.accuracy[j]),
            "balanced_at_plain": _num(at_plain.balanced[j]),
            "accuracy_at_threshold": _num(test.accuracy[j]),
            "threshold": _num(thr[j]),
            "val_balanced": _num(val_balanced[j]),
            "n_pos": int(test.n_pos[j]),
            "n_neg": int(test.n_neg[j]),
            "single_class": bool(test_single[j]),
            "val_single_class": bool(val_single[j]),
        }
        for j, name in enumerate(names)
    ]
    return {
        "mean_balanced": _num(np.mean(test.balanced)),
        "mean_accuracy": _num(np.mean(at_plain.accuracy)),
        "mean_balanced_at_plain": _num(np.mean(at_plain.balanced)),
        "plain_threshold": plain,
        "thresholds_from": source,
        "attributes": attributes,
        "single_class": [n for n, s in zip(names, test_single, strict=True) if s],
        "val_single_class": [n for n, s in zip(names, val_single, strict=True) if s],
        "n_val": int(vs.shape[0]),
        "n_test": int(ts.shape[0]),
    }
