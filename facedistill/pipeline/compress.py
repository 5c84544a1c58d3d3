"""``facedistill compress``: teacher(s) -> (selection) -> student, then student vs teacher.

One call: check that the teachers and the data speak the same 40 attributes, run or read the
neuron selection when the method needs it (cached under ``OUT/selection``), train the student
with the one Trainer and a distillation objective (:mod:`facedistill.pipeline.distill`),
evaluate student and teacher on the same split with thresholds from val, and write a
comparison (``compare.json`` and ``compare.md``: params, MACs, compression, mean balanced
accuracy, delta to the teacher). The student checkpoint records the method, the teachers'
sha256 and the selected indices under ``extra["distill"]``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facedistill.config import ARCHS, DistillConfig, SelectConfig, TrainConfig
from facedistill.errors import UserError

if TYPE_CHECKING:
    from facedistill.selection.file import SelectionRecord



def _input_size(ckpt: dict[str, Any]) -> int:
    """The square input size of a checkpoint's preprocessing (stored as [H, W])."""
    size = ckpt["preprocess"]["size"]
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def _teacher_record(ckpt: dict[str, Any], sha256: str) -> dict[str, Any]:
    return {"path": str(ckpt["path"]), "sha256": sha256,
            "arch": ckpt["arch"]["arch"], "width": ckpt["arch"]["width"],
            "size": _input_size(ckpt)}


#: the nets a student can learn from: the classifiers, and part subnets (for part students on
#: the same regions: the compressed cascade)
TEACHERS = (*ARCHS, "parts")


def _feature_dim(cfg: TrainConfig) -> int:
    """The width of the features a student of ``cfg`` gives the objective. The model is
    built on the meta device with the random state set aside: no weights are allocated and
    the seeded draws that follow (the objective's regressor) are those they were without it."""
    import torch

    from facedistill.nn.models import build_model

    options = {"fixed": True} if cfg.arch == "parts" else {}  # no FRL needed to know it
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        return int(build_model(cfg.arch, width=cfg.width, **options).feature_dim)


def load_teachers(teachers: Sequence[str | os.PathLike[str]], attributes: Sequence[str]
                  ) -> list[dict[str, Any]]:
    """Teacher checkpoints, each checked to predict ``attributes`` in the same order."""
    from facedistill.nn.checkpoint import load_checkpoint

    if not teachers:
        raise UserError("give at least one --teacher")
    ckpts = [load_checkpoint(t) for t in teachers]
    for ckpt in ckpts:
        if ckpt["arch"]["arch"] not in TEACHERS:
            raise UserError(f"a {ckpt['arch']['arch']} net does not teach (it localizes, or "
                            f"is several nets): distil from a classification teacher "
                            f"({', '.join(TEACHERS)})",
                            path=ckpt["path"])
        if list(ckpt["attributes"]) != list(attributes):
            theirs = list(ckpt["attributes"])
            diff = next((i for i, (a, b) in enumerate(zip(theirs, attributes, strict=False))
                         if a != b), min(len(theirs), len(attributes)))
            raise UserError(f"the teacher predicts another attribute set than the data "
                            f"({len(theirs)} vs {len(attributes)} attributes, first difference "
                            f"at position {diff})", path=ckpt["path"])
    return ckpts


def resolve_selection(
    ckpts: list[dict[str, Any]],
    select: SelectConfig,
    *,
    data: str | os.PathLike[str],
    selection: str | os.PathLike[str] | None,
    out: Path,
    progress: Callable[[int, int], None] | None = None,
    staged: bool = True,
) -> SelectionRecord:
    """The selection record: read from ``selection`` (and checked against the teachers) or
    computed now as ``select`` says into ``out/selection`` (responses cached there) - ``staged``:
    into the run's staging folder, which :func:`compress` publishes as ``out/selection`` once
    the run is done."""
    from facedistill.io import sha256_file
    from facedistill.pipeline.selection import run_selection
    from facedistill.selection.file import read_selection

    if selection is not None:
        rec = read_selection(selection)
        want = [sha256_file(c["path"]) for c in ckpts]
        have = [t.get("sha256") for t in rec.teachers]
        if have != want:
            raise UserError("this selection was made for other teacher checkpoints (sha256 "
                            "differ); run select again or drop --selection",
                            path=rec.path)
        return rec
    from facedistill.nn.models import FEATURE_DIM

    width = FEATURE_DIM * len(ckpts)
    if select.k > width:
        raise UserError(f"--k {select.k} is more than the {width} neurons of the teacher(s)",
                        field="k")
    target = _selection_staging(out) if staged else out / SELECTION
    return run_selection([c["path"] for c in ckpts], select, data=data, out=target,
                         progress=progress)


SELECTION = "selection"  # a compress run's own selection: OUT/selection/selection.json
_STAGING = ".selection.staging"  # where it is made until the run it belongs to is done


def _selection_staging(out: Path) -> Path:
    """The folder a compress run makes its own selection in: beside ``out/selection``, which
    belongs to the run already there and is replaced only with it (an interrupted run's
    staging is reused by the next). The responses cache of ``out/selection`` is linked in, so
    a new selection over the same teachers does not run them again."""
    staging = out / _STAGING
    old_cache, cache = out / SELECTION / "cache", staging / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    if old_cache.is_dir():
        for f in old_cache.iterdir():
            if f.is_file() and not (cache / f.name).exists():
                try:
                    os.link(f, cache / f.name)
                except OSError:  # no hard links here: the cache is filled anew
                    break
    return staging


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _publish_selection(out: Path) -> None:
    """The finished run's selection replaces the old run's ``out/selection``."""
    staging = out / _STAGING
    if not staging.is_dir():
        return
    final = out / SELECTION
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)


def prepare_selection(
    teachers: Sequence[str | os.PathLike[str]],
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    select: SelectConfig,
    *,
    variant: str = "aligned",
    progress: Callable[[int, int], None] | None = None,
    staged: bool = False,
    resume: bool = False,
    force: bool = False,
) -> str:
    """Run (or reuse) the selection a ``selected`` compress will use (``select``, e.g. from a
    config's ``[select]`` table), into ``out/selection``; its path.
    ``staged``: for the compress run ``out`` itself - refused, before anything is written,
    where :func:`compress` would refuse ``out`` (a run there, no ``force``), and made in the
    run's staging folder, published by :func:`compress` when the run is done."""
    from facedistill.data.celeba import CelebAIndex
    from facedistill.pipeline.train import prepare_run

    if staged:
        prepare_run(Path(out), resume=resume, force=force)

    index = CelebAIndex.load(data, variant=variant)
    ckpts = load_teachers(teachers, list(index.attribute_names))
    rec = resolve_selection(ckpts, select, data=data, selection=None, out=Path(out),
                            progress=progress, staged=staged)
    return str(rec.path)


def compress(
    cfg: TrainConfig,
    teachers: Sequence[str | os.PathLike[str]],
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    distill: DistillConfig | None = None,
    *,
    selection: str | os.PathLike[str] | None = None,
    resume: bool = False,
    force: bool = False,
    reporter: Any = None,
    progress: Callable[[int, int], None] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Distil ``teachers`` into ``cfg.arch`` as ``distill`` says; returns the comparison
    record. ``fields`` override those of ``distill`` (``method="hint"``).

    ``distill.weight`` overrides the method's default term weights term by term (e.g.
    ``selected=0.3``); the weights used are recorded in the checkpoint. ``distill.unlabeled``:
    a folder of face crops without labels (the first ``unlabeled_n``) that the teacher terms
    also train on, next to the labelled split.
    """
    from facedistill.data.celeba import CelebAIndex
    from facedistill.io import atomic_write_json, atomic_write_text, sha256_file
    from facedistill.nn.checkpoint import model_from_checkpoint
    from facedistill.pipeline.distill import build_objective
    from facedistill.pipeline.evaluate import evaluate_checkpoint
    from facedistill.pipeline.train import positive_weights, prepare_run, train

    distill = replace(distill or DistillConfig(), **fields)
    method, k, split = distill.method, distill.k, distill.split
    unlabeled, unlabeled_n = distill.unlabeled, distill.unlabeled_n
    out = Path(out)
    prepare_run(out, resume=resume, force=force)  # refuse before any file is written
    index = CelebAIndex.load(data, variant=cfg.variant)
    ckpts = load_teachers(teachers, list(index.attribute_names))
    sel = None
    if method == "selected":
        select = SelectConfig(k=k, workers=cfg.workers, device=cfg.device)
        sel = resolve_selection(ckpts, select, data=data, selection=selection, out=out,
                                progress=progress)
    models = [model_from_checkpoint(c) for c in ckpts]
    sizes = [_input_size(c) for c in ckpts]
    pos_weight = None
    if cfg.pos_weight != "none":
        pos_weight = positive_weights(index.attrs[index.select("train")], cfg.pos_weight)
    shas = [sha256_file(c["path"]) for c in ckpts]
    objective = build_objective(method, models, selected=list(sel.indices) if sel else None,
                                temperature=distill.temperature, pos_weight=pos_weight,
                                teacher_sizes=sizes, two_stage=distill.two_stage,
                                weights=distill.weights,
                                teacher_keys=shas, student_dim=_feature_dim(cfg))
    if unlabeled is not None and not any(objective.weights.get(t, 0) > 0
                                         for t in ("soft", "hint", "selected")):
        raise UserError("--unlabeled needs a teacher term to learn from the unlabeled images; "
                        f"method {method!r} only uses labels", field="unlabeled")
    pool = None
    if unlabeled is not None:
        from facedistill.pipeline.data.unlabeled import list_images

        found = len(list_images(unlabeled))
        pool = {"root": str(unlabeled),
                "images": found if unlabeled_n is None else min(found, unlabeled_n)}
    record = {
        "method": method,
        "weights": dict(objective.weights),
        "unlabeled": pool,
        "teachers": [_teacher_record(c, sha) for c, sha in zip(ckpts, shas, strict=True)],
        "temperature": distill.temperature,
        "two_stage": distill.two_stage,
        "selection": None if sel is None else {
            "path": _final_selection_path(out, sel.path), "k": sel.k,
            "indices": list(sel.indices), "solver": sel.solver},
    }
    before = (objective.cache.hits, objective.cache.misses) if objective.cache else (0, 0)
    old_last = _stamp(out / "last.pt")
    try:
        train(cfg, data, out, resume=resume, force=force, reporter=reporter, objective=objective,
              extra={"distill": record}, index=index, unlabeled=unlabeled,
              unlabeled_n=unlabeled_n)
    except BaseException:
        if _stamp(out / "last.pt") not in (None, old_last):
            _publish_selection(out)  # the run on disk is the new one: its selection goes with it
        else:  # the old run (or none) is what stays: so does its selection
            shutil.rmtree(out / _STAGING, ignore_errors=True)
        raise
    _publish_selection(out)
    cache = {"hits": 0, "misses": 0}
    if objective.cache is not None:  # batches whose teacher outputs an earlier student computed
        cache = {"hits": objective.cache.hits - before[0],
                 "misses": objective.cache.misses - before[1]}
    del models, objective
    student_eval = evaluate_checkpoint(out, data=data, split=split, workers=cfg.workers,
                                       device=cfg.device)
    rows = [_row("student", out / "best.pt", student_eval)]
    if len(ckpts) == 1:
        t_eval = _teacher_eval(ckpts[0]["path"], shas[0], data, index, split, cfg)
        rows.append(_row("teacher", ckpts[0]["path"], t_eval))
        reference = rows[1]
    else:  # one inference pass per teacher scores each of them and their mean
        from facedistill.pipeline.evaluate import evaluate_ensemble

        ens = evaluate_ensemble([c["path"] for c in ckpts], data=data, split=split,
                                workers=cfg.workers, device=cfg.device)
        for i, (c, t_eval) in enumerate(zip(ckpts, ens["member_reports"], strict=True)):
            rows.append(_row(f"teacher {i}", c["path"], t_eval))
        reference = _ensemble_row(ens, rows[1:])
        rows.append(reference)
    for r in rows:
        r["compression"] = reference["params"] / r["params"]
        r["live_compression"] = reference["live_params"] / r["live_params"]
        r["delta"] = r["mean_balanced"] - reference["mean_balanced"]
    result = {"student": str(out / "best.pt"), "split": split, "method": method,
              "reference": reference["role"], "rows": rows, "distill": record,
              "teacher_cache": cache}
    if len(ckpts) > 1:
        best = max(rows[1:-1], key=lambda r: r["mean_balanced"])
        result["best_teacher"] = {"role": best["role"],
                                  "delta": rows[0]["mean_balanced"] - best["mean_balanced"],
                                  "compression": best["params"] / rows[0]["params"]}
    atomic_write_json(out / "compare.json", result)
    atomic_write_text(out / "compare.md", compare_markdown(result))
    return result


def _final_selection_path(out: Path, path: Path | None) -> str | None:
    """Where a selection made in the run's staging folder will lie once published."""
    if path is not None and path.parent == out / _STAGING:
        return str(out / SELECTION / path.name)
    return None if path is None else str(path)


_TEACHER_EVALS: dict[tuple[Any, ...], dict[str, Any]] = {}


def _teacher_eval(path: Any, sha: str, data: Any, index: Any, split: str, cfg: TrainConfig
                  ) -> dict[str, Any]:
    """The teacher's evaluation, memoised in this process by checkpoint sha256, data folder,
    split, device and the sha256 of every annotation file read: students distilled one after another
    from one teacher (the pipeline, ``benchmarks/distill_gain.py``) score it once."""
    import copy

    from facedistill.io import sha256_file
    from facedistill.pipeline.evaluate import evaluate_checkpoint

    key = (sha, str(Path(data).resolve()), split, index.variant, cfg.device,
           tuple(sorted((role, sha256_file(f)) for role, f in index.files.items())))
    if key not in _TEACHER_EVALS:
        if len(_TEACHER_EVALS) >= 16:
            _TEACHER_EVALS.pop(next(iter(_TEACHER_EVALS)))
        _TEACHER_EVALS[key] = evaluate_checkpoint(path, data=data, split=split,
                                                  workers=cfg.workers, device=cfg.device)
    return copy.deepcopy(_TEACHER_EVALS[key])


def _ensemble_row(report: dict[str, Any], members: list[dict[str, Any]]) -> dict[str, Any]:
    """The teachers as one model: mean-logit accuracy, summed params and MACs (running it
    means running every member)."""
    return {"role": f"ensemble ({len(members)})", "path": None, "arch": "ensemble",
            "width": 1.0, "params": sum(m["params"] for m in members),
            "live_params": sum(m["live_params"] for m in members),
            "input_size": max(m["input_size"] for m in members),
            "macs": sum(m["macs"] for m in members), "mean_balanced": report["mean_balanced"],
            "per_attribute": {a["name"]: a["balanced"] for a in report["attributes"]}}


def _row(role: str, path: Any, report: dict[str, Any]) -> dict[str, Any]:
    from facedistill.nn.checkpoint import load_checkpoint
    from facedistill.nn.models import (
        build_model,
        count_live_params,
        count_macs,
        count_params,
    )

    ckpt = load_checkpoint(path)
    model = build_model(**ckpt["arch"])
    size = _input_size(ckpt)
    return {"role": role, "path": str(ckpt["path"]), "arch": ckpt["arch"]["arch"],
            "width": ckpt["arch"]["width"], "params": count_params(model),
            "live_params": count_live_params(model, size), "input_size": size,
            "macs": count_macs(model, size),
            "mean_balanced": report["mean_balanced"],
            "per_attribute": {a["name"]: a["balanced"] for a in report["attributes"]}}


def compare_markdown(result: dict[str, Any]) -> str:
    lines = [f"{result['method']} distillation, {result['split']} split (thresholds from val)",
             "", "| model | arch | input | params | live params | MACs | compression "
             "| live compression | mean bal. acc. | delta |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['role']} | {r['arch']} x{r['width']:g} | {r['input_size']}px "
                     f"| {r['params']:,} | {r['live_params']:,} | "
                     f"{r['macs'] / 1e6:.1f}M | {r['compression']:.1f}x | "
                     f"{r['live_compression']:.1f}x | "
                     f"{100 * r['mean_balanced']:.2f}% | {100 * r['delta']:+.2f} |")
    lines += ["", f"Compression and delta are against the {result.get('reference', 'teacher')}"
              "; live params: those that can get a gradient at the trained input size (a 3x3 "
              "kernel on a 1x1 map counts as 1x1)."]
    best = result.get("best_teacher")
    if best:
        lines.append(f"Against the best single teacher ({best['role']}): "
                     f"{100 * best['delta']:+.2f} points at {best['compression']:.1f}x fewer "
                     "parameters.")
    return "\n".join(lines) + "\n"
