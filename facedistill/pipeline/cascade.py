"""The cascade's combination of part and whole subnets (cascade paper, "region switch layer";
our reconstruction, ``docs/cascade.md``): per attribute, the subnet that scores it better on
val - the part subnet on its face region or the whole-image subnet on the face crop."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from facedistill import metrics

#: (val logits, val labels, test logits, test labels) of one model
Scores = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class SwitchResult:
    """The switch's choice per attribute (``use_part``), the val balanced accuracy of either
    subnet per attribute, and the metrics report of the switched scores (test, thresholds
    searched on val)."""

    use_part: np.ndarray
    part_val: np.ndarray
    whole_val: np.ndarray
    report: dict[str, Any]

    def to_record(self, names: Sequence[str]) -> dict[str, Any]:
        return {"mean_balanced": self.report["mean_balanced"],
                "parts_chosen": int(self.use_part.sum()),
                "attributes": {n: {"use_part": bool(u), "part_val": float(p),
                                   "whole_val": float(w)}
                               for n, u, p, w in zip(names, self.use_part, self.part_val,
                                                     self.whole_val, strict=True)}}


def _val_balanced(s: Scores, names: Sequence[str]) -> np.ndarray:
    report = metrics.evaluate(s[0], s[1], s[0], s[1], names)
    return np.array([a["val_balanced"] or 0.0 for a in report["attributes"]])


def region_switch(part: Scores, whole: Scores, names: Sequence[str]) -> SwitchResult:
    """The hard region switch: attribute k takes the part subnet's logit when its val
    balanced accuracy (at its own val-searched threshold) beats the whole subnet's, else the
    whole's; the switched logits' thresholds are then searched on val and scored on test. Both
    must score the same images in the same order."""
    if not (np.array_equal(part[1], whole[1]) and np.array_equal(part[3], whole[3])):
        raise ValueError("the part and whole subnets must score the same images")
    p_val, w_val = _val_balanced(part, names), _val_balanced(whole, names)
    use = p_val > w_val
    val = np.where(use, part[0], whole[0])
    test = np.where(use, part[2], whole[2])
    return SwitchResult(use, p_val, w_val, metrics.evaluate(val, part[1], test, part[3], names))
