"""Evaluate a checkpoint on a CelebA-format folder: thresholds from val, scores on a split."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from facedistill import metrics
from facedistill.config import EvalConfig
from facedistill.errors import UserError
from facedistill.nn.checkpoint import load_checkpoint, model_from_checkpoint
from facedistill.pipeline.infer import Progress, collect


def _stage(progress: Progress | None, offset: int, total: int) -> Progress | None:
    """Report a stage's progress as part of one bar over all stages."""
    if progress is None:
        return None
    return lambda done, _n: progress(offset + done, total)


def checkpoint_data(ckpt: dict[str, Any], data: str | os.PathLike[str] | None = None,
                    variant: str = "run") -> tuple[Any, Any, Path]:
    """The dataset index, the checkpoint's eval transform and the data folder for a loaded
    checkpoint: ``data`` or, when None, the folder the checkpoint was trained on; ``variant``
    ``run`` reads the images the run trained on, ``aligned`` or ``wild`` those (a model trained
    on aligned crops scored on face-box crops of wild photos: the cost of misalignment). The
    dataset must have the checkpoint's attributes, in order."""
    from facedistill.data.celeba import CelebAIndex
    from facedistill.pipeline.data.transforms import Transform
    from facedistill.runtime.preprocess import Preprocess

    if data is None:
        data = (ckpt.get("data") or {}).get("root")
        if not data:
            raise UserError("the checkpoint does not say where its data is; pass --data",
                            path=ckpt["path"])
        if not Path(data).exists():
            raise UserError(f"the run's data folder {data} is gone; pass --data",
                            path=ckpt["path"])
    if variant == "run":
        variant = (ckpt.get("data") or {}).get("variant") or "aligned"
    if ckpt.get("preprocess") is None:
        raise UserError("the checkpoint has no preprocessing record", path=ckpt["path"])
    transform = Transform(Preprocess.from_record(ckpt["preprocess"]))
    index = CelebAIndex.load(data, variant=variant)
    if list(index.attribute_names) != list(ckpt["attributes"]):
        raise UserError("the dataset's attributes differ from the checkpoint's", path=data)
    return index, transform, Path(data)


def _scores(
    ckpt: dict[str, Any],
    data: str | os.PathLike[str] | None,
    split: str,
    thresholds: str,
    kw: dict[str, Any],
    progress: Progress | None,
    variant: str = "run",
) -> tuple[Any, Any, Any, Any, Any, Path]:
    """One checkpoint's logits on the threshold split (val, or ``split`` itself with the stored
    thresholds) and on ``split``, through its own eval preprocessing:
    ``(val_scores, val_labels, logits, labels, given_thresholds, data_root)``."""
    from facedistill.pipeline.data.dataset import CelebA

    index, transform, root = checkpoint_data(ckpt, data, variant)
    variant = index.variant
    model = model_from_checkpoint(ckpt)
    model.to(kw["device"])
    evaluated = CelebA(index, split, variant=variant, transform=transform)
    if len(evaluated) == 0:
        raise UserError(f"the {split} split is empty", path=index.files.get("partition"))
    val = None
    if thresholds == "val":
        val = CelebA(index, "val", variant=variant, transform=transform)
        if len(val) == 0:
            raise UserError("the val split is empty; use --thresholds checkpoint",
                            path=index.files.get("partition"))
    elif thresholds != "checkpoint":
        raise UserError(f"thresholds must be 'val' or 'checkpoint', not {thresholds!r}")
    total = len(evaluated) + (len(val) if val is not None else 0)
    offset = 0
    if val is not None:
        v = collect(model, val, progress=_stage(progress, 0, total), **kw)
        val_scores, val_labels, given = v.logits, v.labels, None
        offset = len(val)
    t = collect(model, evaluated, progress=_stage(progress, offset, total), **kw)
    if val is None:
        val_scores, val_labels, given = t.logits, t.labels, ckpt["thresholds"]
    return val_scores, val_labels, t.logits, t.labels, given, root


def checkpoint_scores(run: str | os.PathLike[str], data: str | os.PathLike[str] | None = None,
                      split: str = "test", cfg: EvalConfig | None = None
                      ) -> tuple[Any, Any, Any, Any]:
    """One run's logits and labels on val and on ``split`` (its own eval preprocessing, the
    images it trained on): ``(val_logits, val_labels, logits, labels)``, for combining models
    (the cascade's region switch) before thresholds are searched."""
    from facedistill.pipeline.train import resolve_device

    cfg = cfg or EvalConfig()
    kw = {"batch_size": cfg.batch_size, "workers": cfg.workers,
          "device": resolve_device(cfg.device)}
    val, val_y, logits, labels, _, _ = _scores(load_checkpoint(run), data, split, "val", kw,
                                               None)
    return val, val_y, logits, labels


def on_probability(report: dict[str, Any]) -> dict[str, Any]:
    """A :func:`facedistill.metrics.evaluate` report of logits with its thresholds (each
    attribute's ``threshold`` and ``plain_threshold``) put on the probability, the unit
    ``predict`` and the exported models show; ``threshold_unit`` says so. In place."""
    from facedistill.runtime.metadata import probability_thresholds

    for a in report["attributes"]:
        if a["threshold"] is not None:
            a["threshold"] = probability_thresholds([a["threshold"]])[0]
    report["plain_threshold"] = probability_thresholds([report["plain_threshold"]])[0]
    report["threshold_unit"] = "probability"
    return report


def evaluate_checkpoint(
    run: str | os.PathLike[str],
    cfg: EvalConfig | None = None,
    *,
    data: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """The metrics report of :func:`facedistill.metrics.evaluate` for one checkpoint, scored
    as ``cfg`` (the ``eval`` command's options; ``fields`` override them: ``split="val"``) says.

    ``thresholds="val"`` searches each attribute's threshold on the validation split (Eq 8-9)
    and applies it to ``split``; ``"checkpoint"`` uses the thresholds stored at training time.
    The report's thresholds are on the probability (:func:`on_probability`; the checkpoint
    keeps them on the logits).
    The images go through the checkpoint's own eval preprocessing (size, margin,
    normalisation), so the numbers are those the exported model will reproduce.
    """
    from facedistill.pipeline.train import resolve_device

    cfg = replace(cfg or EvalConfig(), **fields)
    split = cfg.split
    ckpt = load_checkpoint(run)
    kw = {"batch_size": cfg.batch_size, "workers": cfg.workers,
          "device": resolve_device(cfg.device)}
    val_scores, val_labels, logits, labels, given, root = _scores(
        ckpt, data, split, cfg.thresholds, kw, progress, cfg.variant)
    report = on_probability(metrics.evaluate(val_scores, val_labels, logits, labels,
                                             list(ckpt["attributes"]), thresholds=given))
    report["thresholds_from"] = "val" if given is None else "checkpoint"
    return {
        "checkpoint": ckpt["path"],
        "arch": ckpt["arch"],
        "epoch": ckpt.get("epoch"),
        "data": str(Path(root).resolve()),
        "split": split,
        "variant": cfg.variant,
        **report,
    }


def evaluate_ensemble(
    runs: list[str | os.PathLike[str]],
    cfg: EvalConfig | None = None,
    *,
    data: str | os.PathLike[str] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """An ensemble scored as one model: the mean of its members' logits (each member through
    its own preprocessing), thresholds searched on val for that mean (``cfg.thresholds`` must
    be ``val``). ``member_reports`` holds each member's own report from the same inference
    pass."""
    import numpy as np

    from facedistill.pipeline.train import resolve_device

    cfg = replace(cfg or EvalConfig(), **fields)
    split = cfg.split
    if not runs:
        raise UserError("an ensemble needs at least one member")
    if cfg.thresholds != "val":
        raise UserError("an ensemble's thresholds are searched on val for its mean",
                        field="thresholds")
    kw = {"batch_size": cfg.batch_size, "workers": cfg.workers,
          "device": resolve_device(cfg.device)}
    ckpts = [load_checkpoint(r) for r in runs]
    parts = [_scores(c, data, split, "val", kw, None) for c in ckpts]
    for p in parts[1:]:
        if not (np.array_equal(p[1], parts[0][1]) and np.array_equal(p[3], parts[0][3])):
            raise UserError("the ensemble's members see different images or labels; "
                            "they must share one dataset", path=str(runs[0]))
    val_scores = np.mean([p[0] for p in parts], axis=0)
    logits = np.mean([p[2] for p in parts], axis=0)
    names = list(ckpts[0]["attributes"])
    report = on_probability(metrics.evaluate(val_scores, parts[0][1], logits, parts[0][3], names))
    members = [on_probability(metrics.evaluate(p[0], p[1], p[2], p[3], list(c["attributes"])))
               for c, p in zip(ckpts, parts, strict=True)]
    return {"members": [str(c["path"]) for c in ckpts], "split": split,
            "combine": "mean logits", "member_reports": members, **report}
