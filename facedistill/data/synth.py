"""The embedded synthetic face-attribute dataset, written in CelebA's official file format.

``generate(out, SynthConfig(n=20000, size=64, seed=0, wild=True))`` writes::

    out/img_align_celeba/000001.jpg ...     aligned crops, size x size
    out/img_celeba/000001.jpg ...           in-the-wild photos (with ``wild``)
    out/list_attr_celeba.txt                40 attributes, -1/1
    out/list_eval_partition.txt             0 train / 1 val / 2 test (CelebA's proportions)
    out/identity_CelebA.txt                 identity of every image (splits are identity-disjoint)
    out/list_landmarks_align_celeba.txt     5 landmarks in the aligned crops
    out/list_bbox_celeba.txt                face boxes in img_celeba (with ``wild``)
    out/list_landmarks_celeba.txt           5 landmarks in img_celeba (with ``wild``)
    out/synth.json                          the generator's config, version and a summary

so the one CelebA reader serves both. Every image is a pure function of (seed, index) and its
identity of (seed, identity), so the output is byte-identical whatever the number of worker
processes. The folder is built next to ``out`` and moved into place when complete.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from facedistill import __version__
from facedistill.attributes import (
    ATTRIBUTES,
    BBOX_NAMES,
    CELEBA_SPLIT_SIZES,
    LANDMARK_NAMES,
    SPLIT_NAMES,
)
from facedistill.config import SynthConfig
from facedistill.data.synth_model import Face, Identity, sample_face, sample_identity
from facedistill.data.synth_render import render_aligned, render_wild
from facedistill.errors import UserError
from facedistill.io import atomic_write_json, atomic_write_text, staging_dir, write_error

GENERATOR_VERSION = 4
MANIFEST = "synth.json"
_CHUNK = 48  # images per task: small enough for a smooth progress bar

Progress = Callable[[int, int], None]


def split_counts(n: int) -> tuple[int, int, int]:
    """CelebA's train/val/test proportions applied to ``n`` images (each split >= 1)."""
    total = sum(CELEBA_SPLIT_SIZES)
    val = max(1, round(n * CELEBA_SPLIT_SIZES[1] / total))
    test = max(1, round(n * CELEBA_SPLIT_SIZES[2] / total))
    return n - val - test, val, test


def image_names(n: int) -> list[str]:
    width = max(6, len(str(n)))
    return [f"{i + 1:0{width}d}.jpg" for i in range(n)]


def plan(cfg: SynthConfig) -> tuple[np.ndarray, np.ndarray]:
    """Partition (0/1/2, contiguous like CelebA's) and identity (1-based, disjoint across
    splits, Gamma-distributed photo counts) of every image."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0]))
    partition = np.concatenate([np.full(c, s, np.int8) for s, c in enumerate(split_counts(cfg.n))])
    identity = np.empty(cfg.n, np.int64)
    next_id, start = 1, 0
    for count in split_counts(cfg.n):
        k = max(1, math.ceil(count / cfg.images_per_identity))
        weights = rng.gamma(2.0, 1.0, size=k)
        ids = rng.choice(k, size=count, p=weights / weights.sum())
        identity[start : start + count] = next_id + ids
        next_id += k
        start += count
    return partition, identity


def _face(cfg: SynthConfig, index: int, ident_id: int, cache: dict[int, Identity]
          ) -> tuple[Face, np.random.Generator]:
    """Image ``index``'s face and the generator its rendering continues with."""
    if ident_id not in cache:
        cache[ident_id] = sample_identity(
            np.random.default_rng(np.random.SeedSequence([cfg.seed, 1, ident_id])))
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 2, index]))
    return sample_face(cache[ident_id], rng), rng


def sample_labels(cfg: SynthConfig) -> np.ndarray:
    """The [n, 40] {0,1} labels that :func:`generate` writes for ``cfg``, without rendering
    (fast: for prevalence studies)."""
    _, identity = plan(cfg)
    cache: dict[int, Identity] = {}
    return np.stack([_face(cfg, i, int(identity[i]), cache)[0].label_vector()
                     for i in range(cfg.n)])


def _render_chunk(task: tuple[SynthConfig, str, list[int], list[int], list[str]]) -> list[dict]:
    """Worker: render and write the images of one chunk; return their annotations."""
    cfg, folder, indices, identities, names = task
    root = Path(folder)
    cache: dict[int, Identity] = {}
    out = []
    for index, ident_id, name in zip(indices, identities, names, strict=True):
        face, rng = _face(cfg, index, ident_id, cache)
        draw_seed = int(rng.integers(2**62))
        img, marks = render_aligned(face, cfg.size, rng, draw_seed)
        quality = int(rng.integers(72, 96))
        img.save(root / "img_align_celeba" / name, "JPEG", quality=quality)
        row: dict[str, Any] = {"labels": face.label_vector(), "landmarks": marks.ravel()}
        if cfg.wild:
            wimg, bbox, wmarks = render_wild(face, cfg.size, rng, draw_seed)
            wimg.save(root / "img_celeba" / name, "JPEG", quality=int(rng.integers(60, 96)))
            row["bbox"], row["wild_landmarks"] = bbox, wmarks.ravel()
        out.append(row)
    return out


def _fmt_rows(names: list[str], rows: np.ndarray, fmt: str) -> list[str]:
    return [name + " " + " ".join(fmt.format(v) for v in row) for name, row in zip(names, rows,
                                                                                    strict=True)]


def write_label_files(folder: Path, cfg: SynthConfig, names: list[str], partition: np.ndarray,
                      identity: np.ndarray, rows: list[dict]) -> None:
    """The CelebA text files (official layout, LF line ends, values right-aligned)."""
    n = len(names)
    labels = np.stack([r["labels"] for r in rows]).astype(np.int64) * 2 - 1
    attr = [str(n), " ".join(ATTRIBUTES), *_fmt_rows(names, labels, "{:2d}")]
    atomic_write_text(folder / "list_attr_celeba.txt", "\n".join(attr) + "\n")
    atomic_write_text(folder / "list_eval_partition.txt",
                      "".join(f"{nm} {p}\n" for nm, p in zip(names, partition, strict=True)))
    atomic_write_text(folder / "identity_CelebA.txt",
                      "".join(f"{nm} {i}\n" for nm, i in zip(names, identity, strict=True)))
    marks = np.rint(np.stack([r["landmarks"] for r in rows])).astype(np.int64)
    text = [str(n), " ".join(LANDMARK_NAMES), *_fmt_rows(names, marks, "{:4d}")]
    atomic_write_text(folder / "list_landmarks_align_celeba.txt", "\n".join(text) + "\n")
    if cfg.wild:
        boxes = np.rint(np.stack([r["bbox"] for r in rows])).astype(np.int64)
        text = [str(n), " ".join(("image_id", *BBOX_NAMES)), *_fmt_rows(names, boxes, "{:4d}")]
        atomic_write_text(folder / "list_bbox_celeba.txt", "\n".join(text) + "\n")
        wmarks = np.rint(np.stack([r["wild_landmarks"] for r in rows])).astype(np.int64)
        text = [str(n), " ".join(LANDMARK_NAMES), *_fmt_rows(names, wmarks, "{:4d}")]
        atomic_write_text(folder / "list_landmarks_celeba.txt", "\n".join(text) + "\n")


def summarize(labels01: np.ndarray, partition: np.ndarray, identity: np.ndarray) -> dict:
    splits = {}
    for s, name in enumerate(SPLIT_NAMES):
        mask = partition == s
        splits[name] = {"images": int(mask.sum()), "identities": int(len(np.unique(identity[mask])))}
    prevalence = labels01.mean(axis=0) * 100.0
    return {
        "images": int(len(partition)),
        "identities": int(len(np.unique(identity))),
        "splits": splits,
        "prevalence": {a: round(float(p), 2) for a, p in zip(ATTRIBUTES, prevalence, strict=True)},
    }


def _manifest(cfg: SynthConfig, summary: dict) -> dict:
    return {
        "generator": "facedistill.synth",
        "generator_version": GENERATOR_VERSION,
        "package_version": __version__,
        "config": asdict(cfg),
        **summary,
    }


def read_manifest(out: str | os.PathLike[str]) -> dict | None:
    path = Path(out) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"unreadable manifest ({exc})", path=path) from None


def is_current(out: str | os.PathLike[str], cfg: SynthConfig,
               withhold_labels: bool = False) -> bool:
    """True when ``out`` already holds the dataset ``cfg`` describes (same generator version,
    labels written or withheld alike)."""
    man = read_manifest(out)
    return bool(man and man.get("generator_version") == GENERATOR_VERSION
                and man.get("config") == asdict(cfg)
                and bool(man.get("labels_withheld", False)) == withhold_labels)


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS
        return max(1, os.cpu_count() or 1)


def generate(
    out: str | os.PathLike[str],
    cfg: SynthConfig,
    *,
    workers: int | None = None,
    force: bool = False,
    progress: Progress | None = None,
    withhold_labels: bool = False,
) -> dict:
    """Write the dataset to ``out`` and return its manifest (plus ``seconds`` and
    ``reused``). An ``out`` that already holds this exact config is reused as is; any other
    existing ``out`` is only replaced with ``force`` - except the same config made by another
    generator version, which is regenerated (it is our own reproducible output).

    ``withhold_labels``: only the images (and the manifest, marked ``labels_withheld``) are
    written - an unlabeled pool for distillation; per-image labels exist nowhere on disk."""
    cfg.validate()
    out = Path(out)
    if out.exists():
        if is_current(out, cfg, withhold_labels):
            return {**(read_manifest(out) or {}), "seconds": 0.0, "reused": True}
        man = read_manifest(out)
        outdated = bool(man and man.get("config") == asdict(cfg)
                        and man.get("generator_version") != GENERATOR_VERSION)
        if not force and not outdated:  # the same request from an older generator is remade
            what = "a different synthetic dataset" if man else "other files"
            raise UserError(f"already exists and holds {what}; pass --force to replace it",
                            path=out)
        if not out.is_dir():
            raise UserError("exists and is not a directory", path=out)
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}", field="workers")

    start = time.perf_counter()
    tmp = staging_dir(out)
    try:
        (tmp / "img_align_celeba").mkdir()
        if cfg.wild:
            (tmp / "img_celeba").mkdir()
        names = image_names(cfg.n)
        partition, identity = plan(cfg)
        tasks = [
            (cfg, str(tmp), list(range(i, min(i + _CHUNK, cfg.n))),
             identity[i : i + _CHUNK].tolist(), names[i : i + _CHUNK])
            for i in range(0, cfg.n, _CHUNK)
        ]
        rows: list[dict] = []
        done = 0
        if progress:
            progress(0, cfg.n)
        if workers == 1 or len(tasks) == 1:
            results = map(_render_chunk, tasks)
            pool = None
        else:
            # spawn: workers need only numpy + PIL, and must not inherit a parent's torch threads
            pool = multiprocessing.get_context("spawn").Pool(min(workers, len(tasks)))
            results = pool.imap(_render_chunk, tasks)
        try:
            for chunk in results:
                rows.extend(chunk)
                done += len(chunk)
                if progress:
                    progress(done, cfg.n)
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
        summary = summarize(np.stack([r["labels"] for r in rows]), partition, identity)
        manifest = _manifest(cfg, summary)
        if withhold_labels:
            manifest = {**manifest, "labels_withheld": True}
        else:
            write_label_files(tmp, cfg, names, partition, identity, rows)
        atomic_write_json(tmp / MANIFEST, manifest)
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, trash / out.name)
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        mapped = write_error(exc, out)  # a full disk mid-way: one line naming the dataset
        if mapped is not exc:
            raise mapped from None
        raise
    return {**manifest, "seconds": time.perf_counter() - start, "reused": False}
