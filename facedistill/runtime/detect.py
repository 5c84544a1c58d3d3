"""Face detection for the face-app path: OpenCV's Haar cascade, or the app's own detector.

A detector is any callable ``detector(rgb) -> boxes`` taking an HxWx3 uint8 RGB array and
returning an iterable of ``(x, y, width, height)`` boxes in pixels (numbers; an ``Nx4`` array
works). :class:`HaarDetector` is the built-in one; it needs OpenCV (the ``detect`` extra,
``pip install 'facedistill[detect]'``), imported only when a detector is built.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from facedistill.runtime.errors import DetectorError

Box = tuple[int, int, int, int]
DetectorFn = Callable[[np.ndarray], Iterable[Sequence[float]]]
DetectorSpec = str | DetectorFn

DETECT_EXTRA = "pip install 'facedistill[detect]'"
HAAR_CASCADE = "haarcascade_frontalface_default.xml"


def import_cv2() -> Any:
    """OpenCV, or a one-line :class:`DetectorError` saying how to install it."""
    try:
        import cv2
    except ImportError:
        raise DetectorError(f"face detection needs OpenCV: {DETECT_EXTRA}") from None
    return cv2


class HaarDetector:
    """OpenCV's frontal-face Haar cascade (fast, CPU-only, frontal faces only).

    ``scale_factor``, ``min_neighbors`` and ``min_size`` (pixels) are passed to
    ``CascadeClassifier.detectMultiScale``. OpenCV does not promise that one classifier may be
    used by several threads at once, so each thread gets its own (loaded on first use).
    """

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5,
                 min_size: int = 30, cascade: str = HAAR_CASCADE) -> None:
        cv2 = self._cv2 = import_cv2()
        cascades = getattr(getattr(cv2, "data", None), "haarcascades", None)
        if not hasattr(cv2, "CascadeClassifier") or (cascades is None and "/" not in cascade):
            raise DetectorError(
                f"this OpenCV ({getattr(cv2, '__version__', '?')}) has no Haar cascades (OpenCV 5 "
                f"dropped them): pip install 'opencv-python-headless<5' ({DETECT_EXTRA}), "
                "or pass your own detector")
        self.path = cascade if "/" in cascade else cascades + cascade
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self._local = threading.local()
        self._classifier()  # fail now, not on the first image, when the cascade is unreadable

    def _classifier(self) -> Any:
        clf = getattr(self._local, "clf", None)
        if clf is None:
            clf = self._cv2.CascadeClassifier(self.path)
            if clf.empty():
                raise DetectorError("cannot load the Haar cascade", path=self.path)
            self._local.clf = clf
        return clf

    def __call__(self, rgb: np.ndarray) -> list[Box]:
        grey = self._cv2.cvtColor(np.ascontiguousarray(rgb), self._cv2.COLOR_RGB2GRAY)
        found = self._classifier().detectMultiScale(
            grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size))
        return [tuple(int(v) for v in box) for box in np.asarray(found).reshape(-1, 4)]

    def __repr__(self) -> str:
        return (f"HaarDetector(scale_factor={self.scale_factor}, "
                f"min_neighbors={self.min_neighbors}, min_size={self.min_size})")


def make_detector(detector: DetectorSpec) -> DetectorFn:
    """``"haar"`` to a :class:`HaarDetector`; a callable is returned as it is."""
    if callable(detector):
        return detector
    if detector == "haar":
        return HaarDetector()
    raise DetectorError(f"unknown detector {detector!r}: use 'haar' or pass a callable "
                        "rgb -> [(x, y, w, h), ...]")


def check_boxes(found: Iterable[Sequence[float]], width: int, height: int) -> list[Box]:
    """A detector's output as integer boxes, largest first; a malformed box or one that misses
    the image entirely is a :class:`DetectorError` (the detector is the app's code)."""
    boxes: list[Box] = []
    for raw in found if found is not None else ():
        values = list(np.asarray(raw, dtype=np.float64).reshape(-1))
        if len(values) != 4 or not all(np.isfinite(values)):
            raise DetectorError(f"the detector returned {raw!r}: expected (x, y, width, height)")
        x, y, w, h = (int(round(v)) for v in values)
        if w <= 0 or h <= 0:
            raise DetectorError(f"the detector returned a box of non-positive size {(x, y, w, h)}")
        if x >= width or y >= height or x + w <= 0 or y + h <= 0:
            raise DetectorError(f"the detector returned a box {(x, y, w, h)} outside the "
                                f"{width}x{height} image")
        boxes.append((x, y, w, h))
    boxes.sort(key=lambda b: -b[2] * b[3])
    return boxes
