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
    chosen one on test (thresholds searched on val), with ``decay``, every decay's val
    score (``val_by_decay``) and the fitted layer (``weight``, ``bias``: numpy arrays)."""
    best: tuple[float, float, Any] | None = None
    on_val = {}
    for decay in RELATION_DECAYS:
        w, b = fit_relations(*train, decay)
        fitted = {"weight": w, "bias": b}
        val, test = scores[0] @ w.T + b, scores[2] @ w.T + b
        report = metrics.evaluate(val, scores[1], test, scores[3], names)
        v = float(np.mean([a["val_balanced"] or 0.0 for a in report["attributes"]]))
        on_val[str(decay)] = v
        if best is None or v > best[0]:
            best = (v, decay, {**report, **fitted})
    assert best is not None
    return {**best[2], "decay": best[1], "val_by_decay": on_val}


def fit_soft_switch(part: tuple[np.ndarray, np.ndarray], whole: np.ndarray, steps: int = 100
                    ) -> np.ndarray:
    """The learned soft switch (the spec's ablation of the hard one): per attribute a weight
    ``sigmoid(a_k)`` of the part's logit against the whole's, ``a`` from 0 (an even mix),
    fitted by L-BFGS on the BCE of the mixed logits over frozen scores ``part`` = (part
    logits, labels) and ``whole`` (whole logits, the same images). Returns the weights."""
    import torch

    zp = torch.as_tensor(part[0], dtype=torch.float32)
    y = torch.as_tensor(part[1], dtype=torch.float32)
    zw = torch.as_tensor(whole, dtype=torch.float32)
    a = torch.zeros(zp.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([a], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        m = torch.sigmoid(a)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(m * zp + (1 - m) * zw, y)
        loss.backward()
        return loss

    opt.step(closure)
    return torch.sigmoid(a).detach().numpy()


#: the splits the cascade's head is fitted and scored on
SPLITS = ("train", "val", "test")


def _split_scores(run: Any, data: Any, cfg: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from facedistill.pipeline.evaluate import checkpoint_scores

    val, val_y, test, test_y = checkpoint_scores(run, data, "test", cfg)
    train = checkpoint_scores(run, data, "train", cfg)[2:]
    return {"train": train, "val": (val, val_y), "test": (test, test_y)}


def _check_pair(whole: dict[str, Any], parts: dict[str, Any]) -> None:
    from facedistill.config import ARCHS
    from facedistill.errors import UserError

    if parts["arch"].get("arch") != "parts":
        raise UserError(f"--parts must be a part-subnets run (train --arch parts), not a "
                        f"{parts['arch'].get('arch')} one", path=parts["path"])
    if whole["arch"].get("arch") not in ARCHS:
        raise UserError(f"--whole must be a whole-image classifier run ({', '.join(ARCHS)}), "
                        f"not a {whole['arch'].get('arch')} one", path=whole["path"])
    if list(whole["attributes"]) != list(parts["attributes"]):
        raise UserError("the whole and part runs score different attributes",
                        path=parts["path"])
    if whole["preprocess"] != parts["preprocess"]:
        diff = sorted(k for k in {*whole["preprocess"], *parts["preprocess"]}
                      if whole["preprocess"].get(k) != parts["preprocess"].get(k))
        raise UserError(f"the whole and part runs saw different inputs ({', '.join(diff)} "
                        "differ): train both on the same crops", path=parts["path"])


def assemble(whole_run: Any, parts_run: Any, out: Any, *, data: Any = None,
             switch: str = "hard", relations: bool = True, cfg: Any = None) -> dict[str, Any]:
    """Build the cascade (:class:`~facedistill.nn.parts.AttributeCascade`) from a trained
    whole-image run and a part-subnets run on the same crops, and write it to ``out/best.pt``
    as a checkpoint that evaluates, exports and runs like any model.

    On the frozen subnets' logits: the switch (``hard``: per attribute the subnet with the
    better val balanced accuracy, :func:`region_switch`; ``soft``: :func:`fit_soft_switch` on
    the training split), then, with ``relations``, the relation layer fitted on the training
    split's switched scores, its decay chosen on val (:func:`relation_layer`); the decision
    thresholds are searched on val. ``out/cascade.json`` holds the record: per attribute the
    switch's choice and either subnet's val score, the relation decay, and the test report
    of the whole, the parts, the switched and the final scores (thresholds from val).
    Returns that record."""
    from pathlib import Path

    import torch

    from facedistill.io import atomic_write_json
    from facedistill.nn.checkpoint import BEST, load_checkpoint, save_checkpoint
    from facedistill.nn.models import build_model, count_params
    from facedistill.nn.parts import SWITCHES

    if switch not in SWITCHES:
        from facedistill.errors import ConfigError

        raise ConfigError(f"switch must be one of {', '.join(SWITCHES)}, not {switch!r}",
                          field="switch")
    w_ck, p_ck = load_checkpoint(whole_run), load_checkpoint(parts_run)
    _check_pair(w_ck, p_ck)
    names = list(w_ck["attributes"])
    data = data if data is not None else (w_ck.get("data") or {}).get("root")
    ws, ps = _split_scores(w_ck["path"], data, cfg), _split_scores(p_ck["path"], data, cfg)
    if not all(np.array_equal(ws[s][1], ps[s][1]) for s in SPLITS):
        raise ValueError("the whole and part runs scored different images")
    y = {s: ws[s][1] for s in SPLITS}

    def report(z: dict[str, np.ndarray]) -> dict[str, Any]:
        return metrics.evaluate(z["val"], y["val"], z["test"], y["test"], names)

    hard = region_switch((ps["val"][0], y["val"], ps["test"][0], y["test"]),
                         (ws["val"][0], y["val"], ws["test"][0], y["test"]), names)
    m = (hard.use_part.astype(np.float32) if switch == "hard"
         else fit_soft_switch(ps["train"], ws["train"][0]))
    mixed = {s: m * ps[s][0] + (1 - m) * ws[s][0] for s in SPLITS}
    eye = np.eye(len(names), dtype=np.float32)
    weight, bias, decay, on_val = eye, np.zeros(len(names), np.float32), None, None
    if relations:
        related = relation_layer((mixed["train"], y["train"]),
                                 (mixed["val"], y["val"], mixed["test"], y["test"]), names)
        decay, on_val = related["decay"], related["val_by_decay"]
        weight, bias = related["weight"], related["bias"]
    final = {s: mixed[s] @ weight.T + bias for s in SPLITS}

    model = build_model("cascade", whole=w_ck["arch"], parts=p_ck["arch"], switch=switch)
    model.whole.load_state_dict(w_ck["model"])
    model.parts.load_state_dict(p_ck["model"])
    model.set_head(torch.from_numpy(m), torch.from_numpy(weight), torch.from_numpy(bias))
    search = metrics.search_thresholds(final["val"], y["val"], fallback=0.0)
    reports = {"whole": report({s: ws[s][0] for s in SPLITS}),
               "parts": report({s: ps[s][0] for s in SPLITS}),
               "switch": report(mixed), "cascade": report(final)}
    record = {
        "whole": str(w_ck["path"]), "parts": str(p_ck["path"]), "switch": switch,
        "relations": relations, "relation_decay": decay, "relation_val_by_decay": on_val,
        "parts_chosen": int((m > 0.5).sum()),
        "use_part": {n: float(v) for n, v in zip(names, m, strict=True)},
        "switch_val": hard.to_record(names)["attributes"],
        "params": {"whole": count_params(model.whole), "parts": count_params(model.parts),
                   "cascade": count_params(model)},
        "mean_balanced": {k: r["mean_balanced"] for k, r in reports.items()},
        "report": reports["cascade"],
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_checkpoint(out / BEST, {
        "kind": "best", "arch": model.config(), "model": state, "attributes": names,
        "preprocess": w_ck["preprocess"], "transform": w_ck.get("transform"),
        "thresholds": [float(v) for v in search.thresholds], "threshold_split": "val",
        "val_balanced": [float(v) if np.isfinite(v) else None for v in search.balanced],
        "seed": w_ck.get("seed"),
        "config": {"cascade": {k: record[k] for k in ("whole", "parts", "switch",
                                                      "relations", "relation_decay")}},
        "metrics": {"val_mean_balanced": float(np.mean(search.balanced))},
        "data": w_ck.get("data"), "extra": {"cascade": record},
    })
    atomic_write_json(out / "cascade.json", record)
    return record
