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


#: the weight decay toward identity the relation layer is chosen from (on val)
RELATION_DECAYS = (1e-3, 1e-2, 1e-1)


def fit_relations(logits: np.ndarray, labels: np.ndarray, decay: float,
                  steps: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """The attribute relation layer (MCNN-AUX style): ``z' = z @ W.T + b`` over the 40 frozen
    scores ``logits`` ``[N, A]``, ``W`` initialised at identity and pulled back to it by
    ``decay * ||W - I||^2``, fitted by L-BFGS on the BCE to ``labels``. Returns ``(W, b)``."""
    import torch

    z = torch.as_tensor(logits, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.float32)
    eye = torch.eye(z.shape[1])
    w = eye.clone().requires_grad_(True)
    b = torch.zeros(z.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w.T + b, y) \
            + decay * ((w - eye) ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), b.detach().numpy()


def relation_layer(train: tuple[np.ndarray, np.ndarray], scores: Scores, names: Sequence[str]
                   ) -> dict[str, Any]:
    """The relation layer over ``scores`` (val and test logits of the switched cascade),
    fitted on the training split's scores ``train`` = (logits, labels) at each of
    :data:`RELATION_DECAYS`, the decay chosen by val mean balanced accuracy; the report of the
    chosen one on test (thresholds searched on val), with ``decay`` and every decay's val
    score (``val_by_decay``)."""
    best: tuple[float, float, Any] | None = None
    on_val = {}
    for decay in RELATION_DECAYS:
        w, b = fit_relations(*train, decay)
        val, test = scores[0] @ w.T + b, scores[2] @ w.T + b
        report = metrics.evaluate(val, scores[1], test, scores[3], names)
        v = float(np.mean([a["val_balanced"] or 0.0 for a in report["attributes"]]))
        on_val[str(decay)] = v
        if best is None or v > best[0]:
            best = (v, decay, report)
    assert best is not None
    return {**best[2], "decay": best[1], "val_by_decay": on_val}
