"""Neuron selection by mean-field inference on an MRF (docs/selection.md).

Which of a teacher's top-layer neurons should a student imitate? The most informative about
the attributes and the least redundant with each other. Each candidate neuron ``i`` gets a
binary label ``y_i`` (1 = selected) and ``q_i = p(y_i = 1)`` under a fully factorised
(mean-field) distribution that minimises the free energy (seed Eq 5)::

    F(q) = sum_i q_i (b - u_i) + sum_{i<j} q_i q_j Psi_ij + sum_i [q_i ln q_i + (1-q_i) ln(1-q_i)]

* ``u_i``: informativeness, the (weighted) mean over attributes of the neuron's balanced
  accuracy as a one-threshold attribute classifier (Eq 7-9), rescaled so chance is 0, perfect 1;
* ``Psi_ij = lam / K * k_ij``: redundancy, paid only when both are selected. The default
  kernel (``redundancy="response"``, ours) is on the correlation ``c_ij`` of the two neurons'
  responses, :func:`response_kernel`: a sharp term for near-copies plus ``shared * c_ij^2``,
  the share of variance the two have in common; the spec's Gaussian kernel between accuracy
  profiles (``"profile"``) is kept, but measured inert on trained teachers (docs/selection.md);
* ``b``: the cost of selecting a neuron, set by bisection so that ``sum q = K``.

The stationarity condition of ``F`` in ``q_i`` is the update (Eq 6, binary labels)
``q_i = sigmoid(u_i - b - m_i)`` with the message ``m_i = sum_{j != i} q_j Psi_ij``; a greedy
decode turns ``q`` into K hard choices (:func:`_decode`). For the response kernel the fast
solver hashes (:class:`_HashMessages`); for the profile kernel two solvers compute the messages:

* ``exact``: the dense kernel, ``O(N^2 A)`` once (cached as an ``N x N`` float32 matrix when it
  fits in ``max_kernel_bytes``, else recomputed a block of rows at a time every iteration), then
  ``O(N^2)`` per iteration;
* ``fast``: the supplement's piecewise-linear approximation. Per attribute, every ``q_j`` is
  spread onto a grid of ``L`` levels of ``xh`` with linear-interpolation weights, the grid is
  convolved with the Gaussian table ``G[l, m]`` and read back at each ``xh_i``; each neuron's
  own (approximated) contribution is then taken out. ``O(N A + A L^2)`` per iteration: linear
  in ``N``. It converges on a coarse grid (step 0.1) first and refines on the fine one.

This module is the maths, numpy only. :mod:`facedistill.selection.file` reads, checks and plots
``selection.json``; gathering the teachers' responses and the ``facedistill select`` command
(torch) are in :mod:`facedistill.pipeline.selection`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from facedistill import metrics
from facedistill.config import SelectConfig
from facedistill.errors import UserError

__all__ = [
    "Selection",
    "attribute_accuracy",
    "free_energy",
    "informativeness",
    "kernel_matrix",
    "mean_abs_corr",
    "mean_field_select",
    "messages",
    "redundancy_summary",
    "response_kernel",
    "normalise",
    "standardise",
]

FORMAT = "facedistill.selection/v1"
Solver = Literal["fast", "exact"]
COARSE_LEVELS = 11  # the fast solver's first grid: step 0.1
MAX_KERNEL_BYTES = 4 << 30  # the exact solver keeps its N x N kernel in memory up to this size
_ROW_BLOCK_ELEMENTS = 1 << 23  # kernel elements computed per block of rows
_POOL_FACTOR = 2  # the greedy decode looks at the 2k best neurons by q
_MAX_POOL = 16384  # ... when their pairwise kernel (float32) fits in 1 GiB; else "topk"


# --------------------------------------------------------------------------- step 1-2: X


def attribute_accuracy(
    responses: ArrayLike, labels: ArrayLike, polarity: metrics.Polarity = "positive"
) -> tuple[np.ndarray, np.ndarray]:
    """Eq 7-9 for every (neuron, attribute) pair: ``(X, thresholds)``, both ``[N, A]``.

    ``responses`` ``[M, N]`` (one column per neuron), ``labels`` ``[M, A]`` in {0, 1}.
    ``X[i, j]`` is the best balanced accuracy of the rule "attribute ``j`` iff ``r_i >= e``" over
    every threshold ``e`` (exact: all distinct response values; see
    :func:`facedistill.metrics.search_thresholds_cross`), ``thresholds[i, j]`` that
    ``e``. ``polarity="both"`` also tries "iff ``r_i < e``" and keeps the better rule (so
    ``X >= 0.5`` everywhere); the rule's direction is then in
    :func:`~facedistill.metrics.search_thresholds_cross`'s ``sign``, not returned here.
    An attribute with only one class in ``labels`` has no informative threshold: its column of
    ``X`` is 0.5 (chance).
    """
    r = np.asarray(responses)
    y = np.asarray(labels)
    if r.ndim != 2:
        raise UserError(f"responses must be [M, N], got shape {r.shape}")
    if y.ndim != 2:
        raise UserError(f"labels must be [M, A], got shape {y.shape}")
    if r.shape[0] != y.shape[0]:
        raise UserError(f"responses have {r.shape[0]} images but labels have {y.shape[0]} "
                        f"(shapes {r.shape} and {y.shape})")
    found = metrics.search_thresholds_cross(r, y, polarity=polarity)
    x = np.where(found.single_class, 0.5, found.balanced)
    return x, found.thresholds


def normalise(x: ArrayLike) -> np.ndarray:
    """Step 2: ``xh = clip((x - 0.5) / 0.5, 0, 1)``; chance is 0, perfect is 1."""
    return np.clip((np.asarray(x, dtype=np.float64) - 0.5) / 0.5, 0.0, 1.0)


def informativeness(xh: np.ndarray, weights: ArrayLike | None = None) -> np.ndarray:
    """``u_i = sum_j w_j xh_i(j) / sum_j w_j`` (default weights all 1)."""
    n_attrs = xh.shape[1]
    w = np.ones(n_attrs) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n_attrs,):
        raise UserError(f"weights must have one entry per attribute ({n_attrs}), "
                        f"got shape {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise UserError("weights must be finite, non-negative and not all zero")
    return xh @ (w / w.sum())


# --------------------------------------------------------------------------- messages


def _gauss_scale(sigma: float) -> float:
    return -1.0 / (2.0 * sigma * sigma)


def kernel_matrix(xh: np.ndarray, sigma: float, rows: slice | None = None) -> np.ndarray:
    """``k(xh_i, xh_j) = mean_d exp(-(xh_id - xh_jd)^2 / (2 sigma^2))`` for rows ``i`` in
    ``rows`` (default all) against every ``j``: float32 ``[n_rows, N]`` (diagonal 1)."""
    xt = np.ascontiguousarray(xh.T, dtype=np.float32)  # [A, N]
    block = xt[:, rows] if rows is not None else xt
    n_attrs = xt.shape[0]
    scale = np.float32(_gauss_scale(sigma))
    out = np.zeros((block.shape[1], xt.shape[1]), np.float32)
    tmp = np.empty_like(out)
    for d in range(n_attrs):
        np.subtract(block[d][:, None], xt[d][None, :], out=tmp)
        np.square(tmp, out=tmp)
        tmp *= scale
        np.exp(tmp, out=tmp)
        out += tmp
    out /= np.float32(n_attrs)
    return out


class _ExactMessages:
    """``m = sum_{j != i} q_j k_ij`` (unscaled) with a dense kernel, kept as an ``N x N``
    float32 matrix when it fits in ``max_bytes``, else recomputed a block of rows at a time.

    ``rows(s)`` gives the kernel rows ``s`` (a slice) against every neuron, ``among(idx)`` the
    kernel between the neurons ``idx``; ``diag`` is each ``k_ii`` (1, or 0 for a neuron that is
    redundant with nothing). :meth:`profile` and :meth:`response` build the two kernels'."""

    def __init__(self, n: int, rows: Callable[[slice | None], np.ndarray],
                 among: Callable[[np.ndarray], np.ndarray], diag: np.ndarray | float,
                 max_bytes: int) -> None:
        self.n, self._rows, self._among, self.diag = n, rows, among, diag
        self.kernel = rows(None) if n * n * 4 <= max_bytes else None
        self.block = max(1, _ROW_BLOCK_ELEMENTS // max(n, 1))

    @classmethod
    def profile(cls, xh: np.ndarray, sigma: float, max_bytes: int) -> _ExactMessages:
        return cls(xh.shape[0], lambda s: kernel_matrix(xh, sigma, s),
                   lambda idx: kernel_matrix(xh[idx], sigma), 1.0, max_bytes)

    @classmethod
    def response(cls, z: np.ndarray, bits: int, shared: float,
                 max_bytes: int) -> _ExactMessages:
        return cls(z.shape[1], lambda s: response_kernel(z, bits, s, shared=shared),
                   lambda idx: response_kernel(z, bits, idx, idx, shared=shared),
                   z.any(axis=0).astype(np.float64) * (1.0 + shared), max_bytes)

    def __call__(self, q: np.ndarray) -> np.ndarray:
        q32 = q.astype(np.float32)
        if self.kernel is not None:
            full = self.kernel @ q32
        else:  # too big to keep: recompute a block of rows at a time
            full = np.empty(self.n, np.float32)
            for a in range(0, self.n, self.block):
                s = slice(a, min(a + self.block, self.n))
                full[s] = self._rows(s) @ q32
        return full.astype(np.float64) - q * self.diag  # no self-message

    def row(self, i: int) -> np.ndarray:
        if self.kernel is not None:
            return self.kernel[i]
        return self._rows(slice(i, i + 1))[0]

    def among(self, idx: np.ndarray) -> np.ndarray:
        """The kernel between the neurons ``idx`` ``[P, P]``."""
        if self.kernel is not None:
            return self.kernel[np.ix_(idx, idx)]
        return self._among(idx)


class _GridMessages:
    """The piecewise-linear approximation of :class:`_ExactMessages` on ``levels`` grid points.

    Splat weights and flat grid indices are fixed (``xh`` does not change), so an iteration is
    two weighted bincounts, a tiny ``[A, L] @ [L, L]`` product and two gathers.
    """

    def __init__(self, xh: np.ndarray, sigma: float, levels: int) -> None:
        if levels < 2:
            raise UserError(f"levels must be at least 2, got {levels}")
        n, n_attrs = xh.shape
        self.levels, self.n_attrs = levels, n_attrs
        grid = np.linspace(0.0, 1.0, levels)
        self.table = np.exp(_gauss_scale(sigma) * (grid[:, None] - grid[None, :]) ** 2)
        pos = xh * (levels - 1)
        lo = np.minimum(np.floor(pos).astype(np.int64), levels - 2)
        self.frac = pos - lo  # weight of the upper grid point
        self.flat = (lo + np.arange(n_attrs)[None, :] * levels).ravel()  # [N*A]
        w_hi = self.frac.ravel()
        self.w_lo, self.w_hi = 1.0 - w_hi, w_hi
        # each neuron's own contribution as the grid sees it: w^T G w, summed over attributes
        g01 = self.table[0, 1]
        self.self_term = ((self.w_lo**2 + self.w_hi**2 + 2 * g01 * self.w_lo * self.w_hi)
                          .reshape(n, n_attrs).sum(1))

    def __call__(self, q: np.ndarray) -> np.ndarray:
        size = self.n_attrs * self.levels
        qr = np.repeat(q, self.n_attrs)
        hist = np.bincount(self.flat, qr * self.w_lo, size)
        hist += np.bincount(self.flat + 1, qr * self.w_hi, size)[:size]
        smooth = (hist.reshape(self.n_attrs, self.levels) @ self.table).ravel()
        read = smooth[self.flat] * self.w_lo
        read += smooth[self.flat + 1] * self.w_hi
        total = read.reshape(-1, self.n_attrs).sum(1)
        return (total - q * self.self_term) / self.n_attrs

    def among(self, idx: np.ndarray) -> np.ndarray:
        """The grid's approximation of the kernel between the neurons ``idx`` ``[P, P]``:
        ``(1/A) sum_d w_id^T G w_jd`` with the splat weights ``w``."""
        n_attrs, levels = self.n_attrs, self.levels
        flat = self.flat.reshape(-1, n_attrs)[idx]  # [P, A]
        spread = np.zeros((idx.shape[0], n_attrs * levels), np.float32)
        rows = np.arange(idx.shape[0])[:, None]
        spread[rows, flat] = self.w_lo.reshape(-1, n_attrs)[idx]
        spread[rows, flat + 1] = self.w_hi.reshape(-1, n_attrs)[idx]
        smooth = (spread.reshape(-1, n_attrs, levels) @ self.table.astype(np.float32))
        return (smooth.reshape(idx.shape[0], -1) @ spread.T) / np.float32(n_attrs)


# --------------------------------------------------------------------------- response kernel

Redundancy = Literal["response", "profile"]
DEFAULT_BITS: int = SelectConfig.bits  # the one default: the select command's
DEFAULT_TABLES: int = SelectConfig.tables
DEFAULT_SHARED: float = SelectConfig.shared
PLANES_PER_BIT = 8  # the fast solver's shared pool of hyperplanes: 8 x bits (192 at the defaults)
SKETCH_MESSAGE_DIMS = 64  # projections the fast solver's shared-variance messages read


def _check_responses(responses: ArrayLike) -> np.ndarray:
    """``responses`` as an ``[M, N]`` array, ``M >= 2`` (not copied)."""
    r = np.asarray(responses)
    if r.ndim != 2 or r.shape[0] < 2 or r.shape[1] == 0:
        raise UserError(f"responses must be [M, N] with M >= 2 images, got shape {r.shape}")
    return r


def _raise_non_finite(r: np.ndarray) -> None:
    finite = np.isfinite(r)
    if not finite.all():
        i, j = np.argwhere(~finite)[0]
        raise UserError(f"responses[{i}, {j}] is {r[i, j]}: responses must be finite")


def _live(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Which neurons vary, from their smallest and largest response: by more than a millionth
    of their magnitude (at least 1). A constant neuron, up to rounding, is dead."""
    return hi - lo > 1e-6 * np.maximum(1.0, np.maximum(np.abs(lo), np.abs(hi)))


def _column_range(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each neuron's smallest and largest response; a non-finite one is a one-line error."""
    lo, hi = r.min(axis=0), r.max(axis=0)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        _raise_non_finite(r)
    return lo, hi


def standardise(responses: ArrayLike) -> np.ndarray:
    """Each neuron's responses ``[M, N]`` centred and scaled to unit length (float32), so that
    ``Z[:, i] @ Z[:, j]`` is the Pearson correlation; a dead neuron (:func:`_live`) becomes a
    zero column."""
    z = _check_responses(responses).astype(np.float32, copy=True)
    live = _live(*_column_range(z))
    z -= z.mean(axis=0, dtype=np.float64).astype(np.float32)
    norm = np.sqrt(np.einsum("mn,mn->n", z, z, dtype=np.float64))  # float64: copies stay 1
    live &= norm > 0
    z *= np.where(live, 1.0 / np.where(live, norm, 1.0), 0.0).astype(np.float32)
    return z


def mean_abs_corr(z: np.ndarray, idx: ArrayLike) -> float:
    """Mean ``|corr|`` of the responses over the distinct pairs of the neurons ``idx`` of a
    :func:`standardise`-d ``Z`` (dead neurons count as uncorrelated)."""
    sel = np.asarray(idx, dtype=np.int64)
    if sel.shape[0] < 2:
        return 0.0
    c = np.abs(z[:, sel].T @ z[:, sel])
    np.fill_diagonal(c, 0.0)
    return float(c.sum() / (sel.shape[0] * (sel.shape[0] - 1)))


def redundancy_summary(responses: ArrayLike, indices: ArrayLike, u: np.ndarray,
                       seed: int = 0) -> dict[str, float]:
    """How redundant a selection is, next to the two obvious alternatives of the same size:
    mean ``|corr|`` of its responses, of a random set (mean of 5 draws) and of the top-K by
    informativeness ``u``; and the mean ``u`` of each."""
    z = standardise(responses)
    idx = np.asarray(indices, dtype=np.int64)
    k, n = idx.shape[0], z.shape[1]
    rng = np.random.default_rng(seed)
    draws = [rng.choice(n, k, replace=False) for _ in range(5)]
    top = _rank(np.zeros_like(u), u)[:k]
    return {
        "mean_abs_corr_selected": mean_abs_corr(z, idx),
        "mean_abs_corr_random": float(np.mean([mean_abs_corr(z, d) for d in draws])),
        "mean_abs_corr_top_u": mean_abs_corr(z, top),
        "mean_u_selected": float(u[idx].mean()),
        "mean_u_random": float(np.mean([u[d].mean() for d in draws])),
        "mean_u_top_u": float(u[top].mean()),
    }


def _collision(c: np.ndarray, bits: int) -> np.ndarray:
    """``(1 - t)^bits + t^bits`` with ``t = arccos(c) / pi``: the chance that ``bits`` random
    hyperplanes put two directions at correlation ``c`` - or one and the other's negative - on
    the same sides. 1 at ``c = +-1``, ``2^(1 - bits)`` at ``c = 0``."""
    t = np.arccos(np.clip(c, -1.0, 1.0, out=c), out=c)
    t *= np.float32(1.0 / math.pi)
    out = np.power(1.0 - t, bits, dtype=np.float32)
    out += np.power(t, bits, dtype=np.float32)
    return out


def response_kernel(z: np.ndarray, bits: int, rows: np.ndarray | slice | None = None,
                    cols: np.ndarray | slice | None = None, *,
                    shared: float = DEFAULT_SHARED) -> np.ndarray:
    """The response-correlation kernel between the columns ``rows`` and ``cols`` of a
    :func:`standardise`-d ``Z``: float32 ``[n_rows, n_cols]``, ``_collision(c, bits) + shared *
    c^2`` of their correlation ``c``. A dead (zero) column is redundant with nothing (0), itself
    included."""
    a = z if rows is None else z[:, rows]
    c = z if cols is None else z[:, cols]
    corr = a.T @ c
    square = corr * corr if shared else None
    k = _collision(corr, bits)
    if square is not None:
        k += np.float32(shared) * square
    dead_a = ~a.any(axis=0)
    dead_c = ~c.any(axis=0)
    k[dead_a, :] = 0.0
    k[:, dead_c] = 0.0
    return k


class _HashMessages:
    """The response kernel's messages by random hyperplanes (SimHash), linear in ``N``.

    ``tables`` codes of ``bits`` hyperplanes each; a neuron's code and its bitwise complement
    (the code of the negated response) are one bucket, so two neurons share a bucket of a table
    with probability exactly :func:`_collision` of their correlation. Each table reads ``bits``
    distinct planes of a shared pool of ``planes`` random ones (default ``PLANES_PER_BIT *
    bits``; ``planes >= bits * tables`` gives every table its own): every table's collision
    chance stays exact, the tables are no longer independent, and the projection - the one pass
    over the images, ``O(M N planes)`` - costs ``tables * bits / planes`` times less. An
    iteration sums ``q`` per bucket (one bincount over all tables) and reads each neuron's
    buckets back: ``m_i = mean_t sum_{j in bucket_t(i), j != i} q_j``, an unbiased estimate of
    the exact message. The decode's pairwise kernel among its candidates is estimated from the
    same tables (:meth:`among`), so nothing after the projection passes over the images.

    The shared-variance term ``shared * c^2`` is low rank. The projections of ``p`` Gaussian
    planes (the pool's own, kept), scaled to unit length per neuron, ``s_i = H z_i / |H z_i|``,
    keep correlations (Johnson-Lindenstrauss): ``s_i . s_j`` estimates ``c_ij``, and ``((s_i .
    s_j)^2 - 1/p) * p / (p - 1)`` estimates ``c_ij^2`` - exact for copies, and without bias for
    uncorrelated neurons, whose squared cosine in ``p`` random dimensions averages ``1/p``. Then
    ``sum_j q_j c_ij^2`` is ``s_i^T (sum_j q_j s_j s_j^T) s_i``: one ``p x p`` matrix per
    iteration, ``O(N p^2)``, from the first :data:`SKETCH_MESSAGE_DIMS` planes; the decode's
    candidates use all ``p``. Unit length matters: a neuron whose projection came out long
    would otherwise look correlated with everything.
    """

    def __init__(self, responses: np.ndarray, bits: int, tables: int, seed: int = 0,
                 planes: int | None = None, shared: float = 0.0) -> None:
        planes = PLANES_PER_BIT * bits if planes is None else planes
        if tables < 1:
            raise UserError(f"tables must be at least 1, got {tables}")
        if planes < bits:
            raise UserError(f"planes must be at least bits ({bits}), got {planes}")
        self.bits, self.tables = bits, tables
        project = _CentredProjection(responses)
        n = project.n
        rng = np.random.default_rng(seed)
        codes = np.empty((tables, n), np.int64 if bits > 31 else np.int32)
        self.shared = float(shared)
        self.sketch: np.ndarray | None = None
        if planes >= bits * tables:  # independent hyperplanes for every table
            chunk = max(1, _ROW_BLOCK_ELEMENTS // (bits * n))  # tables projected at a time
            for t0 in range(0, tables, chunk):
                nt = min(chunk, tables - t0)
                proj = project(rng.standard_normal((nt * bits, project.m), dtype=np.float32))
                if t0 == 0 and shared:
                    self.sketch = proj[:PLANES_PER_BIT * bits].copy()
                codes[t0:t0 + nt] = _codes(proj > 0, np.arange(nt * bits).reshape(nt, bits))
        else:  # a shared pool: each table reads ``bits`` distinct planes of it
            proj = project(rng.standard_normal((planes, project.m), dtype=np.float32))
            if shared:
                self.sketch = proj
            picks = np.stack([rng.choice(planes, bits, replace=False) for _ in range(tables)])
            codes[:] = _codes(proj > 0, picks)
        full = (1 << bits) - 1
        codes = np.minimum(codes, full - codes)  # a code and its complement: one bucket
        # bucket ids, distinct across tables and numbered table by table, code by code
        shift = max(1, (n - 1).bit_length())
        if bits - 1 + shift <= 62:  # sort (code, neuron) packed in one int64: no argsort
            keyed = (codes.astype(np.int64) << shift) | np.arange(n, dtype=np.int64)
            keyed.sort(axis=1)
            order, ranked = keyed & ((1 << shift) - 1), keyed >> shift
        else:
            order = np.argsort(codes, axis=1)
            ranked = np.take_along_axis(codes, order, axis=1)
        fresh = np.ones(ranked.shape, np.int64)  # 1 where a new bucket starts
        fresh[:, 1:] = ranked[:, 1:] != ranked[:, :-1]
        ids = np.empty((tables, n), np.int64)
        np.put_along_axis(ids, order, np.cumsum(fresh.ravel()).reshape(tables, n) - 1, axis=1)
        offset = int(ids[-1].max()) + 1
        # a dead neuron gets a bucket of its own in every table: redundant with nothing
        live = project.live
        assert live is not None
        dead = project.dead
        if dead.size:
            ids[:, dead] = offset + np.arange(dead.size)[None, :] * tables + \
                np.arange(tables)[:, None]
            offset += dead.size * tables
        self.table_ids = ids
        self.ids = ids.ravel()
        self.buckets = offset
        self.live = live.astype(np.float64)
        if self.sketch is not None:
            self.head = _unit_columns(self.sketch[:SKETCH_MESSAGE_DIMS])
            self.sketch = _unit_columns(self.sketch)

    def __call__(self, q: np.ndarray) -> np.ndarray:
        sums = np.bincount(self.ids, np.tile(q, self.tables), self.buckets)
        read = sums[self.ids].reshape(self.tables, -1).mean(axis=0)
        out = read - q  # each neuron is in its own bucket in every table
        if self.sketch is not None:
            out += self.shared * self._shared_messages(q)
        return out

    def _shared_messages(self, q: np.ndarray) -> np.ndarray:
        """``sum_{j != i} q_j c_ij^2`` for every ``i``, unbiased, from the sketch's head."""
        s = self.head
        p = s.shape[0]
        gram = (s * q.astype(np.float32)) @ s.T  # [p, p]: sum_j q_j s_j s_j^T
        back = gram @ s
        back *= s
        quad = (np.ones(p, np.float32) @ back).astype(np.float64)  # includes j = i ...
        quad -= q * self.live  # ... whose cosine is 1
        others = float(q @ self.live) - q * self.live  # live j != i: each biased by 1 / p
        return (quad - others / p) * (p / (p - 1.0)) * self.live

    def among(self, idx: np.ndarray) -> np.ndarray:
        """The kernel between the neurons ``idx``, estimated from the same tables: the share
        of tables in which two neurons share a bucket (unbiased). Bucket ids are distinct across
        tables, so one sort of all ``P * tables`` memberships finds every shared bucket; the
        cost is that plus the number of sharing pairs - no pass over the images, no ``P^2``
        comparisons. A dead neuron shares with nothing but itself."""
        p = idx.shape[0]
        bucket = self.table_ids[:, idx].ravel()
        member = np.tile(np.arange(p, dtype=np.int64), self.tables)
        order = np.argsort(bucket, kind="stable")
        bucket, member = bucket[order], member[order]
        start = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
        size = np.diff(np.r_[start, bucket.shape[0]])
        multi = size > 1
        first, count = start[multi], size[multi]
        # every ordered pair (a, b) of one shared bucket: row = a, col = each member b
        elem = np.repeat(first, count) + _ranges(count)  # positions of the shared members
        reps = np.repeat(count, count)  # each member pairs with its group's count members
        rows = np.repeat(member[elem], reps)
        cols = member[np.repeat(np.repeat(first, count), reps) + _ranges(reps)]
        if self.sketch is not None:
            sk = self.sketch[:, idx]
            dims = sk.shape[0]
            kern = sk.T @ sk
            kern *= kern
            kern -= np.float32(1.0 / dims)
            kern *= np.float32(self.shared * dims / (dims - 1.0))
            dead = self.live[idx] == 0
            if dead.any():
                kern[dead, :] = 0.0
                kern[:, dead] = 0.0
        else:
            kern = np.zeros((p, p), np.float32)
        # the few sharing pairs, added in place (a pair may share several tables)
        np.add.at(kern.reshape(-1), rows * p + cols, np.float32(1.0 / self.tables))
        kern[np.diag_indices(p)] = 1.0 + self.shared  # each neuron is in its own buckets
        return kern


def _unit_columns(a: np.ndarray) -> np.ndarray:
    """``a`` with every non-zero column scaled to unit length (float32, a copy)."""
    norm = np.sqrt(np.einsum("pn,pn->n", a, a, dtype=np.float64))
    return a * np.where(norm > 0, 1.0 / np.where(norm > 0, norm, 1.0), 0.0).astype(np.float32)


class _CentredProjection:
    """Random projections of the neurons' centred responses, ``H (r_i - mean_i)``, without
    centring a copy of the ``[M, N]`` responses: ``H r - (H 1) mean^T``, one GEMM (the means
    from one GEMV). Only the directions matter (signs, and a sketch scaled to unit length
    afterwards), so nothing is scaled.

    The first projection also tells which neurons are live (:func:`_live`), without another
    pass over the responses: ``|H (r_i - mean_i)| / sqrt(p M)`` estimates a neuron's standard
    deviation within ~10%, and one above 1% of its mean and above 1e-4 varies far more than the
    rule's millionth. Only the others are looked at exactly: their range decides, and those
    that are live are centred explicitly (their mean dwarfs their spread, where the difference
    would lose float32 digits); a dead one projects to 0. The responses may be raw or already
    :func:`standardise`-d."""

    def __init__(self, responses: np.ndarray) -> None:
        self.r = _check_responses(responses).astype(np.float32, copy=False)
        self.m, self.n = self.r.shape
        self.mean = (np.ones(self.m, np.float32) @ self.r) / np.float32(self.m)
        if not np.isfinite(self.mean).all():
            _raise_non_finite(self.r)  # ... or a float32 sum overflowed:
            self.mean = self.r.mean(axis=0, dtype=np.float64).astype(np.float32)
        self.live: np.ndarray | None = None
        self.dead = self.exact = np.zeros(0, np.int64)

    def __call__(self, hyper: np.ndarray) -> np.ndarray:
        proj = hyper @ self.r
        proj -= hyper.sum(axis=1, dtype=np.float64).astype(np.float32)[:, None] * \
            self.mean[None, :]
        if self.live is None:
            self._screen(proj)
        if self.exact.size:
            centred = self.r[:, self.exact] - self.mean[self.exact]
            proj[:, self.exact] = hyper @ centred
        if self.dead.size:
            proj[:, self.dead] = 0.0
        return proj

    def _screen(self, proj: np.ndarray) -> None:
        spread = np.sqrt(np.einsum("pn,pn->n", proj, proj, dtype=np.float64)
                         / (proj.shape[0] * self.m))
        check = np.flatnonzero(~((spread > 1e-2 * np.abs(self.mean)) & (spread > 1e-4)))
        self.live = np.ones(self.n, bool)
        if check.size:
            cols = self.r[:, check]
            lo, hi = _column_range(cols)
            self.live[check] = _live(lo, hi)
            self.dead = check[~self.live[check]]
            self.exact = check[self.live[check]]
            self.mean[self.exact] = cols[:, self.live[check]].mean(axis=0, dtype=np.float64)


def _codes(signs: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """Each table's code, ``sum_b signs[picks[t, b]] << b`` (``picks`` ``[tables, bits]``,
    distinct planes per table), for every neuron: a product with a matrix of powers of two, 24
    bits at a time so that float32 adds them exactly."""
    tables, bits = picks.shape
    plus = signs.astype(np.float32)
    rows = np.arange(tables)[:, None]
    parts = []
    for low in range(0, bits, 24):
        cols = picks[:, low:low + 24]
        weights = np.zeros((tables, signs.shape[0]), np.float32)
        weights[rows, cols] = 2.0 ** np.arange(cols.shape[1], dtype=np.float32)
        parts.append(weights @ plus)
    if len(parts) == 1:
        return parts[0].astype(np.int32)
    codes = np.zeros((tables, signs.shape[1]), np.int64)
    for i, part in enumerate(parts):
        codes += part.astype(np.int64) << (24 * i)
    return codes


def _ranges(counts: np.ndarray) -> np.ndarray:
    """``concatenate([arange(c) for c in counts])`` without the loop."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    offsets = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total, dtype=np.int64) - offsets


def messages(
    x: ArrayLike,
    q: ArrayLike,
    *,
    k: int,
    lam: float | None = None,
    sigma: float = 0.1,
    solver: Solver = "exact",
    levels: int = 41,
    responses: ArrayLike | None = None,
    redundancy: Redundancy | Literal["auto"] = "auto",
    bits: int = DEFAULT_BITS,
    shared: float = DEFAULT_SHARED,
    tables: int = DEFAULT_TABLES,
    planes: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """The redundancy messages ``m_i = sum_{j != i} q_j Psi_ij`` for an accuracy matrix ``X``
    (``[N, A]``, raw, normalised here) at ``q`` (``[N]``), exactly or by the fast solver's
    approximation (the grid for ``profile``, hashing for ``response``)."""
    xh = normalise(_check_x(x))
    qa = np.asarray(q, dtype=np.float64)
    if qa.shape != (xh.shape[0],):
        raise UserError(f"q must have {xh.shape[0]} entries, got shape {qa.shape}")
    kind = _redundancy(redundancy, responses)
    r = _responses_for(responses, xh.shape[0]) if kind == "response" else None
    fn = _message_fn(xh, r, solver, sigma=sigma, levels=levels, bits=bits, shared=shared,
                     tables=tables, planes=planes, seed=seed, max_bytes=MAX_KERNEL_BYTES)
    return (_lam(lam, kind) / k) * fn(qa)


DEFAULT_LAM = {"profile": 1.0, "response": 128.0}
# the profile kernel is wide (random rows of X are ~0.2 alike), so it needs the mean field's
# prior to tell a duplicate from the crowd; the sharp response kernel does better without it
DEFAULT_DECODE = {"profile": "greedy-mf", "response": "greedy"}


def _redundancy(kind: str, responses: ArrayLike | None) -> Redundancy:
    if kind == "auto":
        return "response" if responses is not None else "profile"
    if kind not in ("response", "profile"):
        raise UserError(f"redundancy must be 'response', 'profile' or 'auto', got {kind!r}")
    if kind == "response" and responses is None:
        raise UserError("redundancy='response' needs the neurons' responses")
    return kind  # type: ignore[return-value]


def _lam(lam: float | None, kind: Redundancy) -> float:
    return DEFAULT_LAM[kind] if lam is None else float(lam)


def _responses_for(responses: ArrayLike | None, n: int) -> np.ndarray:
    """The responses, checked against ``n`` neurons; not standardised (the exact solver does
    that, the fast one projects them as they are)."""
    r = _check_responses(responses)
    if r.shape[1] != n:
        raise UserError(f"responses have {r.shape[1]} neurons but X has {n} rows")
    return r


def _message_fn(xh: np.ndarray, r: np.ndarray | None, solver: str, *, sigma: float,
                levels: int, bits: int, shared: float, tables: int, seed: int, max_bytes: int,
                planes: int | None = None) -> Any:
    if solver not in ("exact", "fast"):
        raise UserError(f"solver must be 'fast' or 'exact', got {solver!r}")
    if r is not None:
        if not 1 <= bits <= 62:
            raise UserError(f"bits must be between 1 and 62, got {bits}")
        if not (math.isfinite(shared) and shared >= 0):
            raise UserError(f"shared={shared} is out of range (a weight >= 0)")
        if solver == "exact":
            return _ExactMessages.response(standardise(r), bits, shared, max_bytes)
        return _HashMessages(r, bits, tables, seed, planes, shared)
    if solver == "exact":
        return _ExactMessages.profile(xh, sigma, max_bytes)
    return _GridMessages(xh, sigma, levels)


# --------------------------------------------------------------------------- mean field


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow for any finite z


def _entropy_term(q: np.ndarray) -> float:
    """``sum q ln q + (1-q) ln(1-q)`` with ``0 ln 0 = 0``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(q > 0, q * np.log(q), 0.0)
        b = np.where(q < 1, (1 - q) * np.log1p(-q), 0.0)
    return float(a.sum() + b.sum())


def free_energy(q: np.ndarray, u: np.ndarray, b: float, m: np.ndarray) -> float:
    """F(q) of Eq 5 given the (scaled) messages ``m`` at ``q``; the pairwise sum over unordered
    pairs is ``q . m / 2``."""
    return _energy(_energy_parts(q, u, m), b)


def _energy_parts(q: np.ndarray, u: np.ndarray, m: np.ndarray) -> tuple[float, float]:
    """F(q) = parts[0] * b + parts[1]: the b-free remainder is kept so that a trajectory run
    with a moving b can be reported at one b (the final one)."""
    return float(q.sum()), float(-(q @ u) + 0.5 * (q @ m)) + _entropy_term(q)


def _energy(parts: tuple[float, float], b: float) -> float:
    return parts[0] * b + parts[1]


def _solve_bias(z: np.ndarray, k: int) -> float:
    """The ``b`` with ``sum_i sigmoid(z_i - b) = k`` (decreasing in ``b``).

    Coarse bracket first (the ``k``-th largest ``z`` is within ``ln N + 40`` of the root), then
    Newton steps kept inside the bracket, falling back to bisection when one would leave it.
    """
    n = z.shape[0]
    pivot = float(np.partition(z, n - k)[n - k])
    spread = math.log(n) + 40.0
    lo, hi = pivot - spread, pivot + spread
    b = pivot
    for _ in range(200):
        p = _sigmoid(z - b)
        f = float(p.sum()) - k
        if abs(f) <= 1e-9 * k:
            break
        if f > 0:
            lo = b
        else:
            hi = b
        slope = float((p * (1.0 - p)).sum())
        step = b + f / slope if slope > 0 else math.nan
        b = step if lo < step < hi else 0.5 * (lo + hi)
        if hi - lo < 1e-12 * max(1.0, abs(b)):
            break
    return b


@dataclass(frozen=True)
class Selection:
    """The result of :func:`mean_field_select`."""

    indices: np.ndarray  # int64 [k]: the selected neurons, by decreasing q
    q: np.ndarray  # float64 [N]: p(selected)
    u: np.ndarray  # float64 [N]: informativeness
    b: float  # the selection cost that makes sum q = k
    energies: list[float]  # F(q) before every iteration and at the end, all at the final b
    iterations: int
    solver: str
    seconds: float
    converged: bool
    k: int
    config: dict[str, Any] = field(default_factory=dict)


def _check_x(x: ArrayLike) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise UserError(f"X must be a non-empty [N, A] matrix, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        i, j = np.argwhere(~np.isfinite(arr))[0]
        raise UserError(f"X[{i}, {j}] is {arr[i, j]}: the accuracy matrix must be finite")
    return arr


def _rank(q: np.ndarray, u: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
    """Positions of all entries, best first: informative (u > 0) before dead ones, then larger
    q, then larger u, then lower ``index`` (default: the position)."""
    index = np.arange(q.shape[0]) if index is None else index
    return np.lexsort((index, -u, -q, u <= 0))


def _iterate(
    fn: Callable[[np.ndarray], np.ndarray],
    q: np.ndarray,
    u: np.ndarray,
    k: int,
    scale: float,
    *,
    eta: float,
    tol: float,
    max_iter: int,
    fixed_b: float | None,
    energies: list[tuple[float, float]],
) -> tuple[np.ndarray, float, int, bool]:
    """Damped parallel updates until ``max |dq| < tol``; ``b`` re-solved every iteration so
    that the new ``q`` sums to ``k`` (the damped mix then does too)."""
    b = math.nan
    for it in range(1, max_iter + 1):
        m = scale * fn(q)
        z = u - m
        b = fixed_b if fixed_b is not None else _solve_bias(z, k)
        energies.append(_energy_parts(q, u, m))
        q_new = (1.0 - eta) * q + eta * _sigmoid(z - b)
        change = float(np.max(np.abs(q_new - q)))
        q = q_new
        if change < tol:
            return q, b, it, True
    return q, b, max_iter, False


def _sweep(
    fn: _ExactMessages,
    q: np.ndarray,
    u: np.ndarray,
    k: int,
    scale: float,
    *,
    tol: float,
    max_iter: int,
    fixed_b: float | None,
    energies: list[tuple[float, float]],
) -> tuple[np.ndarray, float, int, bool]:
    """Sequential (coordinate) updates, one neuron at a time with the others' latest values:
    each update minimises F in that q_i exactly, so F never increases for a fixed ``b``."""
    q = q.copy()
    b = math.nan
    for it in range(1, max_iter + 1):
        m = scale * fn(q)
        b = fixed_b if fixed_b is not None else _solve_bias(u - m, k)
        energies.append(_energy_parts(q, u, m))
        change = 0.0
        for i in range(q.shape[0]):
            row = fn.row(i)
            mi = scale * (float(row @ q) - q[i] * float(row[i]))
            new = float(_sigmoid(np.array(u[i] - b - mi)))
            change = max(change, abs(new - q[i]))
            q[i] = new
        if change < tol:
            return q, b, it, True
    return q, b, max_iter, False


def _decode(
    q: np.ndarray,
    u: np.ndarray,
    m: np.ndarray,
    k: int,
    scale: float,
    among: Callable[[np.ndarray], np.ndarray],
    prior: bool = False,
) -> np.ndarray | None:
    """Greedy conditioning ("decimation"): turn the soft ``q`` into ``k`` hard choices.

    ``prior=False`` (decode ``"greedy"``, the response kernel's default) conditions on the accepted neurons
    only: a candidate's field is ``u_i - scale * sum_{j accepted} k_ij``, the energy's change
    when ``i`` joins the accepted set. ``prior=True`` (``"greedy-mf"``) starts from the
    mean-field field ``u_i - m_i`` instead, i.e. every undecided neuron still counts with its
    ``q_j``; measured on a trained teacher's responses, those phantom penalties bury whole
    clusters of informative neurons and leave more planted duplicates in
    (``benchmarks/selection_redundancy.py``).

    Mean field gives identical neurons identical ``q`` (the update is symmetric in them), so
    "the k largest q" keeps both or neither of a duplicated pair. Here neurons are taken one at
    a time by their field; accepting ``j`` fixes ``y_j = 1``, which lowers every other field by
    ``scale * k_ij`` (with the prior: ``scale * (1 - q_j) * k_ij``, its ``q_j`` share being
    counted already) - a duplicate of an accepted neuron pays the most. Candidates are the
    ``k`` best by the mean field's ``q`` and the ``k`` most informative (with the prior: the
    ``2k`` best by :func:`_rank`); their pairwise kernel is computed once (``among``), so each
    step is ``O(k)``. Ties: larger u, then lower index. Informative neurons come before dead ones
    (``u = 0``), as in :func:`_rank`. Returns None where the pool would be too big to hold.
    """
    if prior:
        pool = _rank(q, u)[: min(q.shape[0], _POOL_FACTOR * k)]
    else:  # the k the mean field favours and the k most informative
        by_u = _rank(np.zeros_like(u), u)[:k]
        pool = np.union1d(_rank(q, u)[:k], by_u)
    if pool.shape[0] > _MAX_POOL:
        return None
    # candidates in tie order, best first: np.argmax then takes the first of equal fields
    pool = pool[np.lexsort((pool, -u[pool]))]
    kern = among(pool)  # float32; each row is taken to float64 when it is used
    score = (u - m)[pool] if prior else u[pool].copy()  # larger is better
    score[u[pool] <= 0] = -np.inf  # dead ones last
    cost = scale * ((1.0 - q[pool]) if prior else np.ones(pool.shape[0]))
    chosen = np.empty(k, np.int64)
    for step in range(k):
        j = int(np.argmax(score))
        if score[j] == -np.inf:  # only dead ones (or none) left: by index
            rest = np.setdiff1d(pool, chosen[:step])
            chosen[step:] = rest[:k - step]
            break
        chosen[step] = pool[j]
        score -= cost[j] * kern[j]
        score[j] = -np.inf
    return chosen[_rank(q[chosen], u[chosen], chosen)]


def mean_field_select(
    x: ArrayLike,
    k: int,
    *,
    solver: Solver = "fast",
    lam: float | None = None,
    sigma: float = 0.1,
    weights: ArrayLike | None = None,
    eta: float = 0.5,
    tol: float = 1e-4,
    max_iter: int = 200,
    levels: int = 41,
    b: float | None = None,
    schedule: Literal["parallel", "sequential"] = "parallel",
    decode: Literal["greedy", "greedy-mf", "topk"] | None = None,
    max_kernel_bytes: int = MAX_KERNEL_BYTES,
    responses: ArrayLike | None = None,
    redundancy: Redundancy | Literal["auto"] = "auto",
    bits: int = DEFAULT_BITS,
    shared: float = DEFAULT_SHARED,
    tables: int = DEFAULT_TABLES,
    planes: int | None = None,
    seed: int = 0,
) -> Selection:
    """Select ``k`` of the ``N`` neurons of an attribute-accuracy matrix ``X`` ``[N, A]``.

    Steps 2-4 of the spec: normalise, informativeness ``u``, mean-field iterations with ``b``
    found so that ``sum q = k`` (or held at ``b`` when given), then the ``k`` best by :func:`_rank`
    (larger q, ties by larger u then lower index; a neuron with ``u = 0`` - chance on every
    attribute, e.g. a dead one - ranks after every informative neuron whatever its q).
    ``schedule="sequential"`` (exact solver only) updates one neuron at a time; slow, used to
    check that F decreases.

    Redundancy: ``"response"`` (the default when ``responses`` ``[M, N]`` are given) is the
    kernel :func:`response_kernel` on the neurons' response correlations: sharpened by
    ``bits``, plus ``shared`` times their square; the fast solver estimates its messages with
    ``tables`` random hash tables drawn from a pool of ``planes`` hyperplanes (``seed``;
    :class:`_HashMessages`), and the square from those planes' projections. ``"profile"`` is the spec's Gaussian kernel on the rows of ``X`` (``sigma``;
    the fast solver's grid has ``levels`` points). ``lam`` (default per kernel,
    :data:`DEFAULT_LAM`) weighs redundancy: ``Psi_ij = lam / k * kernel_ij``.
    """
    start = time.perf_counter()
    xa = _check_x(x)
    n = xa.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise UserError(f"k must be an integer, got {k!r}")
    k = int(k)
    if k <= 0:
        raise UserError(f"k must be at least 1, got {k}")
    if k > n:
        raise UserError(f"k={k} is more than the {n} candidate neurons")
    kind = _redundancy(redundancy, responses)
    r = _responses_for(responses, n) if kind == "response" else None
    lam = _lam(lam, kind)
    decode = decode or DEFAULT_DECODE[kind]
    for name, value, ok in (("lam", lam, lam >= 0), ("sigma", sigma, sigma > 0),
                            ("eta", eta, 0 < eta <= 1), ("tol", tol, tol > 0),
                            ("max_iter", max_iter, max_iter >= 1)):
        if not (math.isfinite(value) and ok):
            raise UserError(f"{name}={value} is out of range")
    if schedule not in ("parallel", "sequential"):
        raise UserError(f"schedule must be 'parallel' or 'sequential', got {schedule!r}")
    if schedule == "sequential" and solver != "exact":
        raise UserError("the sequential schedule needs solver='exact'")
    if decode not in ("greedy", "greedy-mf", "topk"):
        raise UserError(f"decode must be 'greedy', 'greedy-mf' or 'topk', got {decode!r}")
    xh = normalise(xa)
    u = informativeness(xh, weights)
    config = {"redundancy": kind, "lam": lam, "eta": eta, "tol": tol, "max_iter": max_iter,
              "schedule": schedule, "decode": decode,
              **({"bits": bits, "shared": shared, "tables": tables, "seed": seed,
                  "planes": PLANES_PER_BIT * bits if planes is None else planes}
                 if kind == "response"
                 else {"sigma": sigma, "levels": levels}),
              "weights": None if weights is None else np.asarray(weights, float).tolist()}
    energies: list[tuple[float, float]] = []
    scale = lam / k
    if k == n:  # everything is selected: nothing to infer
        q = np.ones(n)
        return Selection(_rank(q, u), q, u, -math.inf, [], 0, solver,
                         time.perf_counter() - start, True, k, config)

    b0 = b if b is not None else _solve_bias(u, k)
    q = _sigmoid(u - b0)
    kw = {"tol": tol, "max_iter": max_iter, "fixed_b": b, "energies": energies}
    fn = _message_fn(xh, r, solver, sigma=sigma, levels=levels, bits=bits, shared=shared,
                     tables=tables, planes=planes, seed=seed, max_bytes=max_kernel_bytes)
    if solver == "exact" and schedule == "sequential":
        q, b_out, iters, done = _sweep(fn, q, u, k, scale, **kw)
    elif solver == "fast" and r is None:
        iters = 0
        if levels > COARSE_LEVELS:  # coarse to fine
            coarse = _GridMessages(xh, sigma, COARSE_LEVELS)
            q, _, iters, _ = _iterate(coarse, q, u, k, scale, eta=eta, **kw)
        q, b_out, more, done = _iterate(fn, q, u, k, scale, eta=eta, **kw)
        iters += more
    else:
        q, b_out, iters, done = _iterate(fn, q, u, k, scale, eta=eta, **kw)
    m = scale * fn(q)
    energies.append(_energy_parts(q, u, m))  # ... and at the end
    order = (_decode(q, u, m, k, scale, fn.among, prior=decode == "greedy-mf")
             if decode != "topk" else None)
    if order is None:
        order = _rank(q, u)[:k]
        config["decode"] = "topk"
    return Selection(order, q, u, float(b_out), [_energy(e, b_out) for e in energies], iters,
                     solver,
                     time.perf_counter() - start, done, k, config)
