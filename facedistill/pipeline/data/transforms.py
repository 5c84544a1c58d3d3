"""The one place where image transforms are defined.

Eval transform = :class:`facedistill.runtime.preprocess.Preprocess` (numpy + PIL), so the
runtime reproduces it exactly from the record stored in checkpoints and ONNX metadata.
Train transform = the same resize, then light augmentation on the [0, 1] tensor (torch RNG, so
DataLoader worker seeding makes it reproducible), then the same normalisation.

A transform is recorded as ``{"preprocess": {...}, "augment": {...} | None}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from facedistill.runtime.preprocess import Preprocess

AUGMENT_NAME = "facedistill.augment/v1"


@dataclass(frozen=True)
class Augment:
    """Train-time augmentation. Every face attribute of CelebA is left/right symmetric, so a
    horizontal flip keeps labels valid."""

    hflip: float = 0.5  # probability
    translate: float = 0.06  # max shift as a fraction of width/height
    brightness: float = 0.1  # factor drawn from [1 - b, 1 + b]
    contrast: float = 0.1  # factor drawn from [1 - c, 1 + c]

    def to_record(self) -> dict[str, Any]:
        return {"name": AUGMENT_NAME, **asdict(self)}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Augment:
        if record.get("name") != AUGMENT_NAME:
            raise ValueError(f"unknown augmentation record {record.get('name')!r}")
        return cls(**{k: float(v) for k, v in record.items() if k != "name"})

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: CxHxW float in [0, 1]; returns the augmented tensor, still in [0, 1]."""
        hwc = np.ascontiguousarray(x.detach().cpu().numpy().transpose(1, 2, 0), np.float32)
        return torch.from_numpy(np.ascontiguousarray(self.apply(hwc).transpose(2, 0, 1)))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """The augmentation on an HxWx3 float32 array in [0, 1] (numpy: half the cost per
        image of the same arithmetic as small torch ops). The random draws come from torch's
        generator, in a fixed order (flip, dy, dx, brightness, contrast), so the loader's
        per-epoch seeding makes them reproducible."""
        if self.hflip > 0 and torch.rand(()) < self.hflip:
            x = x[:, ::-1]
        if self.translate > 0:
            h, w = x.shape[:2]
            max_dy, max_dx = round(self.translate * h), round(self.translate * w)
            dy = int(torch.randint(-max_dy, max_dy + 1, ()))
            dx = int(torch.randint(-max_dx, max_dx + 1, ()))
            if dy or dx:  # shifted with the border pixels repeated (replicate padding)
                rows = np.clip(np.arange(h) + dy, 0, h - 1)
                cols = np.clip(np.arange(w) + dx, 0, w - 1)
                x = x[rows][:, cols]
        if self.brightness > 0:
            x = x * np.float32(1.0 + (float(torch.rand(())) * 2 - 1) * self.brightness)
        if self.contrast > 0:
            factor = np.float32(1.0 + (float(torch.rand(())) * 2 - 1) * self.contrast)
            gray = np.float32((x @ _LUMA).mean())
            x = (x - gray) * factor + gray
        return np.clip(x, 0.0, 1.0)  # a new array: the input is never written


_LUMA = np.asarray([0.299, 0.587, 0.114], dtype=np.float32)


class Transform:
    """PIL image (+ optional face box) -> normalised CHW float32 tensor."""

    def __init__(self, preprocess: Preprocess, augment: Augment | None = None) -> None:
        self.preprocess = preprocess
        self.augment = augment

    def __call__(self, img: Image.Image, box: Sequence[float] | None = None) -> torch.Tensor:
        if self.augment is None:
            return torch.from_numpy(self.preprocess(img, box))
        rgb = np.asarray(self.preprocess.resize(img, box))
        x = self.augment.apply(rgb.astype(np.float32) * np.float32(1.0 / 255.0))
        x = (x - np.asarray(self.preprocess.mean, dtype=np.float32)) \
            / np.asarray(self.preprocess.std, dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))

    def to_record(self) -> dict[str, Any]:
        return {
            "preprocess": self.preprocess.to_record(),
            "augment": None if self.augment is None else self.augment.to_record(),
        }

    def __repr__(self) -> str:
        return f"Transform({self.preprocess!r}, augment={self.augment!r})"


def build_transform(
    size: int | tuple[int, int] = 64,
    *,
    train: bool = False,
    margin: float = 0.2,
    augment: Augment | None = None,
    **preprocess_kwargs: Any,
) -> Transform:
    """The train (augmenting) or eval transform for square ``size`` or (height, width)."""
    hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    pre = Preprocess(size=hw, margin=margin, **preprocess_kwargs)
    return Transform(pre, (augment or Augment()) if train else None)


def transform_from_record(record: dict[str, Any], *, train: bool | None = None) -> Transform:
    """Rebuild a transform from its record; ``train=False`` drops the augmentation,
    ``train=True`` adds the default one when the record has none."""
    pre = Preprocess.from_record(record["preprocess"])
    aug_rec = record.get("augment")
    augment = Augment.from_record(aug_rec) if aug_rec else None
    if train is False:
        augment = None
    elif train is True and augment is None:
        augment = Augment()
    return Transform(pre, augment)
