"""facedistill.bench.accuracy (torch-free scoring shared by export and bench) and the INT8
calibration sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facedistill.errors import UserError


def test_split_images_matches_the_partition(tiny_synth: Path) -> None:
    from facedistill.attributes import ATTRIBUTES
    from facedistill.bench.accuracy import split_images
    from facedistill.data.celeba import CelebAIndex

    index = CelebAIndex.load(tiny_synth)
    for split, expected in index.split_sizes().items():
        paths, labels, names = split_images(tiny_synth, split)
        assert len(paths) == expected == labels.shape[0]
        assert names == list(ATTRIBUTES)
        assert labels.dtype == np.int8 and set(np.unique(labels)) <= {0, 1}
        assert paths.boxes is None
        pos = index.select(split)
        assert [p.name for p in paths] == [index.names[i] for i in pos]
        np.testing.assert_array_equal(labels, index.attrs[pos])
    with pytest.raises(UserError, match="unknown split"):
        split_images(tiny_synth, "holdout")


def test_predict_images_preprocesses_in_order(tiny_synth: Path) -> None:
    from facedistill.bench.accuracy import predict_images, split_images
    from facedistill.data.celeba import load_image
    from facedistill.runtime.preprocess import Preprocess

    paths, _, _ = split_images(tiny_synth, "val")
    pre = Preprocess(size=(24, 20))
    seen: list[int] = []

    def run_batch(x: np.ndarray) -> np.ndarray:
        seen.append(x.shape[0])
        assert x.dtype == np.float32 and x.shape[1:] == (3, 24, 20)
        return x.mean(axis=(2, 3))

    ticks: list[tuple[int, int]] = []
    got = predict_images(run_batch, pre, paths, batch_size=20,
                         progress=lambda d, t: ticks.append((d, t)))
    assert seen == [20, 20, 7]
    assert ticks == [(20, 47), (40, 47), (47, 47)]
    want = np.stack([pre(load_image(p)).mean(axis=(1, 2)) for p in paths])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_wild_faces_are_cropped_by_their_box(tmp_path: Path) -> None:
    from facedistill.bench.accuracy import ImageList, predict_images, split_images
    from facedistill.data.celeba import CelebAIndex, load_image
    from facedistill.data.synth import SynthConfig, generate
    from facedistill.runtime.preprocess import Preprocess

    root = tmp_path / "wild"
    generate(root, SynthConfig(n=40, size=32, seed=5, images_per_identity=8, wild=True),
             workers=1)
    index = CelebAIndex.load(root, variant="wild")
    paths, labels, _ = split_images(root, "all", variant="wild")
    assert isinstance(paths, ImageList) and paths.boxes is not None
    np.testing.assert_array_equal(paths.boxes, index.bbox)
    assert all(p.parent.name == "img_celeba" for p in paths)
    pre = Preprocess(size=(32, 32), margin=0.2)
    got = predict_images(lambda x: x.reshape(len(x), -1), pre, paths, batch_size=16)
    for i in (0, 17, 39):
        crop = pre(load_image(paths[i]), index.bbox[i].tolist())
        np.testing.assert_array_equal(got[i], crop.reshape(-1))
    whole = pre(load_image(paths[0])).reshape(-1)
    assert not np.array_equal(got[0], whole)  # the box matters
    # the INT8 calibration sample keeps each image's box
    from facedistill.export.quantize import calibration_images

    sample = calibration_images(root, 5, variant="wild", split="all", seed=3)
    rows = [index.names.index(p.name) for p in sample]
    np.testing.assert_array_equal(sample.boxes, index.bbox[rows])
    # the same crops when the boxes are passed explicitly with a plain list
    again = predict_images(lambda x: x.reshape(len(x), -1), pre, list(paths)[:3],
                           boxes=paths.boxes[:3])
    np.testing.assert_array_equal(again, got[:3])


def test_balanced_accuracy_by_hand() -> None:
    from facedistill.bench.accuracy import balanced_accuracy

    probs = np.array([[0.9, 0.2], [0.6, 0.8], [0.4, 0.7], [0.1, 0.9]], dtype=np.float32)
    labels = np.array([[1, 0], [1, 0], [0, 0], [0, 0]], dtype=np.int8)
    res = balanced_accuracy(probs, labels, [0.5, 0.75], ["A", "B"])
    a, b = res["attributes"]
    # A: TP 2/2, TN 2/2 -> 1.0; B: no positives, TN = 2/4 (0.2, 0.7 below 0.75) -> 0.5
    assert (a["balanced"], a["tpr"], a["tnr"], a["n_pos"]) == (1.0, 1.0, 1.0, 2)
    assert b["balanced"] == 0.5 and b["tpr"] is None and b["tnr"] == 0.5 and b["n_pos"] == 0
    assert res["mean_balanced"] == 0.75 and res["n_images"] == 4
    assert res["mean_accuracy"] == pytest.approx((1.0 + 0.5) / 2)
    # thresholds are inclusive: probability == threshold is positive
    res = balanced_accuracy(np.array([[0.5], [0.49]]), np.array([[1], [0]]), [0.5], ["A"])
    assert res["mean_balanced"] == 1.0
    with pytest.raises(UserError, match="2 attributes but 1 thresholds"):
        balanced_accuracy(probs, labels, [0.5], ["A", "B"])


def test_calibration_sample_is_seeded_and_from_train(tiny_synth: Path) -> None:
    from facedistill.bench.accuracy import split_images
    from facedistill.export.quantize import calibration_images

    train, _, _ = split_images(tiny_synth, "train")
    a = calibration_images(tiny_synth, 50, seed=0)
    b = calibration_images(tiny_synth, 50, seed=0)
    c = calibration_images(tiny_synth, 50, seed=1)
    assert list(a) == list(b) and list(a) != list(c)
    assert len(a) == len(set(a)) == 50 and set(a) <= set(train)
    assert list(a) == sorted(a, key=list(train).index)  # dataset order
    assert list(calibration_images(tiny_synth, 10_000)) == list(train)  # all when fewer
    with pytest.raises(UserError) as err:
        calibration_images(tiny_synth, 0)
    assert err.value.field == "calib_n"


def test_calibration_reader_chunks() -> None:
    from facedistill.export.quantize import CalibrationReader

    images = np.arange(100 * 3 * 2 * 2, dtype=np.float32).reshape(100, 3, 2, 2)
    reader = CalibrationReader(images, batch_size=32)
    assert len(reader) == 4 and reader.stride() == 4  # 128 images per collection
    batches = [reader.get_next() for _ in range(5)]
    # equal batches (ORT's histogram calibrators stack them): the last one is filled up with
    # the first images again
    assert [b["input"].shape[0] for b in batches[:4]] == [32, 32, 32, 32] and reader.padded == 28
    np.testing.assert_array_equal(batches[3]["input"][:4], images[96:])
    np.testing.assert_array_equal(batches[3]["input"][4:], images[:28])
    assert batches[4] is None
    few = CalibrationReader(images[:20], batch_size=32)
    assert len(few) == 1 and few.get_next()["input"].shape[0] == 20 and few.padded == 0
    reader.set_range(1, 3)
    got = [reader.get_next(), reader.get_next(), reader.get_next()]
    np.testing.assert_array_equal(got[0]["input"], images[32:64])
    assert got[2] is None
    assert CalibrationReader(np.zeros((7 * 32, 3, 2, 2), np.float32)).stride() == 1  # prime
    assert CalibrationReader(np.zeros((16 * 32, 3, 2, 2), np.float32)).stride() == 4
