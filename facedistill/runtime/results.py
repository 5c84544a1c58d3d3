"""What the runtime returns: one :class:`Prediction` per image (or per detected face).

A prediction keeps the model's probability row (float32), the model's per-attribute thresholds
and which attributes are reliable. An attribute is *positive* iff its probability >= its
threshold (the thresholds were searched for the best balanced accuracy on the validation split
at training time and are stored in the exported model). It is *reliable* unless its validation
balanced accuracy is under the predictor's reliability floor: an unreliable attribute keeps its
probability and its decision, but :meth:`Prediction.positives` (and so ``predict``'s tables and
``--annotate``) leaves it out unless asked for ``all=True``.

Everything is on the probability: thresholds, and the *margin* ``probability - threshold`` by
which positives are ranked (how far past its own threshold an attribute is, so an attribute
with a high threshold does not outrank a clearer one by raw probability).
:meth:`Prediction.to_dict` gives plain Python values, so ``json.dumps(pred.to_dict())`` works.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class Prediction:
    """The attributes of one image (or one face crop).

    ``probabilities`` float32 [A], ``thresholds`` float64 [A] (on the probability) and
    ``reliable`` bool [A] follow ``attributes``' order; ``reliable`` None means every attribute
    is taken as reliable (a model that carries no validation accuracy). ``source`` is the
    image's path when it was given as one, else None. ``regions``: for a cascade, the face
    regions its part subnets looked at, ``{group: (x, y, width, height)}`` in the pixels of the
    image given (the photo, for a detected face); None for other models.
    """

    attributes: tuple[str, ...]
    probabilities: np.ndarray
    thresholds: np.ndarray
    source: str | None = None
    reliable: np.ndarray | None = None
    regions: dict[str, tuple[int, int, int, int]] | None = None

    @property
    def positive(self) -> np.ndarray:
        """bool [A]: each attribute's yes/no decision by its threshold (reliable or not)."""
        return self.probabilities >= self.thresholds

    @property
    def margins(self) -> np.ndarray:
        """float64 [A]: ``probability - threshold``, >= 0 exactly for the positive ones."""
        return self.probabilities.astype(np.float64) - self.thresholds

    @property
    def reliability(self) -> np.ndarray:
        """bool [A]: which attributes are reliable (all, when the model did not say)."""
        if self.reliable is None:
            return np.ones(len(self.attributes), dtype=bool)
        return np.asarray(self.reliable, dtype=bool)

    @property
    def unreliable(self) -> tuple[str, ...]:
        """The names of the attributes under the reliability floor."""
        return tuple(n for n, r in zip(self.attributes, self.reliability, strict=True) if not r)

    def _index(self, name: str) -> int:
        try:
            return self.attributes.index(name)
        except ValueError:
            raise KeyError(f"no attribute {name!r} in this model") from None

    def __getitem__(self, name: str) -> float:
        """The probability of attribute ``name``."""
        return float(self.probabilities[self._index(name)])

    def is_positive(self, name: str) -> bool:
        """The threshold's decision for ``name`` (see :meth:`is_reliable` for its trust)."""
        i = self._index(name)
        return bool(self.probabilities[i] >= self.thresholds[i])

    def is_reliable(self, name: str) -> bool:
        """Whether ``name``'s validation balanced accuracy reaches the reliability floor."""
        return bool(self.reliability[self._index(name)])

    def margin(self, name: str) -> float:
        """``probability - threshold`` of ``name``."""
        return float(self.margins[self._index(name)])

    def positives(self, top: int | None = None, all: bool = False) -> list[tuple[str, float]]:
        """The positive attributes as (name, probability), ranked by margin over their
        threshold (``probability - threshold``), largest first; unreliable ones left out
        unless ``all``; at most ``top`` of them when given."""
        keep = self.positive if all else self.positive & self.reliability
        idx = np.flatnonzero(keep)
        idx = idx[np.argsort(-self.margins[idx], kind="stable")]
        if top is not None:
            idx = idx[: max(top, 0)]
        return [(self.attributes[i], float(self.probabilities[i])) for i in idx]

    def to_dict(self) -> dict[str, Any]:
        """``{"source", "attributes": {name: {"probability", "positive", "threshold",
        "margin", "reliable"}}}``: probability, threshold and margin on the probability;
        ``positive`` is the threshold's decision, ``reliable`` whether to trust it; a
        cascade's also ``"regions": {group: [x, y, width, height]}``."""
        probs = self.probabilities.tolist()
        thresholds = self.thresholds.tolist()
        margins = self.margins.tolist()
        reliable = self.reliability.tolist()
        out: dict[str, Any] = {
            "source": self.source,
            "attributes": {
                name: {"probability": p, "positive": p >= t, "threshold": t, "margin": m,
                       "reliable": r}
                for name, p, t, m, r in zip(self.attributes, probs, thresholds, margins,
                                            reliable, strict=True)
            },
        }
        if self.regions is not None:
            out["regions"] = {g: list(b) for g, b in self.regions.items()}
        return out

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={p:.2f}" for n, p in self.positives(top=5))
        count = len(self.positives())
        more = count - min(5, count)
        return (f"Prediction(source={self.source!r}, positive: {shown or 'none'}"
                f"{f', +{more} more' if more else ''})")


@dataclass(frozen=True, eq=False)
class FacePrediction:
    """One detected face: its box ``(x, y, width, height)`` in the image's pixels (before the
    margin is added) and the attributes predicted on its crop."""

    box: tuple[int, int, int, int]
    prediction: Prediction

    def to_dict(self) -> dict[str, Any]:
        """``{"box": [x, y, w, h], "attributes": {...}}`` (as :meth:`Prediction.to_dict`, with
        its ``regions`` when a cascade predicted)."""
        inner = self.prediction.to_dict()
        return {"box": list(self.box), **{k: v for k, v in inner.items() if k != "source"}}
