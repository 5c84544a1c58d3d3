"""Faces without labels, for distillation: the teacher supervises the student on them.

In practice labelled faces are scarce and unlabeled crops are plentiful; the teacher's outputs
(soft targets, hints, selected neurons) need no labels. :class:`UnlabeledImages` is a folder of
face crops (searched recursively; a CelebA-layout folder's ``img_align_celeba/`` is used when
there is one, so ``facedistill data synth --unlabeled`` output and any plain folder both work).
Its items carry labels filled with :data:`UNLABELED` (-1), which the ``labels`` loss term skips.
:class:`MixedTrainSet` puts such a pool next to the labelled training split.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facedistill.data.celeba import load_image
from facedistill.errors import DataError, UserError

__all__ = ["IMAGE_SUFFIXES", "UNLABELED", "MixedTrainSet", "UnlabeledImages", "list_images"]

UNLABELED = -1.0
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def list_images(root: str | os.PathLike[str]) -> list[Path]:
    """The image files under ``root`` (recursive, sorted; hidden files and folders skipped);
    ``root/img_align_celeba`` instead when it exists. A clear error when there are none."""
    base = Path(root)
    if not base.exists():
        raise UserError("no such folder of unlabeled images", path=base)
    if not base.is_dir():
        raise UserError("the unlabeled pool must be a folder of images", path=base)
    if (base / "img_align_celeba").is_dir():
        base = base / "img_align_celeba"
    files = sorted(p for p in base.rglob("*")
                   if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(base).parts))
    if not files:
        raise UserError(f"holds no images ({', '.join(IMAGE_SUFFIXES)})", path=base)
    return files


class UnlabeledImages(torch.utils.data.Dataset):
    """``(image, labels)`` with ``labels`` float32 ``[attributes]`` all :data:`UNLABELED`.

    ``transform`` is the labelled training set's (the same crop, resize and augmentation).
    ``limit`` keeps the first ``limit`` files (sorted order)."""

    def __init__(self, root: str | os.PathLike[str], transform: Any, attributes: int,
                 limit: int | None = None) -> None:
        files = list_images(root)
        if limit is not None:
            if limit < 1:
                raise UserError(f"the unlabeled limit must be at least 1, got {limit}",
                                field="unlabeled_n")
            files = files[:limit]
        self.root, self.files, self.transform = Path(root), files, transform
        self._blank = torch.full((attributes,), UNLABELED, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = load_image(self.files[i])
        try:
            x = self.transform(img)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot preprocess image: {exc}", path=self.files[i]) from None
        return x, self._blank.clone()

    def record(self) -> dict[str, Any]:
        return {"root": str(self.root), "images": len(self.files)}


class MixedTrainSet(torch.utils.data.Dataset):
    """The labelled training split followed by an unlabeled pool, shuffled together by the
    Trainer's sampler. ``labels`` and ``transform_record`` are the labelled split's."""

    def __init__(self, labelled: Any, unlabeled: UnlabeledImages) -> None:
        self.labelled, self.unlabeled = labelled, unlabeled
        self.labels: np.ndarray = labelled.labels

    @property
    def transform_record(self) -> dict[str, Any] | None:
        return self.labelled.transform_record

    def __len__(self) -> int:
        return len(self.labelled) + len(self.unlabeled)

    def __getitem__(self, i: int) -> Any:
        n = len(self.labelled)
        return self.labelled[i] if i < n else self.unlabeled[i - n]
