"""Every kind of image a face app hands over, turned into what the preprocessing expects.

Accepted inputs (:data:`ImageInput`):

=====================================  =============================================================
input                                  how it is read
=====================================  =============================================================
``str`` / ``os.PathLike``              a file PIL can decode (JPEG, PNG, WebP, BMP, TIFF, ...);
                                       the EXIF orientation tag is applied (phone photos come upright)
``bytes`` / ``bytearray`` /            an encoded file in memory (e.g. an HTTP upload), read as a file
``memoryview``
``PIL.Image.Image``                    any mode, used as given (no EXIF rotation): 8-bit RGB as is;
                                       L/P/CMYK/... converted by PIL; alpha (RGBA, LA, PA) composited
                                       on black; 16-bit grey (``I;16``) scaled by 255/65535
``numpy.ndarray``                      channel order as ``channels`` says: ``"RGB"`` (the default)
                                       or ``"BGR"`` (OpenCV's ``imread`` / ``VideoCapture``; flipped
                                       to RGB here); dtype ``uint8`` (0-255) or ``uint16``
                                       (0-65535, scaled by 255/65535 and rounded); shape ``HxWx3``
                                       (RGB/BGR), ``HxW`` or ``HxWx1`` (grey, copied to the 3
                                       channels) or ``HxWx4`` (RGBA/BGRA, composited on black like a
                                       PIL RGBA image)
=====================================  =============================================================

An array does not say its channel order, so it is an argument (``channels``, everywhere an
array is accepted); it applies to arrays only: files, bytes and PIL images know their own.
A BGR array read as RGB gives wrong answers without any error (probabilities moved by up to
0.76 on a demo model, 0.53 on the tests' tiny one): say ``channels="BGR"`` for OpenCV frames.

Anything else (float arrays, ``HxWx5``, an empty array, a file that is not an image, a truncated
JPEG) raises :class:`~facedistill.runtime.errors.ImageError` naming the file, or the image's
position for in-memory inputs (``<array #3>``). Floats are refused rather than guessed at: scale
them yourself, e.g. ``(x * 255).round().astype(np.uint8)`` for values in [0, 1].

Each conversion equals the corresponding PIL conversion in
:func:`facedistill.runtime.preprocess.to_rgb`, so an array and the same picture as a PIL image
give the same model input.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import threading
import warnings
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facedistill.errors import ConfigError
from facedistill.runtime.errors import ImageError
from facedistill.runtime.preprocess import to_rgb

ImageInput = str | os.PathLike[str] | bytes | bytearray | memoryview | Image.Image | np.ndarray
"""What :meth:`~facedistill.runtime.predictor.Predictor.predict` accepts (see the table above)."""

#: Either an RGB HxWx3 uint8 array (the fast path: no PIL round trip) or a decoded PIL image.
Decoded = np.ndarray | Image.Image

#: The channel orders an array input may have (:func:`check_channels`).
CHANNELS = ("RGB", "BGR")


def check_channels(channels: str) -> str:
    """``channels`` if it is ``"RGB"`` or ``"BGR"``, else a one-line ConfigError."""
    if channels not in CHANNELS:
        raise ConfigError(f"must be 'RGB' or 'BGR' (the channel order of array inputs), not "
                          f"{channels!r}", field="channels")
    return channels

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)

DEFAULT_MAX_PIXELS = 64_000_000  # 8000 x 8000; a 12000 x 12000 JPEG took 5.2 GB with --detect


def max_pixels() -> int:
    """The pixel budget of one decoded image: ``FACEDISTILL_MAX_PIXELS`` (default 64 Mpx).
    Larger files are refused before they are decoded, by every reader (training, bench,
    export's calibration, predict)."""
    raw = os.environ.get("FACEDISTILL_MAX_PIXELS")
    if raw is None:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw)
        if value < 1:
            raise ValueError
    except ValueError:
        raise ConfigError(f"must be a whole number of pixels >= 1, not {raw!r}",
                          field="FACEDISTILL_MAX_PIXELS") from None
    return value


_FD_LOCK = threading.Lock()


@contextlib.contextmanager
def _c_stderr_captured(notes: list[str]) -> Iterator[None]:
    """Route file descriptor 2 to a scratch file while the body runs and put what landed
    there into ``notes``. libtiff, which PIL calls for compressed TIFFs, prints its decoding
    complaints ("ZIPDecode: Decoding error at scanline 0") straight to the C stderr, past
    Python; they become part of the one-line error instead. Process-wide, so it is held only
    around a TIFF's decode, under a lock."""
    with _FD_LOCK, tempfile.TemporaryFile() as scratch:
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all: nothing to keep quiet
            yield
            return
        try:
            os.dup2(scratch.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            scratch.seek(0)
            text = scratch.read(4096).decode("utf-8", "replace")
            notes.extend(line.strip() for line in text.splitlines() if line.strip())


def describe(src: object, index: int | None = None) -> str:
    """How errors name an image: its path, else ``<array>``/``<bytes>``/``<PIL image>`` and its
    position in a batch."""
    if isinstance(src, (str, os.PathLike)):
        return os.fspath(src)
    if isinstance(src, np.ndarray):
        kind = "array"
    elif isinstance(src, Image.Image):
        kind = "PIL image"
    elif isinstance(src, (bytes, bytearray, memoryview)):
        kind = "bytes"
    else:
        kind = type(src).__name__
    return f"<{kind}>" if index is None else f"<{kind} #{index}>"


def _open(fp: str | os.PathLike[str] | io.BytesIO, where: str) -> Image.Image:
    """Decode one encoded image: the pixel budget checked on the header first, then the
    pixels, then the EXIF orientation applied. Every file reader of the project uses this."""
    img = None
    notes: list[str] = []  # what libtiff printed while decoding, if it did
    budget = max_pixels()
    try:
        with warnings.catch_warnings():
            # the budget below says it in one line instead; PIL's own warnings about a damaged
            # file (TIFF "Truncated File Read", bad EXIF) are stderr noise: the image either
            # decodes or is an ImageError naming it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
            img = Image.open(fp)
            if img.width * img.height > budget:
                w, h = img.width, img.height
                img.close()
                raise ImageError(f"image is {w}x{h} ({w * h / 1e6:.3g} Mpx), over the "
                                 f"{budget / 1e6:g} Mpx budget (FACEDISTILL_MAX_PIXELS)",
                                 path=where)
            if img.format == "TIFF":
                with _c_stderr_captured(notes):
                    img.load()
            else:
                img.load()
    except FileNotFoundError:
        raise ImageError("no such image file", path=where) from None
    except IsADirectoryError:
        raise ImageError("is a folder, not an image file", path=where) from None
    except PermissionError as exc:
        raise ImageError(f"cannot read image file: {exc.strerror}", path=where) from None
    except UnidentifiedImageError:
        raise ImageError("not an image file PIL can read (unknown format or corrupt header)",
                         path=where) from None
    except _DECODE_ERRORS as exc:
        if img is not None:
            img.close()
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if notes:  # libtiff's own words say more than PIL's "decoder error -2"
            reason = f"{reason} ({notes[0].removeprefix('tempfile.tif: ')})"
        raise ImageError(f"cannot decode image: {reason}", path=where) from None
    try:
        ImageOps.exif_transpose(img, in_place=True)
    except _DECODE_ERRORS + (KeyError, TypeError):  # malformed EXIF: keep the stored pixels
        pass
    return img


def _from_array(arr: np.ndarray, index: int | None, channels: str = "RGB") -> Decoded:
    if channels == "BGR" and arr.ndim == 3 and arr.shape[-1] in (3, 4):
        # BGR(A) -> RGB(A), a contiguous copy; grey has no order to change
        arr = np.ascontiguousarray(arr[..., [2, 1, 0, 3][: arr.shape[-1]]])
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3 and arr.size:
        return arr  # the common case, checked first: RGB uint8 is used as it is
    where = describe(arr, index)
    if arr.dtype not in (np.uint8, np.uint16):
        raise ImageError(
            f"array dtype {arr.dtype} is not supported: pass uint8 (0-255) or uint16 (0-65535) "
            "RGB, e.g. (x * 255).round().astype(np.uint8) for floats in [0, 1]", path=where)
    shape = arr.shape
    if not (arr.ndim == 2 or (arr.ndim == 3 and shape[2] in (1, 3, 4))):
        raise ImageError(
            f"array of shape {shape} is not an image: expected HxWx3 (RGB), HxW or HxWx1 "
            "(grey) or HxWx4 (RGBA)", path=where)
    if arr.size == 0:
        raise ImageError(f"empty image (shape {shape})", path=where)
    if arr.dtype == np.uint16:  # the same scaling as to_rgb applies to 16-bit PIL images
        arr = np.clip(np.round(arr / 65535.0 * 255.0), 0, 255).astype(np.uint8)
    if arr.ndim == 3 and shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:  # grey: PIL's L -> RGB copies the value to the three channels
        return np.repeat(arr[:, :, None], 3, axis=2)
    if shape[2] == 4:
        return to_rgb(Image.fromarray(np.ascontiguousarray(arr)))
    return arr


def decode(src: ImageInput, index: int | None = None, channels: str = "RGB") -> Decoded:
    """Read one input (see the module table) into an RGB uint8 array or a PIL image.

    ``index`` is the image's position in a batch, used to name in-memory inputs in errors;
    ``channels`` the channel order of an array input (``"RGB"`` or ``"BGR"``; others ignore it).
    """
    if isinstance(src, np.ndarray):
        return _from_array(src, index, check_channels(channels))
    if isinstance(src, Image.Image):
        try:
            src.load()
        except _DECODE_ERRORS as exc:
            raise ImageError(f"cannot decode image: {exc}", path=describe(src, index)) from None
        return src
    if isinstance(src, (str, os.PathLike)):
        return _open(src, os.fspath(src))
    if isinstance(src, (bytes, bytearray, memoryview)):
        where = describe(src, index)
        if len(src) == 0:
            raise ImageError("empty bytes: no image data", path=where)
        return _open(io.BytesIO(bytes(src)), where)
    raise ImageError(
        f"cannot read a {type(src).__name__} as an image: pass a path, bytes, a PIL image or "
        "an HxWx3 uint8 RGB array", path=describe(src, index))


def as_pil(img: Decoded) -> Image.Image:
    """A decoded image as an 8-bit RGB PIL image."""
    if isinstance(img, np.ndarray):
        return Image.fromarray(np.ascontiguousarray(img))
    return to_rgb(img)


def as_array(img: Decoded) -> np.ndarray:
    """A decoded image as an HxWx3 uint8 RGB array."""
    if isinstance(img, np.ndarray):
        return img
    return np.asarray(to_rgb(img))


def open_image(path: str | os.PathLike[str]) -> Image.Image:
    """One image file, decoded (pixel budget, EXIF orientation), in its own mode."""
    return _open(path, os.fspath(path))


def load_image(src: ImageInput, channels: str = "RGB") -> Image.Image:
    """Any accepted input as an 8-bit RGB PIL image (for drawing, cropping, saving);
    ``channels``: the order of an array input."""
    return as_pil(decode(src, channels=channels))


def load_rgb(src: ImageInput, channels: str = "RGB") -> np.ndarray:
    """Any accepted input as an HxWx3 uint8 RGB array (e.g. for a face detector);
    ``channels``: the order of an array input."""
    return as_array(decode(src, channels=channels))
