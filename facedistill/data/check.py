"""``facedistill data check``: validate a CelebA-format dataset and summarise it.

:func:`check_dataset` parses every annotation file (any problem is a
:class:`~facedistill.errors.DataError` naming file and line), optionally decodes every image,
and returns a JSON-serialisable report; :func:`format_check` turns that report into rich
tables for the terminal.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rich.table import Table

from facedistill.attributes import ATTRIBUTES, CELEBA_PREVALENCE, SPLIT_NAMES
from facedistill.data.celeba import (
    VARIANTS,
    CelebAIndex,
    check_variant,
    find_image_dir,
    load_image,
    resolve_root,
)
from facedistill.errors import DataError, DataErrors

__all__ = ["check_dataset", "format_check", "prevalence"]

ProgressFn = Callable[[int, int], None]


def prevalence(attrs: np.ndarray) -> dict[str, float | None]:
    """Percentage of positives per attribute (2 decimals); None for every one when empty."""
    if len(attrs) == 0:
        return {name: None for name in ATTRIBUTES}
    pct = attrs.astype(np.float64).mean(axis=0) * 100.0
    return {name: round(float(pct[j]), 2) for j, name in enumerate(ATTRIBUTES)}


def _verify_images(
    paths: list[Path], progress: ProgressFn | None, done: int, total: int, workers: int
) -> tuple[int, list[DataError]]:
    """Decode every image of ``paths``; returns the count done and every bad one's error (in
    list order) - a check names all the unreadable images, not just the first.

    PIL releases the GIL while decoding, so a thread pool spreads the work over the cores.
    """

    def decode(path: Path) -> DataError | None:
        try:
            load_image(path).close()
        except DataError as exc:
            return exc
        return None

    bad: list[DataError] = []
    batch = max(64, workers * 16)
    it: Iterator[Path] = iter(paths)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        while chunk := list(islice(it, batch)):
            for err in pool.map(decode, chunk):
                done += 1
                if err is not None:
                    bad.append(err)
                if progress is not None:
                    progress(done, total)
    return done, bad


def check_dataset(
    root: str | os.PathLike[str],
    *,
    variant: str | None = None,
    verify_images: bool = True,
    progress: ProgressFn | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Validate the dataset under ``root`` and return a JSON-serialisable report.

    ``variant`` None checks the aligned images, plus the in-the-wild ones when ``img_celeba/``
    exists (or only those when there is no aligned folder). With ``verify_images`` every image
    of every checked variant is opened and fully decoded (``workers`` threads, default up to
    8); unreadable ones are a :class:`DataErrors` naming every one of them. ``progress(done, total)`` is
    called after each decoded image.

    Report keys: ``root``, ``layout``, ``variants``, ``images``, ``splits`` (per split:
    ``images`` and ``identities``), ``identities``, ``identity_overlap`` (identities found in
    more than one split), ``attributes`` (prevalence in % over all images),
    ``attributes_by_split``, ``attr_values`` ("-1/1" or "0/1"), ``has_bbox``,
    ``has_landmarks``, ``image_size`` ([width, height] of the first image), ``files`` (per
    variant: role -> path of each table read) and ``verified_images`` (images decoded).
    """
    if variant is None:
        base = resolve_root(Path(root))
        variants = [v for v in VARIANTS if find_image_dir(base, v) is not None] or ["aligned"]
    else:
        variants = [check_variant(variant)]

    indexes = [CelebAIndex.load(root, variant=v) for v in variants]
    index = indexes[0]

    verified = 0
    if verify_images:
        total = sum(len(ix) for ix in indexes)
        n_workers = workers if workers is not None else min(8, os.cpu_count() or 1)
        bad: list[DataError] = []
        for ix in indexes:
            paths = [ix.image_dir / name for name in ix.names]
            verified, found = _verify_images(paths, progress, verified, total,
                                             max(1, n_workers))
            bad += found
        if bad:
            raise DataErrors(bad)

    first = index.image_path(0)
    try:
        with Image.open(first) as img:
            image_size = [int(img.size[0]), int(img.size[1])]
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read image: {exc}", path=first) from None

    identity = index.identity
    splits: dict[str, dict[str, int | None]] = {}
    split_ids: list[set[int]] = []
    for sid, name in enumerate(SPLIT_NAMES):
        pos = index.select(sid)
        ids = set(np.unique(identity[pos]).tolist()) if identity is not None else None
        if ids is not None:
            split_ids.append(ids)
        splits[name] = {"images": int(len(pos)), "identities": None if ids is None else len(ids)}

    overlap: int | None = None
    n_identities: int | None = None
    if identity is not None:
        n_identities = int(len(np.unique(identity)))
        seen_in = {}
        for ids in split_ids:
            for ident in ids:
                seen_in[ident] = seen_in.get(ident, 0) + 1
        overlap = sum(1 for n in seen_in.values() if n > 1)

    return {
        "root": str(index.root),
        "layout": index.layout,
        "variants": variants,
        "images": len(index),
        "splits": splits,
        "identities": n_identities,
        "identity_overlap": overlap,
        "attributes": prevalence(index.attrs),
        "attributes_by_split": {
            name: prevalence(index.attrs[index.select(sid)]) for sid, name in enumerate(SPLIT_NAMES)
        },
        "attr_values": index.attr_values,
        "has_bbox": index.bbox is not None,
        "has_landmarks": any(ix.landmarks is not None for ix in indexes),
        "image_size": image_size,
        "files": {
            ix.variant: {role: str(path) for role, path in ix.files.items()} for ix in indexes
        },
        "verified_images": verified,
    }


def _fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_check(report: dict[str, Any]) -> list[Table]:
    """Rich tables for a :func:`check_dataset` report: summary, splits, attribute prevalence.

    The prevalence table puts CelebA's published prevalence and the difference beside each
    attribute, so a skewed dataset (or a wrong label convention) shows at a glance.
    """
    summary = Table(title="Dataset", show_header=False)
    summary.add_column("key", style="bold")
    summary.add_column("value")
    summary.add_row("root", str(report["root"]))
    summary.add_row("layout", f"{report['layout']} (attribute values {report['attr_values']})")
    summary.add_row("variants", ", ".join(report["variants"]))
    summary.add_row("images", f"{report['images']:,}")
    idents = report["identities"]
    summary.add_row("identities", "-" if idents is None else f"{idents:,}")
    overlap = report["identity_overlap"]
    summary.add_row("identities in >1 split", "-" if overlap is None else f"{overlap:,}")
    summary.add_row("boxes / landmarks", f"{report['has_bbox']} / {report['has_landmarks']}")
    width, height = report["image_size"]
    summary.add_row("first image size", f"{width}x{height} (WxH)")
    summary.add_row("images decoded", f"{report['verified_images']:,}")

    splits = Table(title="Splits")
    splits.add_column("split")
    splits.add_column("images", justify="right")
    splits.add_column("%", justify="right")
    splits.add_column("identities", justify="right")
    total = max(1, int(report["images"]))
    for name, info in report["splits"].items():
        ids = info["identities"]
        splits.add_row(
            name,
            f"{info['images']:,}",
            f"{100.0 * info['images'] / total:.1f}",
            "-" if ids is None else f"{ids:,}",
        )

    attrs = Table(title="Attribute prevalence (%)")
    attrs.add_column("attribute")
    attrs.add_column("all", justify="right")
    for name in report["attributes_by_split"]:
        attrs.add_column(name, justify="right")
    attrs.add_column("CelebA", justify="right")
    attrs.add_column("diff", justify="right")
    for name in ATTRIBUTES:
        ours = report["attributes"][name]
        ref = float(CELEBA_PREVALENCE[name])
        diff = "-" if ours is None else f"{ours - ref:+.1f}"
        attrs.add_row(
            name,
            _fmt_pct(ours),
            *(_fmt_pct(by[name]) for by in report["attributes_by_split"].values()),
            f"{ref:.0f}",
            diff,
        )
    return [summary, splits, attrs]
