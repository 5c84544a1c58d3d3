"""What the runtime returns: one :class:`Prediction` per image (or per detected face).

A prediction keeps the model's probability row (float32) and the model's per-attribute
thresholds; an attribute is *positive* iff its probability >= its threshold (the thresholds
were searched for the best balanced accuracy on the validation split at training time and are
stored in the exported model). :meth:`Prediction.to_dict` gives plain Python values, so
``json.dumps(pred.to_dict())`` works.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class Prediction:
    """The attributes of one image (or one face crop).

    ``probabilities`` float32 [A] and ``thresholds`` float64 [A] follow ``attributes``' order.
    ``source`` is the image's path when it was given as one, else None.
    """

    attributes: tuple[str, ...]
    probabilities: np.ndarray
    thresholds: np.ndarray
    source: str | None = None

    @property
    def positive(self) -> np.ndarray:
        """bool [A]: each attribute's yes/no decision."""
        return self.probabilities >= self.thresholds

    def _index(self, name: str) -> int:
        try:
            return self.attributes.index(name)
        except ValueError:
            raise KeyError(f"no attribute {name!r} in this model") from None

    def __getitem__(self, name: str) -> float:
        """The probability of attribute ``name``."""
        return float(self.probabilities[self._index(name)])

    def is_positive(self, name: str) -> bool:
        i = self._index(name)
        return bool(self.probabilities[i] >= self.thresholds[i])

    def positives(self, top: int | None = None) -> list[tuple[str, float]]:
        """The positive attributes as (name, probability), most probable first; at most
        ``top`` of them when given."""
        idx = np.flatnonzero(self.positive)
        idx = idx[np.argsort(-self.probabilities[idx], kind="stable")]
        if top is not None:
            idx = idx[: max(top, 0)]
        return [(self.attributes[i], float(self.probabilities[i])) for i in idx]

    def to_dict(self) -> dict[str, Any]:
        """``{"source", "attributes": {name: {"probability", "positive", "threshold"}}}``."""
        probs = self.probabilities.tolist()
        thresholds = self.thresholds.tolist()
        return {
            "source": self.source,
            "attributes": {
                name: {"probability": p, "positive": p >= t, "threshold": t}
                for name, p, t in zip(self.attributes, probs, thresholds, strict=True)
            },
        }

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={p:.2f}" for n, p in self.positives(top=5))
        more = int(self.positive.sum()) - min(5, int(self.positive.sum()))
        return (f"Prediction(source={self.source!r}, positive: {shown or 'none'}"
                f"{f', +{more} more' if more else ''})")


@dataclass(frozen=True, eq=False)
class FacePrediction:
    """One detected face: its box ``(x, y, width, height)`` in the image's pixels (before the
    margin is added) and the attributes predicted on its crop."""

    box: tuple[int, int, int, int]
    prediction: Prediction

    def to_dict(self) -> dict[str, Any]:
        """``{"box": [x, y, w, h], "attributes": {...}}`` (as :meth:`Prediction.to_dict`)."""
        return {"box": list(self.box), "attributes": self.prediction.to_dict()["attributes"]}
