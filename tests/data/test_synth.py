"""The synthetic dataset generator: determinism, format, splits, labels, atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facedistill.attributes import (
    ATTRIBUTES,
    CELEBA_PREVALENCE,
    CELEBA_SPLIT_SIZES,
    EXCLUSIVE_GROUPS,
    INDEX,
    LANDMARK_NAMES,
)
from facedistill.data import synth
from facedistill.data.synth import SynthConfig, generate, plan, sample_labels, split_counts
from facedistill.errors import UserError

SMALL = SynthConfig(n=60, size=32, seed=3, wild=True, images_per_identity=4)


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "small"
    generate(out, SMALL, workers=1)
    return out


def _read_rows(path: Path, header_lines: int) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()[header_lines:]]


def test_writes_celeba_layout(small: Path) -> None:
    names = [f"{i:06d}.jpg" for i in range(1, SMALL.n + 1)]
    attr = small.joinpath("list_attr_celeba.txt").read_text().splitlines()
    assert attr[0] == str(SMALL.n)
    assert attr[1].split() == list(ATTRIBUTES)
    rows = [line.split() for line in attr[2:]]
    assert [r[0] for r in rows] == names
    assert all(len(r) == 41 and set(r[1:]) <= {"-1", "1"} for r in rows)
    part = _read_rows(small / "list_eval_partition.txt", 0)
    assert [r[0] for r in part] == names and {r[1] for r in part} == {"0", "1", "2"}
    marks = " ".join(LANDMARK_NAMES)
    for fname, header in (("list_landmarks_align_celeba.txt", marks),
                          ("list_landmarks_celeba.txt", marks),
                          ("list_bbox_celeba.txt", "image_id x_1 y_1 width height")):
        lines = small.joinpath(fname).read_text().splitlines()
        assert lines[0] == str(SMALL.n) and lines[1] == header
        assert all(len(line.split()) == len(header.split()) + (fname != "list_bbox_celeba.txt")
                   for line in lines[2:])
    for name in names:
        with Image.open(small / "img_align_celeba" / name) as img:
            assert img.format == "JPEG" and img.size == (SMALL.size, SMALL.size)
            img.load()
        with Image.open(small / "img_celeba" / name) as img:
            assert img.width > SMALL.size and img.height > SMALL.size
    manifest = synth.read_manifest(small)
    assert manifest is not None and manifest["config"]["n"] == SMALL.n
    # the folder gets the umask's mode (it is built in a staging folder and renamed)
    umask = os.umask(0)
    os.umask(umask)
    assert small.stat().st_mode & 0o777 == 0o777 & ~umask


def test_same_arguments_give_identical_bytes_whatever_the_workers(
    small: Path, tmp_path: Path
) -> None:
    again = tmp_path / "again"
    generate(again, SMALL, workers=2)  # a process pool, chunks in another order of completion
    assert _digest(again) == _digest(small)


def test_another_seed_gives_other_data(small: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    generate(other, SynthConfig(**{**SMALL.__dict__, "seed": SMALL.seed + 1}), workers=1)
    assert (other / "list_attr_celeba.txt").read_bytes() != (
        small / "list_attr_celeba.txt").read_bytes()
    assert (other / "img_align_celeba/000001.jpg").read_bytes() != (
        small / "img_align_celeba/000001.jpg").read_bytes()


def test_labels_on_disk_equal_sample_labels(small: Path) -> None:
    rows = _read_rows(small / "list_attr_celeba.txt", 2)
    on_disk = (np.array([[int(v) for v in r[1:]] for r in rows]) > 0).astype(np.int8)
    np.testing.assert_array_equal(on_disk, sample_labels(SMALL))


def test_split_counts_follow_celeba() -> None:
    assert split_counts(sum(CELEBA_SPLIT_SIZES)) == CELEBA_SPLIT_SIZES
    train, val, test = split_counts(20_000)
    assert (train, val, test) == (16_068, 1_961, 1_971)
    assert split_counts(3) == (1, 1, 1)


def test_identities_are_disjoint_across_splits_and_photos_share_identity() -> None:
    cfg = SynthConfig(n=2_000, images_per_identity=20)
    partition, identity = plan(cfg)
    sets = [set(identity[partition == s].tolist()) for s in range(3)]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert np.all(np.diff(partition) >= 0)  # contiguous blocks, as in CelebA
    counts = np.bincount(identity)[1:]
    assert 10 <= counts[counts > 0].mean() <= 30


def test_identity_traits_are_stable_within_an_identity() -> None:
    cfg = SynthConfig(n=3_000, images_per_identity=30)
    labels = sample_labels(cfg)
    _, identity = plan(cfg)
    for name in ("Male", "Young", "Bald", "Gray_Hair", "Black_Hair", "Chubby"):
        col = labels[:, INDEX[name]]
        per_id = [col[identity == i] for i in np.unique(identity)]
        assert all(len(set(v.tolist())) == 1 for v in per_id), name  # never flips
    # per-image attributes do vary within an identity
    smiles = [labels[identity == i, INDEX["Smiling"]] for i in np.unique(identity)]
    assert np.mean([0 < s.mean() < 1 for s in smiles if len(s) > 5]) > 0.9


def test_exclusive_groups_never_violated() -> None:
    labels = sample_labels(SynthConfig(n=6_000, images_per_identity=3))
    for group in EXCLUSIVE_GROUPS:
        cols = [INDEX[a] for a in group]
        assert labels[:, cols].sum(axis=1).max() <= 1, group
    male = labels[:, INDEX["Male"]] == 1
    assert labels[male, INDEX["Heavy_Makeup"]].sum() == 0
    assert labels[~male, INDEX["Goatee"]].sum() == 0 and labels[~male, INDEX["Bald"]].sum() == 0


@pytest.mark.parametrize(
    "cfg",
    [SynthConfig(n=4_000, images_per_identity=2), SynthConfig()],  # many identities; the demo's
    ids=["4000-images", "demo-default"],
)
def test_prevalence_within_5_points_of_celeba(cfg: SynthConfig) -> None:
    prevalence = sample_labels(cfg).mean(axis=0) * 100
    off = {a: round(float(p - CELEBA_PREVALENCE[a]), 2) for a, p in zip(ATTRIBUTES, prevalence,
                                                                        strict=True)}
    assert max(abs(v) for v in off.values()) <= 5.0, off


def test_plausible_correlations() -> None:
    labels = sample_labels(SynthConfig(n=6_000, images_per_identity=3)).astype(bool)

    def p(a: str, given: str, value: bool = True) -> float:
        mask = labels[:, INDEX[given]] == value
        return float(labels[mask, INDEX[a]].mean())

    assert p("Gray_Hair", "Young", False) > 5 * p("Gray_Hair", "Young", True)
    assert p("Wearing_Lipstick", "Male", False) > 0.6 > 0.05 > p("Wearing_Lipstick", "Male")
    assert p("High_Cheekbones", "Smiling") > 2 * p("High_Cheekbones", "Smiling", False)
    assert p("Mouth_Slightly_Open", "Smiling") > 2 * p("Mouth_Slightly_Open", "Smiling", False)
    assert p("Double_Chin", "Chubby") > 5 * p("Double_Chin", "Chubby", False)


def test_geometry_of_landmarks_and_boxes(small: Path) -> None:
    marks = np.array([[int(v) for v in r[1:]] for r in _read_rows(
        small / "list_landmarks_align_celeba.txt", 2)])
    lx, ly, rx, ry, nx, ny, mlx, mly, mrx, mry = marks.T
    assert np.all(lx < rx) and np.all(mlx < mrx)
    assert np.all(np.maximum(ly, ry) < ny) and np.all(ny < np.minimum(mly, mry))
    assert marks.min() >= 0 and marks.max() < SMALL.size
    boxes = np.array([[int(v) for v in r[1:]] for r in _read_rows(
        small / "list_bbox_celeba.txt", 2)])
    wild = np.array([[int(v) for v in r[1:]] for r in _read_rows(
        small / "list_landmarks_celeba.txt", 2)])
    for name, (x, y, w, h), pts in zip(sorted((small / "img_celeba").iterdir()), boxes, wild,
                                       strict=True):
        with Image.open(name) as img:
            assert x >= 0 and y >= 0 and x + w <= img.width and y + h <= img.height
        assert w > 4 and h > 4
        # the eyes, nose and mouth of an unclipped face lie inside its box
        if x > 0 and y > 0 and x + w < img.width and y + h < img.height:
            px, py = pts[0::2], pts[1::2]
            assert np.all((px >= x - 1) & (px <= x + w + 1) & (py >= y - 1) & (py <= y + h + 1))


def test_existing_output_is_reused_refused_or_replaced(small: Path, tmp_path: Path) -> None:
    again = generate(small, SMALL, workers=1)
    assert again["reused"] is True and again["images"] == SMALL.n

    out = tmp_path / "ds"
    cfg = SynthConfig(n=12, size=16, seed=1)
    generate(out, cfg, workers=1)
    other = SynthConfig(n=12, size=16, seed=2)
    with pytest.raises(UserError, match="pass --force"):
        generate(out, other, workers=1)
    assert synth.read_manifest(out)["config"]["seed"] == 1
    result = generate(out, other, workers=1, force=True)
    assert result["reused"] is False and synth.read_manifest(out)["config"]["seed"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temp folders left

    # the same config made by an older generator is regenerated without --force
    manifest = synth.read_manifest(out)
    manifest["generator_version"] = synth.GENERATOR_VERSION - 1
    (out / "synth.json").write_text(json.dumps(manifest))
    remade = generate(out, other, workers=1)
    assert remade["reused"] is False
    assert synth.read_manifest(out)["generator_version"] == synth.GENERATOR_VERSION

    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match="other files"):
        generate(stray, cfg, workers=1)
    assert (stray / "mine.txt").read_text() == "keep me"


def test_interrupted_generation_leaves_previous_dataset_intact(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    generate(out, SynthConfig(n=12, size=16, seed=1), workers=1)
    before = _digest(out)

    def explode(done: int, total: int) -> None:
        if done > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(out, SynthConfig(n=200, size=16, seed=9), workers=1, force=True,
                 progress=explode)
    assert _digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


@pytest.mark.parametrize("bad, field", [({"n": 2}, "n"), ({"size": 8}, "size"),
                                        ({"seed": -1}, "seed"),
                                        ({"images_per_identity": float("nan")},
                                         "images_per_identity"),
                                        ({"images_per_identity": 0.5}, "images_per_identity")])
def test_bad_config_is_a_user_error(tmp_path: Path, bad: dict, field: str) -> None:
    with pytest.raises(UserError) as info:
        generate(tmp_path / "x", SynthConfig(**bad))
    assert info.value.field == field
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("name", ATTRIBUTES)
def test_every_attribute_has_its_own_visual_cue(name: str) -> None:
    """Flipping one attribute of a face changes the picture (Attractive excepted: it is a
    function of the other traits) and, thanks to per-part random streams, nothing else."""
    from facedistill.data.synth_model import sample_face, sample_identity, with_attribute
    from facedistill.data.synth_render import render_aligned

    changed = 0
    for seed in range(3):
        rng = np.random.default_rng(seed)
        face = sample_face(sample_identity(rng), rng)
        pics = [
            np.asarray(render_aligned(with_attribute(face, name, value), 64,
                                      np.random.default_rng(seed), seed)[0], dtype=np.int16)
            for value in (False, True)
        ]
        assert with_attribute(face, name, True).labels[name] is True
        changed += int((np.abs(pics[0] - pics[1]).max(axis=-1) > 12).sum())
    if name == "Attractive":
        assert changed == 0
    else:
        assert changed >= 3, f"{name}: only {changed} pixels changed over 3 faces"


def test_reader_and_check_read_the_generated_dataset(small: Path) -> None:
    """The one CelebA reader serves the synthetic dataset, both variants."""
    from facedistill.data.celeba import CelebAIndex
    from facedistill.data.check import check_dataset
    from facedistill.pipeline.data.dataset import CelebA

    labels = sample_labels(SMALL)
    partition, identity = plan(SMALL)
    index = CelebAIndex.load(small)
    np.testing.assert_array_equal(index.attrs, labels)
    np.testing.assert_array_equal(index.partition, partition)
    np.testing.assert_array_equal(index.identity, identity)
    assert index.landmarks is not None and index.landmarks.shape == (SMALL.n, 10)

    val = CelebA(small, "val", size=24)
    assert len(val) == split_counts(SMALL.n)[1]
    image, target = val[0]
    assert image.shape == (3, 24, 24)
    np.testing.assert_array_equal(target.numpy(), labels[partition == 1][0])

    wild = CelebA(small, "test", variant="wild", size=24, return_bbox=True)
    image, target, extra = wild[0]
    assert image.shape == (3, 24, 24) and extra["bbox"].shape == (4,)

    report = check_dataset(small)
    assert report["images"] == SMALL.n and report["variants"] == ["aligned", "wild"]
    assert report["splits"]["train"]["images"] == split_counts(SMALL.n)[0]
    assert report["identity_overlap"] == 0
