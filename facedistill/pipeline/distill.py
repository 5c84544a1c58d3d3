"""Distillation objectives: what a student is trained to match, term by term.

A :class:`DistillObjective` is the ``objective`` a :class:`facedistill.pipeline.train.Trainer`
calls on every batch as ``objective(logits, features, labels, images) -> (loss, terms)``, where
``logits`` ``[B, A]`` and ``features`` ``[B, 1280]`` are the student's outputs for the training
images. The loss is a weighted sum of named terms; each term's unweighted value is returned in
``terms`` so the training log shows how every part moves. There are four terms:

``labels``
    Binary cross-entropy of the student's logits against the 0/1 attribute labels (optionally
    with a weight on each attribute's positives). This is the plain supervised baseline. Images
    of an unlabeled pool (labels -1) are left out of it; the teacher terms still see them.
``soft``
    Soft targets. The teacher's logits ``t`` (the mean of the teachers' logits for an ensemble)
    are turned into probabilities ``sigmoid(t / T)`` and the student's ``sigmoid(s / T)`` is
    pulled towards them with binary cross-entropy, averaged over batch and attributes and
    multiplied by ``T ** 2`` so the size of its gradient does not shrink as the temperature
    ``T`` grows. ``T = 1`` is the baseline of the paper.
``hint``
    Mean squared error between the student's 1280-d top hidden layer (the GAP vector) and the
    teacher's, averaged over batch and dimensions. Every neuron is imitated, informative or
    not. Independently trained teachers' neurons are not aligned (neuron ``j`` of one has
    nothing to do with neuron ``j`` of another), so for an ensemble the target is all their
    neurons side by side, reached through a training-only ``Linear(1280, T * 1280)`` (like
    ``selected``'s regressor), never their element-wise mean.
``selected``
    Mean squared error on the teacher neurons picked by neuron selection only. The targets are
    columns of the teachers' features concatenated side by side (teacher ``t``'s neuron ``j`` is
    column ``offset_t + j``), in the order the selection lists them. With one teacher and as
    many selected neurons as the student has features, student feature ``i`` imitates target
    ``i`` directly. Otherwise (an ensemble, or fewer/more neurons) a linear regressor
    ``Linear(1280, K)`` maps the student's features to the ``K`` targets. That regressor exists
    only for training: it is a parameter of the objective, optimised with the student and saved
    with the resume state, and never part of the exported model.

The teachers are frozen: no gradients, always in eval mode (calling ``train()`` on the objective
does not change that), run under ``torch.no_grad()`` on the same batch of images, resized first
when a teacher expects another input size. They are kept outside the module tree, so they are
neither in the objective's ``state_dict`` nor among its parameters, but moving the objective
(``.to(device)``) moves them too. All loss arithmetic runs in float32, whatever autocast does to
the networks.

Teacher outputs are memoised by a :class:`TeacherCache` when the objective is given
``teacher_keys`` (``compress`` passes each checkpoint's sha256): the key of a batch is its exact
bytes (plus shape, dtype, memory layout and autocast state), so students trained one after the
other on the same data with the same seed - the pipeline's SNet1/2/3, every method of one seed
in ``benchmarks/distill_gain.py`` - run the teacher once per batch, not once per student. A hit
returns the outputs the same teacher computed for byte-identical input; anything that changes
the batch (seed, augmentation, data, an unlabeled pool) misses. Only CPU batches are cached (on
a GPU the hash would cost a copy the teacher forward does not).

Two-stage training (``two_stage=E``): for epochs ``1..E`` only the feature terms (``hint``,
``selected``) are optimised, afterwards only ``labels`` and ``soft``. The default ``0`` optimises
the weighted sum of every term all the time.

Public API: :class:`DistillObjective`, :data:`TERMS`, :data:`METHODS`, :func:`build_objective`,
:class:`TeacherCache`, :data:`TEACHER_CACHE`.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from numbers import Integral, Real
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from facedistill.errors import ConfigError, UserError

__all__ = ["FEATURE_TERMS", "METHODS", "TEACHER_CACHE", "TERMS", "DistillObjective",
           "TeacherCache", "build_objective"]

TERMS = ("labels", "soft", "hint", "selected")
"""Names of the loss terms, in the order they are computed."""

FEATURE_TERMS = ("hint", "selected")
"""The terms on the top hidden layer: the first stage of two-stage training."""

_TEACHER_TERMS = ("soft", "hint", "selected")

# Default term weights of each ``--method``. ``selected`` at 1 was measured against 0.3 and 3
# (benchmarks/width_sweep.py, docs/distillation.md): 3 was worst, 0.3 and 1 within 0.4 point.
METHODS: dict[str, dict[str, float]] = {
    "labels": {"labels": 1.0},
    "soft": {"labels": 1.0, "soft": 1.0},
    "hint": {"labels": 1.0, "hint": 1.0},
    "selected": {"labels": 1.0, "selected": 1.0},
}


def _check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    if not isinstance(weights, Mapping):
        raise ConfigError(f"weights must map term names to numbers, got {weights!r}",
                          field="weights")
    out: dict[str, float] = {}
    for name, w in weights.items():
        if name not in TERMS:
            raise ConfigError(f"unknown loss term {name!r}; known terms: {', '.join(TERMS)}",
                              field="weights")
        if isinstance(w, bool) or not isinstance(w, Real) or not math.isfinite(w) or w < 0:
            raise ConfigError(f"the weight of term {name!r} must be a finite number >= 0, "
                              f"got {w!r}", field="weights")
        out[name] = float(w)
    if not any(w > 0 for w in out.values()):
        raise ConfigError("every loss term has weight 0; give at least one term a positive "
                          "weight", field="weights")
    return out


class TeacherCache:
    """An LRU memo of teacher outputs ``(logits, features)`` keyed by teacher and batch bytes.

    ``max_bytes`` bounds what it holds (0 turns it off). One epoch of 12,855 images costs 68 MB
    (40 logits + 1280 features per image, float32), whatever the input size. ``hits`` and
    ``misses`` count lookups.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._store: OrderedDict[bytes, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    @staticmethod
    def batch_key(images: torch.Tensor) -> bytes | None:
        """The digest of a CPU batch (None on other devices: not cached)."""
        if images.device.type != "cpu":
            return None
        h = hashlib.blake2b(digest_size=20)
        layout = images.is_contiguous(memory_format=torch.channels_last)
        autocast = (torch.is_autocast_enabled("cpu"), str(torch.get_autocast_dtype("cpu")))
        h.update(repr((tuple(images.shape), str(images.dtype), layout, autocast)).encode())
        h.update(images.detach().contiguous().numpy().tobytes())
        return h.digest()

    def get(self, key: bytes) -> tuple[torch.Tensor, torch.Tensor] | None:
        hit = self._store.get(key)
        if hit is None:
            self.misses += 1
            return None
        self._store.move_to_end(key)
        self.hits += 1
        return hit

    def put(self, key: bytes, logits: torch.Tensor, features: torch.Tensor) -> None:
        size = logits.nbytes + features.nbytes
        if size > self.max_bytes:
            return
        old = self._store.pop(key, None)
        if old is not None:
            self.bytes -= old[0].nbytes + old[1].nbytes
        self._store[key] = (logits, features)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (lo, fe) = self._store.popitem(last=False)
            self.bytes -= lo.nbytes + fe.nbytes

    def clear(self) -> None:
        self._store.clear()
        self.bytes = self.hits = self.misses = 0

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "entries": len(self._store),
                "bytes": self.bytes, "max_bytes": self.max_bytes}


def _cache_budget() -> int:
    """``FACEDISTILL_TEACHER_CACHE_MB`` (default 2048; 0 = off), in bytes."""
    raw = os.environ.get("FACEDISTILL_TEACHER_CACHE_MB", "2048")
    try:
        mb = float(raw)
    except ValueError:
        raise ConfigError(f"FACEDISTILL_TEACHER_CACHE_MB must be a number of MB, not {raw!r}",
                          field="FACEDISTILL_TEACHER_CACHE_MB") from None
    return max(0, int(mb * 2**20))


TEACHER_CACHE = TeacherCache(_cache_budget())
"""The process's cache, shared by every objective built with ``teacher_keys``."""


def _teacher_dim(teacher: nn.Module, t: int) -> int:
    if not callable(getattr(teacher, "forward_with_features", None)):
        raise TypeError(f"teacher {t} has no forward_with_features(); build it with build_model")
    dim = getattr(teacher, "feature_dim", None)
    if isinstance(dim, bool) or not isinstance(dim, Integral) or dim < 1:
        raise TypeError(f"teacher {t} has no positive integer feature_dim")
    return int(dim)


class DistillObjective(nn.Module):
    """Weighted sum of the ``labels``, ``soft``, ``hint`` and ``selected`` terms.

    ``teachers``: frozen networks with ``forward_with_features(x) -> (logits, features)`` and a
    ``feature_dim`` (CascadeNets); may be empty when only ``labels`` is weighted.
    ``weights``: term name -> weight >= 0 (terms left out or weighted 0 are not computed).
    ``temperature``: ``T`` of the ``soft`` term (> 0). ``selected``: global indices into the
    teachers' concatenated features (needed by the ``selected`` term). ``student_dim``: width of
    the student's feature vector. ``pos_weight``: ``[A]`` weight of each attribute's positives in
    the ``labels`` term. ``teacher_sizes``: the square input size each teacher expects (images
    of another size are resized for it). ``two_stage``: number of feature-only epochs (0 =
    joint training). ``teacher_keys``: one string per teacher that names its weights (a
    checkpoint's sha256); with them teacher outputs are memoised in ``cache`` (default
    :data:`TEACHER_CACHE`).

    ``forward(logits, features, labels, images) -> (total, terms)``: ``terms`` holds the
    unweighted, detached value of each term active in the current stage; ``total`` is their
    weighted sum (float32).
    """

    regressor: nn.Linear | None
    pos_weight: torch.Tensor | None
    selected_index: torch.Tensor | None

    def __init__(
        self,
        teachers: Sequence[nn.Module],
        *,
        weights: Mapping[str, float],
        temperature: float = 1.0,
        selected: Sequence[int] | None = None,
        student_dim: int = 1280,
        pos_weight: torch.Tensor | None = None,
        teacher_sizes: Sequence[int] | None = None,
        two_stage: int = 0,
        teacher_keys: Sequence[str] | None = None,
        cache: TeacherCache | None = None,
    ) -> None:
        super().__init__()
        self.weights = _check_weights(weights)
        used = {name for name, w in self.weights.items() if w > 0}

        if (isinstance(temperature, bool) or not isinstance(temperature, Real)
                or not math.isfinite(temperature) or temperature <= 0):
            raise ConfigError(f"the temperature must be a finite number > 0, got {temperature!r}",
                              field="temperature")
        self.temperature = float(temperature)
        if isinstance(student_dim, bool) or not isinstance(student_dim, Integral) \
                or student_dim < 1:
            raise ValueError(f"student_dim must be a positive integer, got {student_dim!r}")
        self.student_dim = int(student_dim)

        # teachers: a plain tuple, so they are not submodules (not in state_dict/parameters)
        teachers = tuple(teachers)
        dims = [_teacher_dim(t, i) for i, t in enumerate(teachers)]
        if used & set(_TEACHER_TERMS) and not teachers:
            names = ", ".join(sorted(used & set(_TEACHER_TERMS)))
            raise ConfigError(f"the {names} term(s) need at least one teacher", field="teachers")
        for t in teachers:
            t.requires_grad_(False)
            t.eval()
        self._teachers: tuple[nn.Module, ...] = teachers
        if teacher_keys is not None and len(teacher_keys) != len(teachers):
            raise ConfigError(f"teacher_keys has {len(teacher_keys)} entries for "
                              f"{len(teachers)} teacher(s)", field="teacher_keys")
        self.teacher_keys = None if teacher_keys is None else tuple(str(k) for k in teacher_keys)
        self.cache = (cache if cache is not None else TEACHER_CACHE) \
            if self.teacher_keys is not None else None
        self.teacher_dims = tuple(dims)
        self.teacher_offsets = tuple(sum(dims[:i]) for i in range(len(dims)))
        self.total_teacher_dim = sum(dims)

        if teacher_sizes is not None:
            sizes = list(teacher_sizes)
            if len(sizes) != len(teachers):
                raise ConfigError(f"teacher_sizes has {len(sizes)} entries for "
                                  f"{len(teachers)} teacher(s)", field="teacher_sizes")
            for s in sizes:
                if isinstance(s, bool) or not isinstance(s, Integral) or s < 1:
                    raise ConfigError(f"teacher input sizes must be positive integers, got {s!r}",
                                      field="teacher_sizes")
            self.teacher_sizes: tuple[int, ...] | None = tuple(int(s) for s in sizes)
        else:
            self.teacher_sizes = None

        self.hint_regressor: nn.Linear | None = None
        if "hint" in used:
            for i, d in enumerate(dims):
                if d != self.student_dim:
                    raise ConfigError(f"the hint term needs teachers with {self.student_dim}-d "
                                      f"features like the student; teacher {i} has {d}",
                                      field="weights")
            if len(teachers) > 1:  # unaligned neurons: one map to all of them, not their mean
                self.hint_regressor = nn.Linear(self.student_dim, self.total_teacher_dim)

        self.register_buffer("pos_weight",
                             None if pos_weight is None
                             else torch.as_tensor(pos_weight, dtype=torch.float32),
                             persistent=False)

        self.regressor = None
        index: torch.Tensor | None = None
        if "selected" in used:
            if selected is None:
                raise ConfigError("the selected term needs the selected neuron indices (run "
                                  "neuron selection first)", field="selected")
            idx = selected.tolist() if hasattr(selected, "tolist") else list(selected)
            if not idx:
                raise ConfigError("the list of selected neurons is empty", field="selected")
            if not all(isinstance(i, Integral) and not isinstance(i, bool) for i in idx):
                raise ConfigError("the selected neuron indices must be integers",
                                  field="selected")
            idx = [int(i) for i in idx]
            bad = [i for i in idx if not 0 <= i < self.total_teacher_dim]
            if bad:
                raise ConfigError(f"selected neuron index {bad[0]} is out of range: the "
                                  f"teachers have {self.total_teacher_dim} neurons in all "
                                  f"(0..{self.total_teacher_dim - 1})", field="selected")
            seen: set[int] = set()
            for i in idx:
                if i in seen:
                    raise ConfigError(f"selected neuron index {i} appears more than once",
                                      field="selected")
                seen.add(i)
            index = torch.tensor(idx, dtype=torch.long)
            if not (len(teachers) == 1 and len(idx) == self.student_dim):
                self.regressor = nn.Linear(self.student_dim, len(idx))
        self.register_buffer("selected_index", index, persistent=False)

        if isinstance(two_stage, bool) or not isinstance(two_stage, Integral) or two_stage < 0:
            raise ConfigError(f"two_stage must be a whole number of epochs >= 0, got "
                              f"{two_stage!r}", field="two_stage")
        self.two_stage = int(two_stage)
        order = [name for name in TERMS if name in used]
        if self.two_stage:
            first = tuple(n for n in order if n in FEATURE_TERMS)
            second = tuple(n for n in order if n not in FEATURE_TERMS)
            if not first:
                raise ConfigError("two-stage training needs a weighted hint or selected term "
                                  "for its first stage", field="two_stage")
            if not second:
                raise ConfigError("two-stage training needs a weighted labels or soft term "
                                  "for its second stage", field="two_stage")
            self._stages: tuple[tuple[str, ...], ...] = (first, second)
        else:
            self._stages = (tuple(order),)
        self.stage = 1
        self.active_terms: tuple[str, ...] = self._stages[0]

    # -- the teachers -------------------------------------------------------------------------
    @property
    def teachers(self) -> tuple[nn.Module, ...]:
        return self._teachers

    def train(self, mode: bool = True) -> DistillObjective:
        super().train(mode)
        for t in self._teachers:
            t.eval()
        return self

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Any:
        # .to(), .cuda(), .cpu(), .float() ... reach the teachers, which are not submodules
        super()._apply(fn, recurse)
        for t in self._teachers:
            t._apply(fn)
        return self

    def _run_teachers(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        logits, feats = [], []
        resized: dict[int, torch.Tensor] = {}
        cache = self.cache if self.cache is not None and self.cache.max_bytes > 0 else None
        batch = TeacherCache.batch_key(images) if cache is not None else None
        with torch.no_grad():
            for i, teacher in enumerate(self._teachers):
                key = None
                if batch is not None:
                    assert cache is not None and self.teacher_keys is not None
                    size = self.teacher_sizes[i] if self.teacher_sizes is not None else 0
                    key = hashlib.blake2b(f"{self.teacher_keys[i]}|{size}|".encode() + batch,
                                          digest_size=20).digest()
                    hit = cache.get(key)
                    if hit is not None:
                        logits.append(hit[0])
                        feats.append(hit[1])
                        continue
                x = images
                size = self.teacher_sizes[i] if self.teacher_sizes is not None else None
                if size is not None and tuple(images.shape[-2:]) != (size, size):
                    if size not in resized:
                        resized[size] = F.interpolate(images.float(), size=(size, size),
                                                      mode="bilinear", antialias=True,
                                                      align_corners=False)
                    x = resized[size]
                lo, fe = teacher.forward_with_features(x)
                logits.append(lo.float())
                feats.append(fe.float())
                if key is not None:
                    assert cache is not None
                    cache.put(key, logits[-1], feats[-1])
        return logits, feats

    # -- stages ---------------------------------------------------------------------------------
    def set_epoch(self, epoch: int, epochs: int) -> None:
        """Pick the terms of ``epoch`` (1-based) of ``epochs``; the Trainer calls it per epoch."""
        if self.two_stage and self.two_stage >= epochs:
            raise ConfigError(f"two_stage={self.two_stage} leaves no epoch for the second stage "
                              f"of a {epochs}-epoch run; use fewer feature epochs or more epochs",
                              field="two_stage")
        self.stage = 2 if self.two_stage and epoch > self.two_stage else 1
        self.active_terms = self._stages[self.stage - 1]

    # -- the loss -------------------------------------------------------------------------------
    def forward(self, logits: torch.Tensor, features: torch.Tensor, labels: torch.Tensor,
                images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        active = self.active_terms
        t_logits: list[torch.Tensor] = []
        t_feats: list[torch.Tensor] = []
        if any(name in _TEACHER_TERMS for name in active):
            t_logits, t_feats = self._run_teachers(images)

        values: dict[str, torch.Tensor] = {}
        with torch.autocast(logits.device.type, enabled=False):  # loss math in float32
            s = logits.float()
            f = features.float()
            if f.shape[-1] != self.student_dim:
                raise ValueError(f"student features have {f.shape[-1]} dims, expected "
                                 f"{self.student_dim}")
            if "labels" in active:
                values["labels"] = _labelled_bce(s, labels.float(), self.pos_weight)
            if "soft" in active:
                t = torch.stack(t_logits).mean(0)
                if t.shape != s.shape:
                    raise UserError(f"the teacher predicts {t.shape[-1]} attributes, the "
                                    f"student {s.shape[-1]}; distil between models of the same "
                                    f"attributes")
                temp = self.temperature
                values["soft"] = F.binary_cross_entropy_with_logits(
                    s / temp, torch.sigmoid(t / temp)) * (temp * temp)
            if "hint" in active:
                if self.hint_regressor is None:
                    values["hint"] = F.mse_loss(f, t_feats[0])
                else:
                    values["hint"] = F.mse_loss(self.hint_regressor(f), torch.cat(t_feats, 1))
            if "selected" in active:
                assert self.selected_index is not None
                target = torch.cat(t_feats, dim=1).index_select(1, self.selected_index)
                pred = f if self.regressor is None else self.regressor(f)
                values["selected"] = F.mse_loss(pred, target)
            total = sum((self.weights[name] * values[name] for name in active),
                        start=s.new_zeros(()))
        return total, {name: v.detach() for name, v in values.items()}

    def extra_repr(self) -> str:
        w = ", ".join(f"{k}={v:g}" for k, v in self.weights.items())
        return (f"weights=({w}), temperature={self.temperature:g}, "
                f"teachers={len(self._teachers)}, two_stage={self.two_stage}")


def _labelled_bce(s: torch.Tensor, y: torch.Tensor, pos_weight: torch.Tensor | None
                  ) -> torch.Tensor:
    """BCE over the rows that have labels: an unlabeled image (labels < 0, see
    :mod:`facedistill.pipeline.data.unlabeled`) is supervised by the teacher terms only. A batch
    without any labelled image gives 0 (connected to the graph)."""
    known = y[:, 0] >= 0
    if bool(known.all()):
        return F.binary_cross_entropy_with_logits(s, y, pos_weight=pos_weight)
    if not bool(known.any()):
        return s.sum() * 0.0
    return F.binary_cross_entropy_with_logits(s[known], y[known], pos_weight=pos_weight)


def build_objective(
    method: str,
    teachers: Sequence[nn.Module],
    *,
    selected: Sequence[int] | None = None,
    temperature: float = 1.0,
    pos_weight: torch.Tensor | None = None,
    teacher_sizes: Sequence[int] | None = None,
    two_stage: int = 0,
    weights: Mapping[str, float] | None = None,
    teacher_keys: Sequence[str] | None = None,
    student_dim: int = 1280,
) -> DistillObjective:
    """The objective of a compress ``method`` (a key of :data:`METHODS`).

    ``weights`` overrides the method's default weights term by term (e.g. ``{"hint": 0.5}``
    keeps ``labels`` at 1; ``{"labels": 0}`` drops it). ``student_dim``: the width of the
    student's features (1280 for the SNets; 1280 per region for part subnets).
    """
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; known methods: {', '.join(METHODS)}",
                          field="method")
    merged: dict[str, float] = dict(METHODS[method])
    if weights is not None:
        if not isinstance(weights, Mapping):
            raise ConfigError(f"weights must map term names to numbers, got {weights!r}",
                              field="weights")
        merged.update(weights)  # checked, with the defaults, by DistillObjective
    return DistillObjective(teachers, weights=merged, temperature=temperature,
                            selected=selected, pos_weight=pos_weight,
                            teacher_sizes=teacher_sizes, two_stage=two_stage,
                            teacher_keys=teacher_keys, student_dim=student_dim)

