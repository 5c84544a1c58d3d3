"""Deterministic image preprocessing shared by training (eval transform) and the runtime.

Numpy + PIL only. The training pipeline's eval transform *is* :class:`Preprocess`, so an
exported model sees exactly the input it was trained on. A ``Preprocess`` is recorded as a
plain dict (:meth:`Preprocess.to_record`) in checkpoints and ONNX metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

# ImageNet statistics: the usual choice for face-attribute CNNs trained from scratch or not.
DEFAULT_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
DEFAULT_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}

RECORD_NAME = "facedistill.preprocess/v1"

#: what a model sees of a photo: ``face``, the face box's crop with a margin (a detector's box;
#: an aligned crop as it is), or ``photo``, the whole photo padded to a square (no detector)
FRAMES = ("face", "photo")


def crop_with_margin(
    img: Image.Image, box: Sequence[float], margin: float, square: bool = True
) -> Image.Image:
    """Crop ``box`` = (x, y, width, height) enlarged by ``margin`` (a fraction of the box size
    on every side). With ``square`` the crop is the smallest square around the enlarged box,
    centred on it. Regions outside the image are filled with black."""
    left, top, w, h = crop_rect(box, margin, square)
    return img.crop((left, top, left + w, top + h))


def crop_rect(box: Sequence[float], margin: float, square: bool = True
              ) -> tuple[int, int, int, int]:
    """The pixels :func:`crop_with_margin` cuts for ``box``: ``(left, top, width, height)``."""
    x, y, w, h = (float(v) for v in box)
    if w <= 0 or h <= 0:
        raise ValueError(f"box has non-positive size: {tuple(box)}")
    cx, cy = x + w / 2.0, y + h / 2.0
    w, h = w * (1.0 + 2.0 * margin), h * (1.0 + 2.0 * margin)
    if square:
        w = h = max(w, h)
    left, top = round(cx - w / 2.0), round(cy - h / 2.0)
    return left, top, round(w), round(h)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode (L, LA, P, RGBA, I;16, ...) to 8-bit RGB; alpha is composited on black."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr8 = np.clip(np.round(arr / peak * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


@dataclass(frozen=True)
class Preprocess:
    """Resize to ``size`` = (height, width), scale to [0, 1], normalise by mean/std, CHW float32.

    With ``box`` given to :meth:`__call__`, the image is first cropped to the box enlarged by
    ``margin`` (in-the-wild faces). ``frame="photo"`` ignores any box: the whole photo is padded
    with black to a centred square (a model that finds the face itself, e.g. the FRL net).
    """

    size: tuple[int, int] = (64, 64)
    mean: tuple[float, float, float] = DEFAULT_MEAN
    std: tuple[float, float, float] = DEFAULT_STD
    interpolation: str = "bilinear"
    margin: float = 0.2
    color: str = "RGB"
    frame: str = "face"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(
                f"interpolation {self.interpolation!r} not one of {sorted(_INTERPOLATIONS)}"
            )
        if len(self.size) != 2 or min(self.size) <= 0:
            raise ValueError(f"size must be (height, width) > 0, got {self.size}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need 3 values each, std > 0")
        if self.color != "RGB":
            raise ValueError(f"only RGB colour order is supported, got {self.color!r}")
        if self.frame not in FRAMES:
            raise ValueError(f"frame {self.frame!r} not one of {', '.join(FRAMES)}")

    # -- record ---------------------------------------------------------------------------
    def to_record(self) -> dict[str, Any]:
        """The record; ``frame`` only when ``photo``, so a face model's is what it was before."""
        frame = {"frame": self.frame} if self.frame != "face" else {}
        return {
            "name": RECORD_NAME,
            "size": [int(self.size[0]), int(self.size[1])],
            "interpolation": self.interpolation,
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "margin": float(self.margin),
            "color": self.color,
            "layout": "NCHW",
            "dtype": "float32",
            "scale": 1.0 / 255.0,
            **frame,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Preprocess:
        if record.get("name") != RECORD_NAME:
            raise ValueError(f"unknown preprocessing record {record.get('name')!r}")
        return cls(
            size=(int(record["size"][0]), int(record["size"][1])),
            mean=tuple(float(v) for v in record["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in record["std"]),  # type: ignore[arg-type]
            interpolation=str(record["interpolation"]),
            margin=float(record.get("margin", 0.2)),
            color=str(record.get("color", "RGB")),
            frame=str(record.get("frame", "face")),
        )

    # -- application ----------------------------------------------------------------------
    def resize(self, img: Image.Image, box: Sequence[float] | None = None) -> Image.Image:
        """Colour-convert, crop (when ``box``; the padded photo for frame ``photo``) and resize;
        returns an RGB PIL image."""
        img = to_rgb(img)
        if self.frame == "photo":
            img = crop_with_margin(img, (0, 0, img.width, img.height), 0.0)
        elif box is not None:
            img = crop_with_margin(img, box, self.margin)
        height, width = self.size
        if img.size != (width, height):
            img = img.resize((width, height), _INTERPOLATIONS[self.interpolation])
        return img

    def input_rect(self, width: int, height: int, box: Sequence[float] | None = None
                   ) -> tuple[int, int, int, int]:
        """Which pixels of a ``width`` x ``height`` image :meth:`resize` turns into the model's
        input, ``(left, top, width, height)`` (it may reach past the image: black padding)."""
        if self.frame == "photo":
            return crop_rect((0, 0, width, height), 0.0)
        if box is not None:
            return crop_rect(box, self.margin)
        return 0, 0, width, height

    def normalize(self, rgb: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 (or [N]xHxWx3) to float32 normalised, channels first."""
        x = rgb.astype(np.float32) * np.float32(1.0 / 255.0)
        x -= np.asarray(self.mean, dtype=np.float32)
        x /= np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(np.moveaxis(x, -1, -3))

    def __call__(self, img: Image.Image, box: Sequence[float] | None = None) -> np.ndarray:
        return self.normalize(np.asarray(self.resize(img, box)))
