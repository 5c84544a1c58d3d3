"""The CelebA reader's torch side: one split as a ``torch.utils.data.Dataset``.

The annotation parsing (:class:`~facedistill.data.celeba.CelebAIndex`) is torch-free
and lives in :mod:`facedistill.data.celeba`, which also re-exports :class:`CelebA`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facedistill.attributes import ATTRIBUTES
from facedistill.data.celeba import (
    BBOX_STEM,
    IDENTITY_STEM,
    LANDMARK_STEMS,
    CelebAIndex,
    check_variant,
    load_image,
)
from facedistill.errors import ConfigError, DataError
from facedistill.pipeline.data.transforms import build_transform


def _jitter(box: list[float], amount: float) -> list[float]:
    """``box`` (x, y, w, h) with its centre moved by up to ``amount`` of its size and its size
    scaled by up to ``1 +- amount``, drawn from torch's generator (seeded per epoch and worker
    like the augmentation): a loose detector's box."""
    dx, dy, ds = (2 * torch.rand(3) - 1).tolist()
    x, y, w, h = box
    scale = 1 + amount * ds
    cx, cy = x + w / 2 + amount * dx * w, y + h / 2 + amount * dy * h
    return [cx - w * scale / 2, cy - h * scale / 2, w * scale, h * scale]


class CelebA(torch.utils.data.Dataset):
    """One split of CelebA (either layout) as ``(image, labels)`` pairs.

    ``image`` is the transform's CHW float32 tensor, ``labels`` float32 [40] in {0, 1} in
    :data:`facedistill.attributes.ATTRIBUTES` order. With any of ``return_identity``,
    ``return_bbox``, ``return_landmarks`` an item is ``(image, labels, extras)`` where
    ``extras`` holds ``name`` and the asked-for ``identity`` (int64 tensor), ``bbox``
    (float32 [4], with the photo's ``image_size`` (w, h)) and ``landmarks`` (float32 [10]) in
    the files' raw coordinates.

    ``root`` may also be an already loaded :class:`CelebAIndex` (its variant must equal
    ``variant``), so the train/val/test datasets share one parse.

    For ``variant="wild"`` the image is cropped to its box enlarged by ``margin`` (the
    transform's Preprocess does it); ``crop=False`` hands the whole image over instead;
    ``box_jitter`` loosens each box at random (training on detector-like boxes); ``frame``
    ``photo``: the whole photo, padded to a square (the transform's Preprocess ignores the box).
    ``transform`` defaults to :func:`build_transform` (``size``, ``train``, ``margin``,
    ``frame``); a
    custom one is called as ``transform(img, box=box)`` when cropping, else ``transform(img)``.

    Nothing is opened in ``__init__`` beyond the annotation files, so the dataset is safe to
    use with ``DataLoader(num_workers > 0)``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | CelebAIndex,
        split: str | int = "train",
        *,
        variant: str = "aligned",
        size: int | tuple[int, int] = 64,
        train: bool = False,
        transform: Callable[..., torch.Tensor] | None = None,
        margin: float = 0.2,
        return_identity: bool = False,
        return_bbox: bool = False,
        return_landmarks: bool = False,
        crop: bool = True,
        box_jitter: float = 0.0,
        frame: str = "face",
    ) -> None:
        check_variant(variant)
        if isinstance(root, CelebAIndex):
            if root.variant != variant:
                raise ConfigError(
                    f"the index was loaded for the {root.variant} variant, not {variant}"
                )
            index = root
        else:
            index = CelebAIndex.load(root, variant=variant)
        self.index = index
        self.split = split
        self.variant = variant
        self.positions = index.select(split)
        self.transform = transform or build_transform(size, train=train, margin=margin,
                                                         frame=frame)
        self.crop = variant == "wild" and crop
        self.box_jitter = float(box_jitter)  # training: loosen each face box (torch RNG)
        self.return_identity = return_identity
        self.return_bbox = return_bbox
        self.return_landmarks = return_landmarks

        needs = [
            (self.crop or return_bbox, index.bbox, BBOX_STEM),
            (return_identity, index.identity, IDENTITY_STEM),
            (return_landmarks, index.landmarks, LANDMARK_STEMS[variant]),
        ]
        for needed, array, stem in needs:
            if needed and array is None:
                reason = (
                    "the wild variant crops faces by their box"
                    if stem == BBOX_STEM and self.crop
                    else "it was asked for"
                )
                raise DataError(f"{stem}.txt (or .csv) is needed: {reason}", path=index.root)

        self.labels: np.ndarray = index.attrs[self.positions]  # int8 [N, 40] in {0, 1}

    # -- metadata ---------------------------------------------------------------------------
    @property
    def attribute_names(self) -> list[str]:
        return list(ATTRIBUTES)

    @property
    def names(self) -> list[str]:
        """Image file names of the split, in dataset order."""
        all_names = self.index.names
        return [all_names[p] for p in self.positions]

    @property
    def transform_record(self) -> dict[str, Any] | None:
        """The transform's record (None for a custom transform without ``to_record``)."""
        to_record = getattr(self.transform, "to_record", None)
        return to_record() if to_record is not None else None

    @property
    def image_dir(self) -> Path:
        return self.index.image_dir

    def __len__(self) -> int:
        return len(self.positions)

    def __repr__(self) -> str:
        return (
            f"CelebA(root={str(self.index.root)!r}, split={self.split!r}, "
            f"variant={self.variant!r}, images={len(self)})"
        )

    # -- items ------------------------------------------------------------------------------
    def __getitem__(self, i: int) -> Any:
        pos = int(self.positions[i])
        name = self.index.names[pos]
        img = load_image(self.index.image_dir / name)
        if self.crop:
            assert self.index.bbox is not None
            box = self.index.bbox[pos].tolist()
            if self.box_jitter > 0:
                box = _jitter(box, self.box_jitter)
            x = self.transform(img, box=box)
        else:
            x = self.transform(img)
        y = torch.from_numpy(self.labels[i].astype(np.float32))
        if not (self.return_identity or self.return_bbox or self.return_landmarks):
            return x, y
        extras: dict[str, Any] = {"name": name}
        if self.return_identity:
            assert self.index.identity is not None
            extras["identity"] = torch.tensor(int(self.index.identity[pos]), dtype=torch.int64)
        if self.return_bbox:
            assert self.index.bbox is not None
            extras["bbox"] = torch.from_numpy(self.index.bbox[pos].copy())
            extras["image_size"] = torch.tensor(img.size, dtype=torch.float32)  # (w, h)
        if self.return_landmarks:
            assert self.index.landmarks is not None
            extras["landmarks"] = torch.from_numpy(self.index.landmarks[pos].copy())
        return x, y, extras
