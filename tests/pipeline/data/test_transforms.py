"""Train/eval transforms: eval equals the runtime's preprocessing; augmentation is seeded."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from facedistill.pipeline.data.transforms import Augment, build_transform, transform_from_record
from facedistill.runtime.preprocess import Preprocess


def _photo(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(50, 40, 3), dtype=np.uint8))


def test_eval_transform_is_the_runtime_preprocess() -> None:
    img = _photo()
    tf = build_transform(32)
    out = tf(img)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    np.testing.assert_array_equal(out.numpy(), Preprocess(size=(32, 32))(img))


def test_train_transform_with_no_augmentation_matches_eval() -> None:
    img = _photo(1)
    none = Augment(hflip=0, translate=0, brightness=0, contrast=0)
    train = build_transform(24, train=True, augment=none)
    np.testing.assert_allclose(train(img).numpy(), build_transform(24)(img).numpy(), atol=1e-6)


def test_augmentation_is_random_but_seeded() -> None:
    img = _photo(2)
    tf = build_transform(24, train=True)
    torch.manual_seed(0)
    a = [tf(img) for _ in range(4)]
    torch.manual_seed(0)
    b = [tf(img) for _ in range(4)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], a[1])


def test_flip_only_mirrors() -> None:
    img = _photo(3)
    tf = build_transform(16, train=True, augment=Augment(hflip=1.0, translate=0, brightness=0,
                                                         contrast=0))
    np.testing.assert_allclose(tf(img).numpy(), build_transform(16)(img).numpy()[..., ::-1],
                               atol=1e-6)


def test_record_round_trip_and_train_switch() -> None:
    tf = build_transform((32, 24), train=True, margin=0.3)
    rec = tf.to_record()
    assert rec["preprocess"]["size"] == [32, 24] and rec["augment"]["hflip"] == 0.5
    same = transform_from_record(rec)
    assert same.preprocess == tf.preprocess and same.augment == tf.augment
    assert transform_from_record(rec, train=False).augment is None
    assert transform_from_record(build_transform(8).to_record(), train=True).augment == Augment()


def test_box_crops_before_resizing() -> None:
    img = Image.new("RGB", (100, 100), (0, 0, 255))
    img.paste((255, 0, 0), (40, 40, 60, 60))
    out = build_transform(8, margin=0.0)(img, box=(40, 40, 20, 20))
    red = (1.0 - 0.485) / 0.229
    np.testing.assert_allclose(out[0].numpy(), red, atol=1e-5)


def _reference_augment(aug: Augment, x: torch.Tensor) -> torch.Tensor:
    """The augmentation written independently with torch ops on a CHW tensor (replicate-padded
    shift), drawing the same random numbers in the same order."""
    if torch.rand(()) < aug.hflip:
        x = torch.flip(x, dims=(-1,))
    _, h, w = x.shape
    my, mx = round(aug.translate * h), round(aug.translate * w)
    dy, dx = int(torch.randint(-my, my + 1, ())), int(torch.randint(-mx, mx + 1, ()))
    padded = torch.nn.functional.pad(x[None], (mx, mx, my, my), mode="replicate")[0]
    x = padded[:, my + dy: my + dy + h, mx + dx: mx + dx + w]
    x = x * (1.0 + (torch.rand(()) * 2 - 1) * aug.brightness)
    factor = 1.0 + (torch.rand(()) * 2 - 1) * aug.contrast
    gray = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).mean()
    return ((x - gray) * factor + gray).clamp(0.0, 1.0)


def test_augmentation_matches_an_independent_torch_version_draw_for_draw() -> None:
    aug = Augment(hflip=0.5, translate=0.2, brightness=0.4, contrast=0.4)
    rng = np.random.default_rng(0)
    for seed in range(20):
        x = torch.from_numpy(rng.random((3, 20, 20), dtype=np.float32))
        before = x.clone()
        torch.manual_seed(seed)
        got = aug(x)
        torch.manual_seed(seed)
        want = _reference_augment(aug, x)
        torch.testing.assert_close(got, want, rtol=0, atol=2e-6)
        assert torch.equal(x, before)  # the input is not written
        assert got.dtype == torch.float32 and got.shape == x.shape
