"""``facedistill select``: the teachers' top-layer responses (torch) -> X -> the mean-field
selection of :mod:`facedistill.selection` -> ``selection.json``, ``X.npy`` and a plot."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from facedistill import __version__
from facedistill.config import SelectConfig
from facedistill.errors import UserError
from facedistill.io import atomic_path, sha256_file
from facedistill.nn.checkpoint import load_checkpoint, model_from_checkpoint
from facedistill.pipeline.data.dataset import CelebA
from facedistill.pipeline.evaluate import checkpoint_data
from facedistill.pipeline.infer import collect
from facedistill.pipeline.train import data_record, resolve_device
from facedistill.selection.file import SelectionRecord, plot_selection
from facedistill.selection.solver import (
    attribute_accuracy,
    mean_field_select,
    redundancy_summary,
)

__all__ = ["Responses", "collect_responses", "default_output", "run_selection"]


@dataclass
class Responses:
    """The teachers' top-layer responses on one split, concatenated over teachers."""

    features: np.ndarray  # float32 [M, N]: N = sum of the teachers' widths
    labels: np.ndarray  # uint8 [M, A]
    attributes: list[str]
    teachers: list[dict[str, Any]]  # path, sha256, arch, width, neurons, offset, cached
    data: dict[str, Any]  # data_record + split + images

    def owner(self, index: int) -> tuple[int, int]:
        """(teacher, neuron) of a column of ``features``."""
        for t, info in enumerate(self.teachers):
            if info["offset"] <= index < info["offset"] + info["neurons"]:
                return t, index - info["offset"]
        raise IndexError(index)


def _cache_key(ckpt_sha: str, data: dict[str, Any], split: str, preprocess: Any) -> str:
    blob = json.dumps({"checkpoint": ckpt_sha, "data": data, "split": split,
                       "preprocess": preprocess}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def collect_responses(
    teachers: Sequence[str | os.PathLike[str]],
    data: str | os.PathLike[str] | None = None,
    split: str = "val",
    *,
    batch_size: int = 256,
    workers: int = 1,
    device: str = "auto",
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Responses:
    """The GAP features (the layer the students imitate) of each teacher over ``split``.

    Each teacher sees the images through its own eval preprocessing. With ``cache_dir``, one
    ``.npy`` per (teacher file, dataset, split, preprocessing) is kept there and reused.
    ``data`` defaults to the first teacher's training data; every teacher must have the
    dataset's attributes.
    """
    if not teachers:
        raise UserError("at least one teacher is needed")
    ckpts = [load_checkpoint(t) for t in teachers]
    index, _, root = checkpoint_data(ckpts[0], data)
    record = data_record(index)
    infos: list[dict[str, Any]] = []
    blocks: list[np.ndarray] = []
    labels: np.ndarray | None = None
    offset = 0
    dev = resolve_device(device)
    for ckpt in ckpts:
        _, transform, _ = checkpoint_data(ckpt, root)
        dataset = CelebA(index, split, variant=index.variant, transform=transform)
        if len(dataset) == 0:
            raise UserError(f"the {split} split is empty", path=index.files.get("partition"))
        sha = sha256_file(ckpt["path"])
        cached, hit = None, False
        if cache_dir is not None:
            key = _cache_key(sha, record, split, ckpt["preprocess"])
            cached = Path(cache_dir) / f"responses-{key}.npy"
            if cached.exists():
                try:
                    feats = np.load(cached, allow_pickle=False)
                    hit = feats.ndim == 2 and feats.shape[0] == len(dataset)
                except (OSError, ValueError):  # a damaged cache file is simply redone
                    hit = False
        if not hit:
            model = model_from_checkpoint(ckpt).to(dev)
            out = collect(model, dataset, batch_size=batch_size, workers=workers, device=dev,
                          logits=False, features=True, progress=progress)
            feats = out.features
            if cached is not None:
                with atomic_path(cached) as tmp, open(tmp, "wb") as fh:
                    np.save(fh, feats, allow_pickle=False)
        if labels is None:
            labels = np.asarray(dataset.labels, dtype=np.uint8)
        infos.append({"path": str(ckpt["path"]), "sha256": sha, "arch": ckpt["arch"]["arch"],
                      "width": ckpt["arch"]["width"], "neurons": int(feats.shape[1]),
                      "offset": offset, "cached": hit})
        offset += int(feats.shape[1])
        blocks.append(feats.astype(np.float32, copy=False))
    assert labels is not None
    return Responses(np.concatenate(blocks, axis=1), labels, list(index.attribute_names), infos,
                     {**record, "split": split, "images": int(labels.shape[0])})


# --------------------------------------------------------------------------- the command


def default_output(teachers: Sequence[str | os.PathLike[str]]) -> Path:
    """``<first teacher's run folder>/selection/selection.json``."""
    first = Path(teachers[0])
    run = first if first.is_dir() else first.parent
    return run / "selection" / "selection.json"


def run_selection(
    teachers: Sequence[str | os.PathLike[str]],
    cfg: SelectConfig | None = None,
    *,
    data: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    plot: bool = True,
    progress: Callable[[int, int], None] | None = None,
    **fields: Any,
) -> SelectionRecord:
    """``facedistill select``: responses (cached) -> X -> mean field -> ``selection.json``,
    ``X.npy`` and ``selection.png`` beside it. ``out`` is the JSON file (or a folder for it).
    Returns the record written. ``fields`` override those of ``cfg`` (``k=64``)."""
    cfg = replace(cfg or SelectConfig(), **fields)
    k, split, polarity, redundancy = cfg.k, cfg.split, cfg.polarity, cfg.redundancy
    target = Path(out) if out is not None else default_output(teachers)
    if target.suffix.lower() != ".json":
        target = target / "selection.json"
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}

    t0 = time.perf_counter()
    resp = collect_responses(teachers, data, split, batch_size=cfg.batch_size,
                             workers=cfg.workers, device=cfg.device, cache_dir=folder / "cache", progress=progress)
    times["collect"] = time.perf_counter() - t0
    n = resp.features.shape[1]
    if not 1 <= k <= n:
        raise UserError(f"--k {k} must be between 1 and the {n} neurons of the teacher(s)")
    t0 = time.perf_counter()
    x, thresholds = attribute_accuracy(resp.features, resp.labels, polarity)
    times["accuracy"] = time.perf_counter() - t0
    sel = mean_field_select(x, k, solver=cfg.solver, lam=cfg.lam, sigma=cfg.sigma,
                            responses=resp.features, redundancy=redundancy, bits=cfg.bits,
                            shared=cfg.shared, tables=cfg.tables)
    times["solve"] = sel.seconds

    selected = []
    for g in sel.indices.tolist():
        t, j = resp.owner(g)
        selected.append({"index": g, "teacher": t, "neuron": j,
                         "u": float(sel.u[g]), "q": float(sel.q[g])})
    record = SelectionRecord(
        version=__version__,
        k=k,
        candidates=n,
        solver=sel.solver,
        config={**sel.config, "polarity": polarity, "split": split},
        attributes=tuple(resp.attributes),
        teachers=tuple(resp.teachers),
        data=resp.data,
        indices=tuple(sel.indices.tolist()),
        selected=tuple(selected),
        thresholds=tuple(thresholds[sel.indices].tolist()),
        u=tuple(sel.u.tolist()),
        q=tuple(sel.q.tolist()),
        b=sel.b,
        energies=tuple(sel.energies),
        iterations=sel.iterations,
        converged=sel.converged,
        mean_x_selected=float(x[sel.indices].mean()),
        mean_x_all=float(x.mean()),
        redundancy=redundancy_summary(resp.features, sel.indices, sel.u),
        seconds=times,
        files={"X": "X.npy", "plot": "selection.png" if plot else None},
    )
    with atomic_path(folder / "X.npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, x.astype(np.float32), allow_pickle=False)
    if plot:
        plot_selection(x, sel, folder / "selection.png")
    return record.write(target)
