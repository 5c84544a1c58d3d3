"""Accuracy of an exported model on a CelebA-format split, without torch.

Shared by ``facedistill export`` (every precision variant is scored at export time) and
``facedistill bench``. Three steps, each usable alone:

1. :func:`split_images` - the image paths and 0/1 labels of one split (for the ``wild``
   variant the returned list also carries each image's face box, see :class:`ImageList`);
2. :func:`predict_images` - run any ``run_batch`` callable (ONNX Runtime, TensorRT, ...) over
   the images, preprocessed exactly like training's eval transform (the model's
   :class:`~facedistill.runtime.preprocess.Preprocess`, wild faces cropped by their box);
3. :func:`balanced_accuracy` - per-attribute and mean balanced accuracy at fixed thresholds
   on the *probabilities* (the ONNX metadata's ``thresholds``).

Units: accuracies are **fractions** in [0, 1], as in ``facedistill eval --json``
(``mean_balanced`` 0.8266 means 82.66 %). Differences between variants are fractions too;
the export gate's ``max_drop`` is the one value given in percentage points.

numpy + PIL only (and the torch-free CelebA index parser and metrics).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facedistill.errors import DataError, UserError

__all__ = ["ImageList", "balanced_accuracy", "predict_images", "split_images"]

Progress = Callable[[int, int], None]


class ImageList(list):  # type: ignore[type-arg]
    """A ``list[Path]`` of images that may also carry their face boxes.

    ``boxes`` is None (aligned faces: the whole image is the face) or float32 ``[N, 4]``
    (x, y, width, height in image pixels, CelebA's ``list_bbox_celeba``) in list order;
    :func:`predict_images` crops each image to its box enlarged by the preprocessing margin.
    Slicing returns a plain list (no boxes): slice ``boxes`` alongside when needed.
    """

    boxes: np.ndarray | None = None

    def __init__(self, paths: Sequence[Path] = (), boxes: np.ndarray | None = None) -> None:
        super().__init__(paths)
        if boxes is not None:
            boxes = np.asarray(boxes, dtype=np.float32)
            if boxes.shape != (len(self), 4):
                raise ValueError(f"boxes must be [{len(self)}, 4], got {boxes.shape}")
        self.boxes = boxes


def _auto_variant(root: Path) -> str:
    from facedistill.data.celeba import find_image_dir, resolve_root

    base = resolve_root(root)
    if find_image_dir(base, "aligned") is not None:
        return "aligned"
    if find_image_dir(base, "wild") is not None:
        return "wild"
    return "aligned"  # let the index raise its "no image folder" error


def split_images(
    data: str | os.PathLike[str] | Any,
    split: str = "val",
    variant: str | None = None,
) -> tuple[ImageList, np.ndarray, list[str]]:
    """The images of one split: ``(paths, labels, attribute_names)``.

    ``data`` is a CelebA-format folder (or an already loaded
    :class:`~facedistill.data.celeba.CelebAIndex`); ``variant`` is ``aligned`` or
    ``wild`` (None: aligned when its image folder exists, else wild). ``labels`` is int8
    ``[N, A]`` in {0, 1}. For ``wild`` the returned :class:`ImageList` carries the face boxes
    (the boxes file is then required). An empty split is a :class:`DataError`.
    """
    from facedistill.data.celeba import CelebAIndex, check_variant

    if isinstance(data, CelebAIndex):
        index = data
        if variant is not None and check_variant(variant) != index.variant:
            raise UserError(f"the index was loaded for the {index.variant} variant, "
                            f"not {variant}")
    else:
        root = Path(data)
        index = CelebAIndex.load(root, variant=variant or _auto_variant(root))
    positions = index.select(split)
    if len(positions) == 0:
        raise DataError(f"the {split} split has no images", path=index.files.get("partition",
                                                                               index.root))
    paths = [index.image_dir / index.names[p] for p in positions]
    boxes = None
    if index.variant == "wild":
        if index.bbox is None:
            raise DataError("list_bbox_celeba.txt (or .csv) is needed: the wild variant crops "
                            "faces by their box", path=index.root)
        boxes = index.bbox[positions]
    labels = np.ascontiguousarray(index.attrs[positions], dtype=np.int8)
    return ImageList(paths, boxes), labels, list(index.attribute_names)


def load_batch(preprocess: Any, paths: Sequence[Path],
               boxes: np.ndarray | None = None) -> np.ndarray:
    """Decode and preprocess images into one float32 NCHW array."""
    from facedistill.data.celeba import load_image

    h, w = preprocess.size
    out = np.empty((len(paths), 3, h, w), dtype=np.float32)
    for i, path in enumerate(paths):
        img = load_image(path)
        try:
            box = None if boxes is None else boxes[i].tolist()
            out[i] = preprocess(img, box)
        finally:
            img.close()
    return out


def iter_batches(preprocess: Any, paths: Sequence[Path], batch_size: int = 64,
                 boxes: np.ndarray | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, x)``: preprocessed float32 NCHW batches of ``paths`` in order."""
    if batch_size < 1:
        raise UserError(f"batch size must be >= 1, got {batch_size}")
    if boxes is None:
        boxes = getattr(paths, "boxes", None)
    for start in range(0, len(paths), batch_size):
        stop = min(start + batch_size, len(paths))
        part = None if boxes is None else boxes[start:stop]
        yield start, load_batch(preprocess, list(paths[start:stop]), part)


def predict_images(
    run_batch: Callable[[np.ndarray], np.ndarray],
    preprocess: Any,
    paths: Sequence[Path],
    batch_size: int = 64,
    progress: Progress | None = None,
    *,
    boxes: np.ndarray | None = None,
) -> np.ndarray:
    """Run ``run_batch`` (float32 NCHW -> probabilities ``[B, C]``) over ``paths`` in order.

    Images are decoded with :func:`~facedistill.data.celeba.load_image` and turned
    into input by ``preprocess`` (a :class:`~facedistill.runtime.preprocess.Preprocess`); faces
    are cropped to ``boxes`` (default: ``paths.boxes`` of an :class:`ImageList`). Returns
    float32 ``[N, C]`` (``C`` = what ``run_batch`` returns per image, normally the number of
    attributes). ``progress(done, total)`` is called after every batch.
    """
    if len(paths) == 0:
        raise UserError("no images to predict")
    chunks: list[np.ndarray] = []
    total = len(paths)
    for start, x in iter_batches(preprocess, paths, batch_size, boxes):
        y = np.asarray(run_batch(x))
        if y.ndim != 2 or y.shape[0] != x.shape[0]:
            raise UserError(f"the model returned shape {y.shape} for a batch of {x.shape[0]} "
                            "images, expected one row of probabilities per image")
        chunks.append(y.astype(np.float32, copy=False))
        if progress is not None:
            progress(start + x.shape[0], total)
    return np.concatenate(chunks, axis=0)


def balanced_accuracy(
    probs: np.ndarray,
    labels: np.ndarray,
    thresholds: Sequence[float] | np.ndarray,
    names: Sequence[str],
) -> dict[str, Any]:
    """Balanced accuracy of ``probs`` ``[N, A]`` against ``labels`` ``[N, A]`` (0/1) with each
    attribute positive iff ``probability >= threshold``.

    Returns (fractions, JSON-ready)::

        {"mean_balanced", "mean_accuracy", "n_images",
         "attributes": [{"name", "balanced", "tpr", "tnr", "accuracy", "threshold",
                         "n_pos", "n_neg"}, ...]}

    A rate whose class is absent from the split is None and that attribute's balanced
    accuracy is the present class's rate (as in :func:`facedistill.metrics.evaluate`).
    """
    from facedistill.metrics import binary_rates

    probs = np.asarray(probs)
    names = [str(n) for n in names]
    if probs.ndim != 2 or probs.shape[1] != len(names):
        raise UserError(f"{len(names)} attribute names but probabilities of shape {probs.shape}")
    thr = np.asarray(thresholds, dtype=np.float64)
    if thr.shape != (len(names),):
        raise UserError(f"{len(names)} attributes but {thr.size} thresholds")
    rates = binary_rates(probs, labels, thr)

    def num(v: float) -> float | None:
        return float(v) if np.isfinite(v) else None

    attributes = [
        {"name": name, "balanced": num(rates.balanced[j]), "tpr": num(rates.tpr[j]),
         "tnr": num(rates.tnr[j]), "accuracy": num(rates.accuracy[j]),
         "threshold": float(thr[j]), "n_pos": int(rates.n_pos[j]), "n_neg": int(rates.n_neg[j])}
        for j, name in enumerate(names)
    ]
    return {
        "mean_balanced": float(np.mean(rates.balanced)),
        "mean_accuracy": float(np.mean(rates.accuracy)),
        "n_images": int(probs.shape[0]),
        "attributes": attributes,
    }
