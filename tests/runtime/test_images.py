"""Runtime image inputs: every accepted kind, their conversions, and clear errors for bad ones."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facedistill.errors import UserError
from facedistill.runtime.errors import ImageError
from facedistill.runtime.images import decode, describe, load_image, load_rgb
from facedistill.runtime.preprocess import to_rgb


def _photo() -> np.ndarray:
    from skimage import data

    return data.astronaut()[100:260:2, 150:310:2]  # an 80x80 RGB crop around the face


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_rgb_uint8_array_is_used_as_is() -> None:
    arr = _photo()
    assert decode(arr) is arr


@pytest.mark.parametrize("shape", [(80, 80), (80, 80, 1)])
def test_grey_arrays_are_copied_to_three_channels(shape: tuple[int, ...]) -> None:
    grey = _photo()[..., 1].reshape(shape)
    rgb = load_rgb(grey)
    assert rgb.shape == (80, 80, 3) and rgb.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], grey.reshape(80, 80))
    # the same as PIL's grey -> RGB on the same picture
    np.testing.assert_array_equal(rgb, np.asarray(to_rgb(Image.fromarray(grey.reshape(80, 80)))))


def test_rgba_array_is_composited_on_black_like_pil() -> None:
    rgba = np.dstack([_photo(), np.tile(np.linspace(0, 255, 80).astype(np.uint8), (80, 1))])
    rgb = load_rgb(rgba)
    assert rgb.shape == (80, 80, 3)
    np.testing.assert_array_equal(rgb, np.asarray(to_rgb(Image.fromarray(rgba))))
    assert rgb[:, 0].max() == 0  # alpha 0 in the first column -> black
    np.testing.assert_array_equal(rgb[:, -1], _photo()[:, -1])  # alpha 255 -> unchanged


def test_uint16_arrays_are_scaled_by_255_over_65535() -> None:
    rgb16 = _photo().astype(np.uint16) * 257  # 8-bit value v -> 16-bit v * 257
    np.testing.assert_array_equal(load_rgb(rgb16), _photo())
    grey16 = np.array([[0, 128, 32768, 65535]], np.uint16)
    np.testing.assert_array_equal(load_rgb(grey16)[0, :, 0], [0, 0, 128, 255])
    # a 16-bit PIL image of the same values gives the same pixels
    np.testing.assert_array_equal(load_rgb(grey16), np.asarray(to_rgb(Image.fromarray(grey16))))


def test_files_bytes_and_pil_images_decode_to_the_same_pixels(tmp_path: Path) -> None:
    img = Image.fromarray(_photo())
    png = tmp_path / "face.png"
    img.save(png)
    expected = _photo()
    np.testing.assert_array_equal(load_rgb(png), expected)
    np.testing.assert_array_equal(load_rgb(str(png)), expected)
    np.testing.assert_array_equal(load_rgb(png.read_bytes()), expected)
    np.testing.assert_array_equal(load_rgb(bytearray(png.read_bytes())), expected)
    np.testing.assert_array_equal(load_rgb(memoryview(png.read_bytes())), expected)
    np.testing.assert_array_equal(load_rgb(img), expected)
    jpeg = load_rgb(_encode(img, "JPEG", quality=95))
    assert jpeg.shape == expected.shape
    assert np.abs(jpeg.astype(int) - expected).mean() < 4  # lossy, but the same picture


def test_16_bit_png_and_grey_and_palette_files(tmp_path: Path) -> None:
    grey = _photo()[..., 0]
    path16 = tmp_path / "deep.png"
    Image.fromarray(grey.astype(np.uint16) * 257).save(path16)
    assert Image.open(path16).mode.startswith("I")
    np.testing.assert_array_equal(load_rgb(path16)[..., 2], grey)
    pal = Image.fromarray(_photo()).convert("P")
    assert load_image(_encode(pal, "PNG")).mode == "RGB"
    la = Image.fromarray(grey).convert("LA")
    assert load_rgb(_encode(la, "PNG")).shape == (80, 80, 3)


def test_exif_orientation_is_applied_to_files_not_to_pil_images() -> None:
    img = Image.fromarray(_photo()[:, :60])  # 60 wide, 80 high
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = _encode(img, "JPEG", exif=exif, quality=95)
    assert load_rgb(data).shape == (60, 80, 3)  # shown upright: now 80 wide
    raw = Image.open(io.BytesIO(data))
    assert load_rgb(raw).shape == (80, 60, 3)  # a PIL image is taken as given


@pytest.mark.parametrize("bad, message", [
    (np.zeros((8, 8, 3), np.float64), "dtype float64 is not supported"),
    (np.zeros((8, 8, 3), np.int32), "dtype int32 is not supported"),
    (np.zeros((8, 8, 5), np.uint8), r"shape \(8, 8, 5\) is not an image"),
    (np.zeros((2, 8, 8, 3), np.uint8), "is not an image"),
    (np.zeros((0, 8, 3), np.uint8), "empty image"),
    (b"", "empty bytes"),
    (b"GIF89a not really", "not an image file"),
    (12345, "cannot read a int as an image"),
])
def test_bad_in_memory_inputs_name_their_position(bad: object, message: str) -> None:
    with pytest.raises(ImageError, match=message) as err:
        decode(bad, index=3)  # type: ignore[arg-type]
    assert str(err.value).startswith(f"{describe(bad, 3)}: ")
    assert "#3" in str(err.value) and "\n" not in str(err.value)


def test_bad_files_name_the_file(tmp_path: Path) -> None:
    good = _encode(Image.fromarray(_photo()), "JPEG", quality=90)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good[: len(good) // 2])
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a picture\n")
    cases = [(truncated, "cannot decode image: image file is truncated"),
             (text, "not an image file PIL can read"),
             (tmp_path / "missing.jpg", "no such image file"),
             (tmp_path, "is a folder")]
    for path, message in cases:
        with pytest.raises(ImageError, match=message) as err:
            decode(path)
        assert isinstance(err.value, UserError)
        assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


@pytest.mark.parametrize("compression", ["tiff_lzw", "tiff_adobe_deflate"])
def test_damaged_compressed_tiff_is_one_error_and_no_libtiff_stderr(
        tmp_path: Path, capfd: pytest.CaptureFixture[str], compression: str) -> None:
    """libtiff prints its decode complaints to the C stderr ("ZIPDecode: Decoding error at
    scanline 0"); they belong in the one-line error, not on the terminal (defect 16)."""
    raw = bytearray(_encode(Image.fromarray(_photo()), "TIFF", compression=compression))
    ifd = int.from_bytes(raw[4:8], "little")  # the strips lie between the header and the IFD
    for i in range(16, ifd - 16, 7):
        raw[i] ^= 0x5A
    bad = tmp_path / "damaged.tif"
    bad.write_bytes(bytes(raw))
    good = tmp_path / "good.tif"
    good.write_bytes(_encode(Image.fromarray(_photo()), "TIFF", compression=compression))
    capfd.readouterr()
    with pytest.raises(ImageError, match=r"cannot decode image: .*\(.*Decod|code not yet") as err:
        decode(bad)
    assert str(err.value).startswith(f"{bad}: ") and "\n" not in str(err.value)
    assert np.asarray(load_rgb(good)).shape[2] == 3
    out, errs = capfd.readouterr()
    assert (out, errs) == ("", "")
