"""Runtime preprocessing: colour handling, crops, normalisation and its record."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facedistill.runtime.preprocess import (
    DEFAULT_MEAN,
    DEFAULT_STD,
    Preprocess,
    crop_with_margin,
    to_rgb,
)


def test_normalises_to_chw_float32() -> None:
    rgb = np.zeros((8, 6, 3), np.uint8)
    rgb[..., 0] = 255
    out = Preprocess(size=(8, 6))(Image.fromarray(rgb))
    assert out.shape == (3, 8, 6) and out.dtype == np.float32
    expected = (np.array([1.0, 0.0, 0.0]) - DEFAULT_MEAN) / DEFAULT_STD
    np.testing.assert_allclose(out[:, 0, 0], expected, rtol=1e-6)


def test_resizes_to_height_width() -> None:
    img = Image.new("RGB", (40, 20), (10, 20, 30))
    assert Preprocess(size=(16, 12))(img).shape == (3, 16, 12)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "I;16", "CMYK"])
def test_any_mode_becomes_rgb(mode: str) -> None:
    base = Image.new("RGB", (5, 5), (200, 100, 50))
    img = base.convert("L").convert("I;16") if mode == "I;16" else base.convert(mode)
    out = to_rgb(img)
    assert out.mode == "RGB" and out.size == (5, 5)


def test_16_bit_grey_is_scaled_not_clipped() -> None:
    arr = np.full((4, 4), 65535, np.uint16)
    out = np.asarray(to_rgb(Image.fromarray(arr)))
    assert out.min() == 255


def test_transparent_pixels_go_black() -> None:
    img = Image.new("RGBA", (3, 3), (255, 255, 255, 0))
    assert np.asarray(to_rgb(img)).max() == 0


def test_crop_with_margin_is_square_and_pads_outside() -> None:
    img = Image.new("RGB", (100, 80), (255, 0, 0))
    crop = crop_with_margin(img, (10, 10, 20, 40), margin=0.25)
    assert crop.size == (60, 60)  # height 40 * 1.5 = 60, squared
    corner = crop_with_margin(img, (0, 0, 20, 20), margin=0.5)
    arr = np.asarray(corner)
    assert arr[0, 0].tolist() == [0, 0, 0] and arr[-1, -1].tolist() == [255, 0, 0]
    with pytest.raises(ValueError, match="non-positive"):
        crop_with_margin(img, (0, 0, 0, 5), 0.1)


def test_record_round_trip() -> None:
    pre = Preprocess(size=(32, 24), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                     interpolation="bicubic", margin=0.3)
    rec = pre.to_record()
    assert Preprocess.from_record(rec) == pre
    with pytest.raises(ValueError, match="unknown preprocessing record"):
        Preprocess.from_record({**rec, "name": "other"})


def test_photo_frame_pads_the_whole_photo_to_a_square_and_ignores_the_box() -> None:
    """A tall photo (40 x 80) goes in whole: centred, black bars left and right, no stretch;
    a face model's record is what it was before the frame existed."""
    img = Image.new("RGB", (40, 80), (255, 255, 255))
    pre = Preprocess(size=(16, 16), frame="photo", interpolation="nearest")
    out = np.asarray(pre.resize(img, box=(0, 0, 10, 10)))
    assert out.shape == (16, 16, 3)
    assert (out[:, :4] == 0).all() and (out[:, -4:] == 0).all() and (out[:, 4:12] == 255).all()
    assert Preprocess.from_record(pre.to_record()) == pre
    assert pre.to_record()["frame"] == "photo" and "frame" not in Preprocess().to_record()
    assert Preprocess.from_record(Preprocess().to_record()).frame == "face"


@pytest.mark.parametrize("kwargs", [{"interpolation": "fancy"}, {"size": (0, 4)},
                                    {"std": (1.0, 0.0, 1.0)}, {"color": "BGR"},
                                    {"frame": "body"}])
def test_bad_settings_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Preprocess(**kwargs)
