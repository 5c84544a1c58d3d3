"""The runtime's entry point: :class:`Predictor` loads an exported model and predicts attributes.

::

    from facedistill.runtime import Predictor

    predictor = Predictor("snet3.int8.onnx")           # or an .engine; threads=, device=
    pred = predictor.predict("photo.jpg")               # path, bytes, PIL image or uint8 array
    pred = predictor.predict(frame, channels="BGR")     # an OpenCV frame
    pred["Smiling"], pred.is_positive("Smiling")        # probability, decision
    pred.positives()                                    # [("Smiling", 0.97), ...] by margin
    json.dumps(pred.to_dict())
    faces = predictor.predict_faces("group.jpg")        # Haar detection + crop + predict

Everything the model needs to be fed correctly (input size, interpolation, mean/std, crop
margin) and to be read (attribute names, per-attribute thresholds, each attribute's validation
balanced accuracy, which flags those under ``reliability_floor`` as unreliable) comes from the
model's own metadata (:mod:`facedistill.runtime.metadata`). The preprocessing is the training
pipeline's eval transform (:class:`facedistill.runtime.preprocess.Preprocess`), bit for bit:
resize with PIL, then the same float32 operations in the same order.

One ``Predictor`` may be shared by many threads: it keeps no per-call state except
thread-local input buffers, ONNX Runtime's ``run`` is thread-safe, and the TensorRT backend
serialises its calls. Imports numpy, PIL and the backend only (never torch).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import threading
from collections.abc import Iterable, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from facedistill.errors import ConfigError
from facedistill.runtime.backends import (
    Backend,
    Device,
    open_backend,
    open_setting,
    ort_providers,
    parse_device,
)
from facedistill.runtime.detect import DetectorSpec, HaarDetector, check_boxes, make_detector
from facedistill.runtime.errors import ModelError
from facedistill.runtime.images import (
    Decoded,
    ImageInput,
    as_array,
    as_pil,
    check_channels,
    decode,
)
from facedistill.runtime.metadata import ModelInfo
from facedistill.runtime.preprocess import Preprocess
from facedistill.runtime.results import FacePrediction, Prediction
from facedistill.runtime.tuning import Setting, Tuning, read_tuning

DEFAULT_BATCH = 32
#: attributes whose validation balanced accuracy is under this are flagged unreliable
DEFAULT_RELIABILITY_FLOOR = 0.60


def _cpu_tuning(path: Path, device: Device) -> tuple[Tuning | None, str | None]:
    """The tuning beside an ONNX file when the model runs on this CPU (not on a GPU)."""
    if path.suffix.lower() != ".onnx":
        return None, "tuned settings are for ONNX files on a CPU"
    kind, _ = parse_device(device)
    if kind == "cuda":
        return None, "tuned settings are for the CPU, the device asks for a GPU"
    if kind == "auto":
        try:
            import onnxruntime as ort
        except ImportError:
            return None, None  # open_backend says what to install
        if ort_providers(ort, "auto") != ["CPUExecutionProvider"]:
            return None, "tuned settings are for the CPU, and a GPU provider is installed"
    if not path.is_file():
        return None, None  # open_backend names the missing file
    return read_tuning(path)


def _source(src: object) -> str | None:
    return os.fspath(src) if isinstance(src, (str, os.PathLike)) else None


class Predictor:
    """An exported facedistill model, ready to predict face attributes.

    ``model_path``: an ``.onnx`` file (ONNX Runtime) or a TensorRT ``.engine`` (its sidecar is
    checked against this GPU and TensorRT). ``backend``: ``auto`` (by suffix, and the tuned
    setting where there is one), ``ort``, ``ov`` (OpenVINO on the CPU, the ``[openvino]``
    extra) or ``trt``. ``device``: ``auto`` (a GPU when ONNX Runtime has a CUDA/TensorRT provider, else
    the CPU), ``cpu``, ``cuda``, ``cuda:N`` or N. ``threads``: intra-op threads of ONNX Runtime or
    OpenVINO (None: the runtime's default, one per core); ``spin``: let them spin between calls (faster for one model
    called back to back, slower beside other models: :func:`~facedistill.runtime.backends.open_session`).
    ``batch_size``: the chunk :meth:`predict_batch` runs at once
    (capped by a TensorRT engine's profile; a static-batch ONNX uses its own).

    ``tuned`` (default True): when ``facedistill bench --tune`` wrote ``<model>.onnx.tune.json``
    on this machine for this file (:mod:`facedistill.runtime.tuning`) and neither ``backend``
    nor ``threads`` is given, each call runs with the setting measured fastest at the nearest
    tuned batch size (ONNX Runtime or OpenVINO; threads, I/O binding, ...): the non-spinning
    choice, or with ``spin=True`` the fastest of all. :attr:`tuning` holds it,
    :attr:`tuning_note` why none applies.

    ``reliability_floor`` (a fraction, default 0.60): an attribute whose balanced accuracy on
    the validation split (stored in the model at export, :attr:`val_balanced`) is under it is
    *unreliable* (:attr:`reliable`, :attr:`unreliable`): its probability and decision are
    still returned, but :meth:`Prediction.positives` leaves it out unless ``all=True``. 0
    flags nothing. A model exported before this accuracy was recorded has
    ``val_balanced = None``: nothing is flagged (every attribute counts as reliable), nor is an
    attribute whose validation accuracy is undefined.

    Arrays carry no channel order, so the ``predict*`` methods take ``channels="RGB"``
    (the default) or ``"BGR"`` (OpenCV's ``imread``/``VideoCapture`` frames, converted to RGB);
    it applies to numpy inputs only (files, bytes and PIL images know their own order).

    Raises (all one-line :class:`~facedistill.errors.UserError` subclasses)
    :class:`~facedistill.runtime.errors.ModelError` (missing/unloadable file),
    :class:`~facedistill.runtime.metadata.MetadataError` (not a facedistill export),
    :class:`~facedistill.runtime.engine.EngineMismatchError` (an engine built for another
    GPU/TensorRT) or :class:`~facedistill.errors.ConfigError` (a bad option).
    """

    def __init__(self, model_path: str | os.PathLike[str], backend: str = "auto",
                 device: Device = "auto", threads: int | None = None,
                 batch_size: int = DEFAULT_BATCH, spin: bool = False,
                 reliability_floor: float = DEFAULT_RELIABILITY_FLOOR,
                 tuned: bool = True) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}", field="batch_size")
        check_floor(reliability_floor)
        self.path = Path(model_path)
        #: the tuned settings in use (``bench --tune``), or None; :attr:`tuning_note` says why
        self.tuning: Tuning | None = None
        self.tuning_note: str | None = None
        self._policy = "dedicated" if spin else "shared"
        self._by_setting: dict[Setting, Backend] = {}
        self._setting_for: dict[int, Setting] = {}
        self._open_lock = threading.Lock()
        if tuned and backend == "auto" and threads is None:
            self.tuning, self.tuning_note = _cpu_tuning(self.path, device)
        if self.tuning is not None:
            first = self.tuning.setting_for(1, self._policy)
            self._backend = self._by_setting[first] = open_setting(self.path, first)
        else:
            self._backend = open_backend(self.path, backend=backend, device=device,
                                         threads=threads, spin=spin)
        self.info: ModelInfo = self._backend.info
        self.attributes: tuple[str, ...] = self.info.attributes
        self.thresholds = np.asarray(self.info.thresholds, dtype=np.float64)
        self.reliability_floor = float(reliability_floor)
        #: float64 [A] validation balanced accuracy per attribute (NaN: undefined), or None
        #: for a model exported without it
        self.val_balanced: np.ndarray | None = None
        if self.info.val_balanced is not None:
            self.val_balanced = np.asarray(
                [np.nan if v is None else v for v in self.info.val_balanced], dtype=np.float64)
        #: bool [A]: not under the floor (unknown counts as reliable)
        self.reliable = np.ones(len(self.attributes), dtype=bool)
        if self.val_balanced is not None:
            self.reliable = ~(self.val_balanced < self.reliability_floor)
        self.reliable.setflags(write=False)
        self.preprocess: Preprocess = self.info.preprocess
        fixed, low, cap = (self._backend.fixed_batch, self._backend.min_batch,
                           self._backend.max_batch)
        self._fixed = fixed
        self.batch_size = fixed or max(low, min(batch_size, cap) if cap else batch_size)
        height, width = self.preprocess.size
        self._hw = (height, width)
        # the eval transform's constants, float32 exactly as Preprocess.normalize uses them
        self._scale = np.float32(1.0 / 255.0)
        self._mean = np.asarray(self.preprocess.mean, dtype=np.float32)
        self._std = np.asarray(self.preprocess.std, dtype=np.float32)
        self._mean4, self._std4 = self._mean[:, None, None], self._std[:, None, None]
        self._local = threading.local()
        self._haar: HaarDetector | None = None
        self._haar_lock = threading.Lock()

    # -- description ------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        """``ort``, ``ov`` or ``trt`` (of the setting tuned for batch 1 where tuned)."""
        return self._backend.name

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the model's input."""
        return self._hw

    @property
    def unreliable(self) -> tuple[str, ...]:
        """The attributes under the reliability floor, in output order."""
        return tuple(n for n, r in zip(self.attributes, self.reliable, strict=True) if not r)

    def describe(self) -> dict[str, Any]:
        """JSON-ready facts about the loaded model (backend, providers, arch, precision, ...,
        and ``reliability``: the floor, each attribute's validation balanced accuracy (None
        for a model that does not carry it) and the attributes flagged unreliable)."""
        val = None if self.val_balanced is None else {
            n: (None if np.isnan(v) else float(v))
            for n, v in zip(self.attributes, self.val_balanced.tolist(), strict=True)}
        tuning: dict[str, Any] = {"file": None, "why_not": self.tuning_note}
        if self.tuning is not None:
            tuning = {"file": os.fspath(self.tuning.path), "policy": self._policy,
                      "settings": {str(b): self.tuning.setting_for(b, self._policy).to_json()
                                   for b in sorted(self.tuning.choices)}}
        return {**self._backend.describe(), "tuning": tuning, "arch": self.info.arch,
                "precision": self.info.precision, "input_size": list(self._hw),
                "attributes": len(self.attributes), "version": self.info.version,
                "thresholds_unit": "probability",
                "reliability": {"floor": self.reliability_floor, "val_balanced": val,
                                "unreliable": list(self.unreliable)}}

    def __repr__(self) -> str:
        return (f"Predictor({os.fspath(self.path)!r}, backend={self.backend!r}, "
                f"arch={self.info.arch.get('arch')!r}, precision={self.info.precision!r})")

    def close(self) -> None:
        """Release the backend's resources now (a TensorRT engine's GPU memory); ONNX Runtime
        sessions are freed with the object anyway."""
        self._backend.close()
        for b in self._by_setting.values():
            if b is not self._backend:
                b.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- preprocessing ----------------------------------------------------------------------
    def _buffers(self) -> tuple[np.ndarray, np.ndarray]:
        """This thread's uint8 (planar) and float32 input buffers, [batch_size, 3, H, W]."""
        bufs = getattr(self._local, "bufs", None)
        if bufs is None:
            shape = (self.batch_size, 3, *self._hw)
            bufs = (np.empty(shape, np.uint8), np.empty(shape, np.float32))
            self._local.bufs = bufs
        return bufs

    def _resized(self, img: Decoded, box: Sequence[float] | None = None,
                 pre: Preprocess | None = None) -> np.ndarray:
        """HxWx3 uint8 at the model's size: an array already at that size is used as it is,
        anything else goes through ``Preprocess.resize`` (colour, crop, PIL resize)."""
        if box is None and isinstance(img, np.ndarray) and img.shape[:2] == self._hw:
            return img
        pil = Image.fromarray(np.ascontiguousarray(img)) if isinstance(img, np.ndarray) else img
        return np.asarray((pre or self.preprocess).resize(pil, box))

    def _normalize(self, u8: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``Preprocess.normalize``'s float32 operations in its order, into a preallocated
        buffer: bit-identical to it. Small batches in three broadcast passes (fewest numpy
        calls), larger ones channel plane by plane (contiguous loops; faster from ~4 images)."""
        if u8.shape[0] < 4:
            np.multiply(u8, self._scale, out=out, casting="unsafe")
            np.subtract(out, self._mean4, out=out)
            np.divide(out, self._std4, out=out)
            return out
        for c in range(3):
            plane = out[:, c]
            np.multiply(u8[:, c], self._scale, out=plane, casting="unsafe")
            np.subtract(plane, self._mean[c], out=plane)
            np.divide(plane, self._std[c], out=plane)
        return out

    def _fill(self, rgbs: Sequence[np.ndarray]) -> np.ndarray:
        """Normalised NCHW float32 input of the resized images, a view of this thread's
        buffer (padded to the static batch when the model has one)."""
        u8, f32 = self._buffers()
        n = len(rgbs)
        for i, rgb in enumerate(rgbs):
            u8[i] = rgb.transpose(2, 0, 1)
        rows = self._fixed or n
        self._normalize(u8[:n], f32[:n])
        return f32[:rows]

    def preprocess_batch(self, images: Iterable[ImageInput],
                         boxes: Sequence[Sequence[float] | None] | None = None,
                         channels: str = "RGB") -> np.ndarray:
        """The model's input for ``images``: float32 ``[N, 3, H, W]`` (a new array), exactly what
        :meth:`predict_batch` (or, with face ``boxes`` (x, y, w, h), :meth:`predict_faces`)
        feeds the model. ``channels``: the order of array inputs (``RGB`` or ``BGR``)."""
        chunks = []
        done = 0
        for _, decoded in self._chunks(images, self.batch_size, channels):
            part = [None] * len(decoded) if boxes is None else boxes[done:done + len(decoded)]
            rgbs = [self._resized(img, box) for img, box in zip(decoded, part, strict=True)]
            chunks.append(self._fill(rgbs)[: len(rgbs)].copy())
            done += len(decoded)
        height, width = self._hw
        return np.concatenate(chunks) if chunks else np.empty((0, 3, height, width), np.float32)

    # -- running ----------------------------------------------------------------------------
    def run(self, x: np.ndarray) -> np.ndarray:
        """Probabilities ``[N, A]`` for an already preprocessed float32 NCHW batch."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        return self._backend_for(x.shape[0]).run(x)

    def _backend_for(self, n: int) -> Backend:
        """The backend for a call of ``n`` images: the tuned setting of the nearest batch size
        (opened on first use), else the one backend."""
        if self.tuning is None:
            return self._backend
        setting = self._setting_for.get(n)
        if setting is None:
            setting = self._setting_for[n] = self.tuning.setting_for(n, self._policy)
        backend = self._by_setting.get(setting)
        if backend is None:
            with self._open_lock:
                backend = self._by_setting.get(setting)
                if backend is None:
                    backend = self._by_setting[setting] = open_setting(self.path, setting)
        return backend

    def _probabilities(self, rgbs: list[np.ndarray]) -> np.ndarray:
        probs = self._backend_for(len(rgbs)).run(self._fill(rgbs))
        want = len(self.attributes)
        if not (isinstance(probs, np.ndarray) and probs.ndim == 2 and probs.shape[1] == want
                and probs.shape[0] >= len(rgbs)):
            shape = getattr(probs, "shape", type(probs).__name__)
            raise ModelError(f"the model's output has shape {shape}, expected (batch, {want}) "
                             f"for its {want} attributes: its metadata does not describe this "
                             "graph", path=self.path)
        return probs[: len(rgbs)]

    @staticmethod
    def _chunks(images: Iterable[ImageInput], size: int,
                channels: str = "RGB") -> Iterable[tuple[list[ImageInput], list[Decoded]]]:
        """``size`` inputs at a time, as given and decoded (arrays in ``channels`` order)."""
        check_channels(channels)
        if isinstance(images, (str, bytes, bytearray, memoryview, os.PathLike, Image.Image)) or (
                isinstance(images, np.ndarray) and images.ndim != 4):
            raise TypeError("predict_batch takes a sequence of images (or an NxHxWxC array); "
                            "use predict() for one image")
        it = iter(images)
        start = 0
        while True:
            raw = list(islice(it, size))
            if not raw:
                return
            yield raw, [decode(src, index=start + i, channels=channels)
                        for i, src in enumerate(raw)]
            start += len(raw)

    def _predictions(self, probs: np.ndarray, sources: Sequence[str | None],
                     rects: Sequence[tuple[int, int, int, int]] | None = None
                     ) -> list[Prediction]:
        """One Prediction per row; ``rects``: the pixels each input was cut from
        (:meth:`Preprocess.input_rect`), where a cascade's regions are placed."""
        return [Prediction(self.attributes, probs[i], self.thresholds, src, self.reliable,
                           self._regions(rects[i]) if rects is not None else None)
                for i, src in enumerate(sources)]

    def _regions(self, rect: tuple[int, int, int, int]
                 ) -> dict[str, tuple[int, int, int, int]] | None:
        """The model's fixed part boxes (unit coordinates of its input) in image pixels."""
        boxes = self.info.regions
        if boxes is None:
            return None
        left, top, width, height = rect
        return {g: (round(left + (cx - s / 2) * width), round(top + (cy - s / 2) * height),
                    round(s * width), round(s * height)) for g, (cx, cy, s) in boxes.items()}

    def _rect(self, decoded: Decoded, box: Sequence[float] | None = None,
              pre: Preprocess | None = None) -> tuple[int, int, int, int]:
        height, width = (decoded.shape[:2] if isinstance(decoded, np.ndarray)
                         else (decoded.height, decoded.width))
        return (pre or self.preprocess).input_rect(width, height, box)

    def predict(self, image: ImageInput, channels: str = "RGB") -> Prediction:
        """The attributes of one whole image (an aligned face crop, as the model was trained
        on): a path, bytes, a PIL image or a uint8 array (see :mod:`facedistill.runtime.images`)
        whose channel order ``channels`` gives: ``"RGB"`` (default) or ``"BGR"`` (OpenCV)."""
        decoded = decode(image, channels=channels)
        rgb = self._resized(decoded)
        return self._predictions(self._probabilities([rgb]), [_source(image)],
                                 [self._rect(decoded)])[0]

    def predict_batch(self, images: Iterable[ImageInput], batch_size: int | None = None,
                      channels: str = "RGB") -> list[Prediction]:
        """:meth:`predict` for many images, in order; decoded and run ``batch_size`` at a time
        (default: the predictor's), so a long list of paths never sits in memory decoded.
        ``channels``: the order of array inputs, as in :meth:`predict`."""
        size = self.batch_size if batch_size is None else batch_size
        if size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {size}", field="batch_size")
        size = min(size, self.batch_size)  # the buffers (and a TensorRT profile) bound it
        results: list[Prediction] = []
        for raw, decoded in self._chunks(images, size, channels):
            probs = self._probabilities([self._resized(img) for img in decoded])
            results.extend(self._predictions(probs, [_source(src) for src in raw],
                                             [self._rect(img) for img in decoded]))
        return results

    # -- faces ------------------------------------------------------------------------------
    def _detector(self, detector: DetectorSpec) -> Any:
        if detector != "haar":
            return make_detector(detector)
        with self._haar_lock:
            if self._haar is None:
                self._haar = HaarDetector()
            return self._haar

    def predict_faces(self, image: ImageInput, detector: DetectorSpec = "haar",
                      margin: float | None = None, channels: str = "RGB"
                      ) -> list[FacePrediction]:
        """Detect faces in a photo, crop each (its box enlarged by ``margin`` on every side,
        squared; default: the model's training margin), predict each crop.

        ``detector``: ``"haar"`` (OpenCV, the ``detect`` extra) or a callable ``rgb ->
        [(x, y, w, h), ...]`` taking an HxWx3 uint8 RGB array (a ``channels="BGR"`` array is
        converted before the detector sees it). Faces come largest first; an image without a
        face gives ``[]``. A model that sees the whole photo (its preprocessing's ``frame`` is
        ``photo``, e.g. the FRL net) takes no face box: :meth:`predict` it instead.
        """
        pre = self.preprocess
        if pre.frame == "photo":
            raise ConfigError("this model sees the whole photo (frame 'photo'), not face "
                              "crops: predict the photo without face detection",
                              field="detect")
        if margin is not None:
            if not (math.isfinite(margin) and margin >= 0):
                raise ConfigError(f"margin must be a number >= 0, got {margin}", field="margin")
            pre = dataclasses.replace(pre, margin=float(margin))
        decoded = decode(image, channels=channels)
        rgb = as_array(decoded)
        height, width = rgb.shape[:2]
        boxes = check_boxes(self._detector(detector)(rgb), width, height)
        pil = as_pil(decoded)
        source = _source(image)
        faces: list[FacePrediction] = []
        for start in range(0, len(boxes), self.batch_size):
            part = boxes[start:start + self.batch_size]
            probs = self._probabilities([self._resized(pil, box, pre) for box in part])
            preds = self._predictions(probs, [source] * len(part),
                                      [self._rect(rgb, box, pre) for box in part])
            faces.extend(FacePrediction(box, pred) for box, pred in zip(part, preds, strict=True))
        return faces


def check_floor(floor: float) -> float:
    """``floor`` if it is a fraction in [0, 1], else a one-line ConfigError."""
    if isinstance(floor, bool) or not isinstance(floor, numbers.Real) or not (
            math.isfinite(floor) and 0.0 <= floor <= 1.0):
        raise ConfigError(f"must be a fraction between 0 and 1 (0.6 = 60% validation balanced "
                          f"accuracy), not {floor!r}", field="reliability_floor")
    return float(floor)
