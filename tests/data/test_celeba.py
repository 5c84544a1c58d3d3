"""The CelebA reader: both layouts, the irregularities real files have, every bad input, the
torch Dataset (labels, extras, wild crop, truncated JPEG, DataLoader workers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facedistill.attributes import ATTRIBUTES, INDEX
from facedistill.data import celeba
from facedistill.data.celeba import CelebAIndex, load_image
from facedistill.errors import ConfigError, DataError
from facedistill.pipeline.data.dataset import CelebA
from facedistill.pipeline.data.transforms import build_transform
from facedistill.runtime.preprocess import DEFAULT_MEAN, DEFAULT_STD

from .celeba_fixtures import (
    GREY,
    append_line,
    delete_line,
    get_line,
    make_data,
    set_field,
    set_line,
    write_celeba,
)

TRAIN = [0, 1, 2, 4, 6, 9]
VAL = [3, 7, 10]
TEST = [5, 8, 11]


def assert_matches(index: CelebAIndex, fx, *, variant: str = "aligned") -> None:
    data = fx.data
    assert index.names == data.names
    assert index.attrs.dtype == np.int8 and index.attrs.shape == (12, 40)
    np.testing.assert_array_equal(index.attrs, data.attrs)
    assert index.partition.dtype == np.int8
    np.testing.assert_array_equal(index.partition, data.partition)
    if "identity" in fx.files:
        assert index.identity is not None and index.identity.dtype == np.int64
        np.testing.assert_array_equal(index.identity, data.identity)
    else:
        assert index.identity is None
    assert index.bbox is not None and index.bbox.dtype == np.float32
    np.testing.assert_array_equal(index.bbox, data.bbox)
    assert index.landmarks is not None and index.landmarks.shape == (12, 10)
    expected = data.landmarks_align if variant == "aligned" else data.landmarks_wild
    np.testing.assert_array_equal(index.landmarks, expected)
    assert index.image_dir == fx.image_dirs[variant]
    assert index.variant == variant


# ---------------------------------------------------------------------------------------
# Parsing: layouts and irregular whitespace
# ---------------------------------------------------------------------------------------
def test_txt_layout_parses_the_known_arrays(tmp_path: Path) -> None:
    fx = write_celeba(tmp_path)
    index = CelebAIndex.load(tmp_path)
    assert_matches(index, fx)
    assert index.layout == "txt"
    assert index.attr_values == "-1/1"
    assert len(index) == 12
    assert index.split_sizes() == {"train": 6, "val": 3, "test": 3}
    assert index.files["attributes"] == fx.files["attributes"]
    assert index.image_path(4) == fx.image_dirs["aligned"] / "000005.jpg"
    # hand-checked columns
    assert index.attrs[:, INDEX["Smiling"]].tolist() == [1] * 6 + [0] * 6
    assert index.attrs[:, INDEX["Male"]].tolist() == [1, 0, 0] * 4
    assert index.attrs[:, INDEX["Young"]].sum() == 12
    assert index.attrs[:, INDEX["Bald"]].sum() == 0


def test_csv_layout_gives_the_same_arrays_as_txt(tmp_path: Path) -> None:
    txt = CelebAIndex.load(write_celeba(tmp_path / "txt").root)
    fx = write_celeba(tmp_path / "csv", layout="csv", nested=True, identity=False)
    csv = CelebAIndex.load(fx.root)
    assert csv.layout == "csv"
    assert csv.image_dir == tmp_path / "csv" / "img_align_celeba" / "img_align_celeba"
    assert csv.identity is None  # the Kaggle archive has no identity file
    assert_matches(csv, fx)
    for name in ("attrs", "partition", "bbox", "landmarks"):
        np.testing.assert_array_equal(getattr(csv, name), getattr(txt, name))
    assert csv.names == txt.names


def test_csv_with_identity_and_crlf(tmp_path: Path) -> None:
    fx = write_celeba(tmp_path, layout="csv", crlf=True)
    assert_matches(CelebAIndex.load(tmp_path), fx)


@pytest.mark.parametrize("crlf", [False, True])
def test_runs_of_spaces_tabs_trailing_spaces_and_blank_lines(tmp_path: Path, crlf: bool) -> None:
    fx = write_celeba(tmp_path, messy=True, crlf=crlf)
    raw = fx.files["attributes"].read_bytes()
    assert b"\t" in raw and b"  " in raw and raw.endswith(b"\n\n" if not crlf else b"\r\n\r\n")
    assert_matches(CelebAIndex.load(tmp_path), fx)


def test_blank_lines_inside_a_file_are_skipped(tmp_path: Path) -> None:
    fx = write_celeba(tmp_path)
    path = fx.files["attributes"]
    set_line(path, 6, get_line(path, 6) + "\n   \n")
    index = CelebAIndex.load(tmp_path)
    np.testing.assert_array_equal(index.attrs, fx.data.attrs)
    # a later error still reports the true line number (the blank line counts)
    set_field(path, 12, INDEX["Smiling"] + 1, "7")
    with pytest.raises(DataError) as err:
        CelebAIndex.load(tmp_path)
    assert err.value.line == 12 and err.value.field == "Smiling"


@pytest.mark.parametrize("layout", ["txt", "csv"])
def test_zero_one_attribute_files_are_accepted(tmp_path: Path, layout: str) -> None:
    fx = write_celeba(tmp_path, layout=layout, zero_one=True)
    assert b"-1" not in fx.files["attributes"].read_bytes()
    index = CelebAIndex.load(tmp_path)
    assert index.attr_values == "0/1"
    np.testing.assert_array_equal(index.attrs, fx.data.attrs)


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    fx = write_celeba(tmp_path, layout="csv")
    path = fx.files["attributes"]
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    np.testing.assert_array_equal(CelebAIndex.load(tmp_path).attrs, fx.data.attrs)


def test_official_subfolders_and_torchvision_root(tmp_path: Path) -> None:
    fx = write_celeba(tmp_path / "CelebA", official_dirs=True)
    assert fx.files["attributes"].parent.name == "Anno"
    assert fx.files["partition"].parent.name == "Eval"
    assert_matches(CelebAIndex.load(tmp_path / "CelebA"), fx)
    fx2 = write_celeba(tmp_path / "tv" / "celeba")
    index = CelebAIndex.load(tmp_path / "tv")  # torchvision's root/celeba/
    assert index.root == tmp_path / "tv" / "celeba"
    assert_matches(index, fx2)


def test_header_with_or_without_image_id(tmp_path: Path) -> None:
    fx = write_celeba(tmp_path / "a", bbox_image_id=False, landmark_image_id=True)
    assert get_line(fx.files["bbox"], 2) == "x_1 y_1 width height"
    assert get_line(fx.files["landmarks_align"], 2).startswith("image_id lefteye_x")
    assert_matches(CelebAIndex.load(fx.root), fx)
    path = fx.files["attributes"]  # the attribute header may start with image_id too
    set_line(path, 2, "image_id " + get_line(path, 2))
    assert_matches(CelebAIndex.load(fx.root), fx)


def test_wild_variant_uses_img_celeba_and_its_landmarks(tmp_path: Path) -> None:
    fx = write_celeba(tmp_path)
    index = CelebAIndex.load(tmp_path, variant="wild")
    assert_matches(index, fx, variant="wild")
    assert index.files["landmarks"] == fx.files["landmarks_wild"]


def test_optional_files_may_be_absent(tmp_path: Path) -> None:
    write_celeba(tmp_path, identity=False, bbox=False, landmarks=False, wild=False)
    index = CelebAIndex.load(tmp_path)
    assert index.identity is None and index.bbox is None and index.landmarks is None
    assert set(index.files) == {"attributes", "partition"}


def test_select_splits(tmp_path: Path) -> None:
    write_celeba(tmp_path)
    index = CelebAIndex.load(tmp_path)
    assert index.select("train").tolist() == TRAIN
    assert index.select("val").tolist() == VAL
    assert index.select("test").tolist() == TEST
    assert index.select(0).tolist() == TRAIN
    assert index.select(1).tolist() == VAL
    assert index.select(2).tolist() == TEST
    assert index.select("all").tolist() == list(range(12))
    assert index.select("train").dtype == np.int64
    for bad in ("training", 3, -1, True):
        with pytest.raises(ConfigError, match="unknown split"):
            index.select(bad)


def test_chunked_conversion_reports_lines_across_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Values are converted in blocks of rows; positions must survive block boundaries."""
    monkeypatch.setattr(celeba, "_CHUNK_ROWS", 5)
    data = make_data(n=37, seed=3)
    fx = write_celeba(tmp_path, data, messy=True)
    index = CelebAIndex.load(tmp_path)
    np.testing.assert_array_equal(index.attrs, data.attrs)
    np.testing.assert_array_equal(index.landmarks, data.landmarks_align)
    np.testing.assert_array_equal(index.identity, data.identity)
    set_field(fx.files["attributes"], fx.attr_line(31), 40, "x")  # Young of image 31
    with pytest.raises(DataError) as err:
        CelebAIndex.load(tmp_path)
    assert err.value.line == 34 and err.value.field == "Young"
    assert "list_attr_celeba.txt:34: field 'Young': value 'x' is not an integer" in str(err.value)


# ---------------------------------------------------------------------------------------
# Bad input: every case names the file and the exact line
# ---------------------------------------------------------------------------------------
SMILING = INDEX["Smiling"] + 1  # column of Smiling in a row (0 is the image name)


def _drop_last_value(fx):
    path = fx.files["attributes"]
    set_line(path, 5, get_line(path, 5).rsplit(" ", 1)[0])


def _swap_name(fx, key: str, line: int, name: str):
    set_field(fx.files[key], line, 0, name)


def _zero_one_with_a_minus_one(fx):
    set_field(fx.files["attributes"], fx.attr_line(9), SMILING, "-1")


def _first_zero_line(fx) -> tuple[int, str]:
    row, col = np.argwhere(fx.data.attrs == 0)[0]
    return fx.attr_line(int(row)), ATTRIBUTES[int(col)]


BAD_CASES = {
    # id: (fixture options, mutation, file name, line, expected text)
    "row-too-short": ({}, _drop_last_value, "list_attr_celeba.txt", 5, "expected 41 values"),
    "row-too-long": (
        {},
        lambda fx: set_line(fx.files["partition"], 4, get_line(fx.files["partition"], 4) + " 1"),
        "list_eval_partition.txt",
        4,
        "expected 2 values (image name + partition id), got 3",
    ),
    "value-2": (
        {},
        lambda fx: set_field(fx.files["attributes"], 7, SMILING, "2"),
        "list_attr_celeba.txt",
        7,
        "field 'Smiling': value '2' is not -1/1",
    ),
    "zero-in-minus-one-file": (
        {},
        lambda fx: set_field(fx.files["attributes"], 6, INDEX["Bald"] + 1, "0"),
        "list_attr_celeba.txt",
        6,
        "field 'Bald': value '0' is not -1/1",
    ),
    "non-integer-attribute": (
        {},
        lambda fx: set_field(fx.files["attributes"], 10, 1, "1.0"),
        "list_attr_celeba.txt",
        10,
        "field '5_o_Clock_Shadow': value '1.0' is not an integer",
    ),
    "two-in-zero-one-file": (
        {"zero_one": True},
        lambda fx: set_field(fx.files["attributes"], 8, SMILING, "2"),
        "list_attr_celeba.txt",
        8,
        "field 'Smiling': value '2' is not 0/1",
    ),
    "missing-image": (
        {},
        lambda fx: (fx.image_dirs["aligned"] / "000005.jpg").unlink(),
        "list_attr_celeba.txt",
        7,
        "image '000005.jpg' not found: ",
    ),
    "duplicate-in-attributes": (
        {},
        lambda fx: _swap_name(fx, "attributes", 9, "000003.jpg"),
        "list_attr_celeba.txt",
        9,
        "duplicate image '000003.jpg' (also on line 5)",
    ),
    "duplicate-in-partition": (
        {},
        lambda fx: _swap_name(fx, "partition", 8, "000004.jpg"),
        "list_eval_partition.txt",
        8,
        "duplicate image '000004.jpg' (also on line 4)",
    ),
    "partition-id-3": (
        {},
        lambda fx: set_field(fx.files["partition"], 4, 1, "3"),
        "list_eval_partition.txt",
        4,
        "field 'partition': partition id '3' is not 0 (train), 1 (val) or 2 (test)",
    ),
    "partition-not-integer": (
        {},
        lambda fx: set_field(fx.files["partition"], 2, 1, "train"),
        "list_eval_partition.txt",
        2,
        "value 'train' is not an integer",
    ),
    "attribute-name-differs": (
        {},
        lambda fx: set_line(
            fx.files["attributes"],
            2,
            get_line(fx.files["attributes"], 2).replace("Smiling", "Smile"),
        ),
        "list_attr_celeba.txt",
        2,
        "attribute 32 is named 'Smile', expected 'Smiling'",
    ),
    "attribute-name-missing": (
        {},
        lambda fx: set_line(
            fx.files["attributes"], 2, get_line(fx.files["attributes"], 2).replace(" Young", "")
        ),
        "list_attr_celeba.txt",
        2,
        "39 attribute names, first missing: 'Young'",
    ),
    "bbox-header": (
        {},
        lambda fx: set_line(fx.files["bbox"], 2, "image_id x y width height"),
        "list_bbox_celeba.txt",
        2,
        "column 1 is named 'x', expected 'x_1'",
    ),
    "landmark-header": (
        {},
        lambda fx: set_line(
            fx.files["landmarks_align"],
            2,
            get_line(fx.files["landmarks_align"], 2).replace("nose_y", "nosey"),
        ),
        "list_landmarks_align_celeba.txt",
        2,
        "column 6 is named 'nosey', expected 'nose_y'",
    ),
    "count-not-integer": (
        {},
        lambda fx: set_line(fx.files["attributes"], 1, "twelve"),
        "list_attr_celeba.txt",
        1,
        "expected the image count on the first line, got 'twelve'",
    ),
    "count-mismatch": (
        {},
        lambda fx: set_line(fx.files["attributes"], 1, "13"),
        "list_attr_celeba.txt",
        1,
        "the count line says 13 images but the file has 12 rows",
    ),
    "bbox-count-mismatch": (
        {},
        lambda fx: delete_line(fx.files["bbox"], 9),
        "list_bbox_celeba.txt",
        1,
        "the count line says 12 images but the file has 11 rows",
    ),
    "image-without-partition-row": (
        {},
        lambda fx: delete_line(fx.files["partition"], 6),
        "list_attr_celeba.txt",
        8,
        "image '000006.jpg' has no row in list_eval_partition.txt",
    ),
    "partition-row-without-image": (
        {},
        lambda fx: append_line(fx.files["partition"], "999999.jpg 0"),
        "list_eval_partition.txt",
        13,
        "image '999999.jpg' is not listed in list_attr_celeba.txt",
    ),
    "image-without-bbox-row": (
        {},
        lambda fx: (
            delete_line(fx.files["bbox"], 5),
            set_line(fx.files["bbox"], 1, "11"),
        ),
        "list_attr_celeba.txt",
        5,
        "image '000003.jpg' has no row in list_bbox_celeba.txt",
    ),
    "image-without-landmark-row": (
        {},
        lambda fx: (
            delete_line(fx.files["landmarks_align"], 14),
            set_line(fx.files["landmarks_align"], 1, "11"),
        ),
        "list_attr_celeba.txt",
        14,
        "image '000012.jpg' has no row in list_landmarks_align_celeba.txt",
    ),
    "bbox-not-a-number": (
        {},
        lambda fx: set_field(fx.files["bbox"], 11, 3, "wide"),
        "list_bbox_celeba.txt",
        11,
        "field 'width': value 'wide' is not a number",
    ),
    "bbox-zero-height": (
        {},
        lambda fx: set_field(fx.files["bbox"], 4, 4, "0"),
        "list_bbox_celeba.txt",
        4,
        "field 'height': value '0' must be > 0",
    ),
    "landmark-nan": (
        {},
        lambda fx: set_field(fx.files["landmarks_align"], 3, 5, "nan"),
        "list_landmarks_align_celeba.txt",
        3,
        "field 'nose_x': value 'nan' is not a finite number",
    ),
    "identity-not-integer": (
        {},
        lambda fx: set_field(fx.files["identity"], 12, 1, "7b"),
        "identity_CelebA.txt",
        12,
        "field 'identity': value '7b' is not an integer",
    ),
    "not-utf8": (
        {},
        lambda fx: set_line(fx.files["attributes"], 9, b"00000\xff.jpg" + b" 1" * 40),
        "list_attr_celeba.txt",
        9,
        "not UTF-8 text: byte 0xff at column 6",
    ),
    "csv-row-too-short": (
        {"layout": "csv"},
        lambda fx: set_line(
            fx.files["attributes"], 4, get_line(fx.files["attributes"], 4).rsplit(",", 1)[0]
        ),
        "list_attr_celeba.csv",
        4,
        "expected 41 comma-separated fields (image name + 40 attribute values), got 40",
    ),
    "csv-value": (
        {"layout": "csv", "crlf": True},
        lambda fx: set_field(fx.files["attributes"], 13, SMILING, "yes"),
        "list_attr_celeba.csv",
        13,
        "field 'Smiling': value 'yes' is not an integer (expected -1/1)",
    ),
    "csv-header": (
        {"layout": "csv"},
        lambda fx: set_line(
            fx.files["attributes"], 1, get_line(fx.files["attributes"], 1).replace("Male", "male")
        ),
        "list_attr_celeba.csv",
        1,
        "attribute 21 is named 'male', expected 'Male'",
    ),
    "csv-partition-id": (
        {"layout": "csv"},
        lambda fx: set_field(fx.files["partition"], 3, 1, "-1"),
        "list_eval_partition.csv",
        3,
        "partition id '-1' is not 0",
    ),
    "csv-empty-field": (
        {"layout": "csv"},
        lambda fx: set_field(fx.files["bbox"], 7, 2, ""),
        "list_bbox_celeba.csv",
        7,
        "field 'y_1': value '' is not a number",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CASES), ids=list(BAD_CASES))
def test_bad_input_names_file_and_line(tmp_path: Path, case: str) -> None:
    options, mutate, filename, line, text = BAD_CASES[case]
    fx = write_celeba(tmp_path, **options)
    mutate(fx)
    with pytest.raises(DataError) as err:
        CelebAIndex.load(tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert err.value.line == line, message
    assert Path(err.value.path).name == filename, message
    assert f"{filename}:{line}: " in message
    assert text in message.replace(f"{tmp_path}/", "")


def test_zero_in_a_file_that_also_uses_minus_one_reports_the_first_zero(tmp_path: Path) -> None:
    fx = write_celeba(tmp_path, zero_one=True)
    _zero_one_with_a_minus_one(fx)
    line, name = _first_zero_line(fx)
    with pytest.raises(DataError) as err:
        CelebAIndex.load(tmp_path)
    assert err.value.line == line and err.value.field == name
    assert f"list_attr_celeba.txt:{line}: field '{name}': value '0' is not -1/1" in str(err.value)


def test_missing_image_names_listing_and_image_path(tmp_path: Path) -> None:
    fx = write_celeba(tmp_path)
    (fx.image_dirs["aligned"] / "000011.jpg").unlink()
    with pytest.raises(DataError) as err:
        CelebAIndex.load(tmp_path)
    assert str(err.value) == (
        f"{fx.files['attributes']}:13: image '000011.jpg' not found: "
        f"{fx.image_dirs['aligned'] / '000011.jpg'}"
    )
    index = CelebAIndex.load(tmp_path, check_images=False)  # labels only
    assert len(index) == 12


def test_wild_images_are_checked_in_img_celeba(tmp_path: Path) -> None:
    fx = write_celeba(tmp_path)
    (fx.image_dirs["wild"] / "000002.jpg").unlink()
    CelebAIndex.load(tmp_path)  # aligned still complete
    with pytest.raises(DataError, match=r"list_attr_celeba.txt:4: image '000002.jpg' not found"):
        CelebAIndex.load(tmp_path, variant="wild")


@pytest.mark.parametrize(
    ("remove", "looked_for"),
    [
        ("attributes", "looked for list_attr_celeba.txt and list_attr_celeba.csv"),
        ("partition", "looked for list_eval_partition.txt and list_eval_partition.csv"),
    ],
)
def test_missing_required_file(tmp_path: Path, remove: str, looked_for: str) -> None:
    fx = write_celeba(tmp_path)
    fx.files[remove].unlink()
    with pytest.raises(DataError) as err:
        CelebAIndex.load(tmp_path)
    assert err.value.path == str(tmp_path) and err.value.line is None
    assert looked_for in str(err.value)
    assert "Anno/" in str(err.value)


def test_missing_image_folder_and_missing_root(tmp_path: Path) -> None:
    write_celeba(tmp_path, wild=False)
    with pytest.raises(DataError, match=r"no image folder for the wild variant .*img_celeba/"):
        CelebAIndex.load(tmp_path, variant="wild")
    with pytest.raises(DataError, match="dataset folder does not exist"):
        CelebAIndex.load(tmp_path / "nope")
    with pytest.raises(ConfigError, match="unknown CelebA variant"):
        CelebAIndex.load(tmp_path, variant="unaligned")


@pytest.mark.parametrize("content", [b"  \r\n\n", b"\xef\xbb\xbf", b"\xef\xbb\xbf\n \n",
                                     "\u00a0".encode(), "\u00a0\n\u2003\n".encode()])
@pytest.mark.parametrize("key", ["attributes", "partition", "bbox"])
def test_empty_file(tmp_path: Path, key: str, content: bytes) -> None:
    # blank lines, only a byte-order mark (what some editors save for an empty file), only
    # no-break or em spaces
    fx = write_celeba(tmp_path)
    fx.files[key].write_bytes(content)
    with pytest.raises(DataError) as err:
        CelebAIndex.load(tmp_path)
    assert str(err.value) == f"{fx.files[key]}: file is empty"


def test_header_only_file_has_no_rows(tmp_path: Path) -> None:
    fx = write_celeba(tmp_path)
    path = fx.files["attributes"]
    path.write_text("0\n" + " ".join(ATTRIBUTES) + "\n")
    with pytest.raises(DataError, match="list_attr_celeba.txt: the file has no image rows"):
        CelebAIndex.load(tmp_path)


# ---------------------------------------------------------------------------------------
# The torch Dataset
# ---------------------------------------------------------------------------------------
def mean_rgb(x: torch.Tensor) -> np.ndarray:
    """Mean colour (0-255) of a normalised CHW tensor."""
    mean = torch.tensor(DEFAULT_MEAN)[:, None, None]
    std = torch.tensor(DEFAULT_STD)[:, None, None]
    return ((x * std + mean) * 255.0).mean(dim=(1, 2)).numpy()


def test_dataset_items_shapes_labels_and_images(tmp_path: Path) -> None:
    fx = write_celeba(tmp_path)
    ds = CelebA(tmp_path, "train", size=32)
    assert len(ds) == 6
    assert ds.names == [fx.data.names[i] for i in TRAIN]
    assert ds.attribute_names == list(ATTRIBUTES)
    np.testing.assert_array_equal(ds.labels, fx.data.attrs[TRAIN])
    assert ds.labels.shape == (6, 40)
    assert ds.transform_record == build_transform(32).to_record()
    for i, pos in enumerate(TRAIN):
        item = ds[i]
        assert len(item) == 2
        x, y = item
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32
        assert y.shape == (40,) and y.dtype == torch.float32
        np.testing.assert_array_equal(y.numpy(), fx.data.attrs[pos].astype(np.float32))
        # the aligned image is a solid colour: the right file was read
        np.testing.assert_allclose(mean_rgb(x), fx.data.colors[pos], atol=6)
    x, _ = ds[-1]  # negative indices work like a list's
    np.testing.assert_allclose(mean_rgb(x), fx.data.colors[9], atol=6)
    assert len(CelebA(tmp_path, "val")) == 3 and len(CelebA(tmp_path, "all")) == 12


def test_dataset_extras(tmp_path: Path) -> None:
    fx = write_celeba(tmp_path)
    ds = CelebA(tmp_path, "test", return_identity=True, return_bbox=True, return_landmarks=True)
    for i, pos in enumerate(TEST):
        x, y, extras = ds[i]
        assert set(extras) == {"name", "identity", "bbox", "image_size", "landmarks"}
        assert extras["name"] == fx.data.names[pos]
        with Image.open(tmp_path / "img_align_celeba" / extras["name"]) as img:
            assert extras["image_size"].tolist() == list(img.size)  # (w, h) of the photo
        assert extras["identity"].dtype == torch.int64
        assert int(extras["identity"]) == fx.data.identity[pos]
        assert extras["bbox"].dtype == torch.float32 and extras["bbox"].shape == (4,)
        np.testing.assert_array_equal(extras["bbox"].numpy(), fx.data.bbox[pos])
        np.testing.assert_array_equal(extras["landmarks"].numpy(), fx.data.landmarks_align[pos])
    _, _, extras = CelebA(tmp_path, "val", return_identity=True)[0]
    assert set(extras) == {"name", "identity"}


def test_wild_crop_uses_the_bbox(tmp_path: Path) -> None:
    fx = write_celeba(tmp_path)
    ds = CelebA(tmp_path, "all", variant="wild", size=16, margin=0.0, return_landmarks=True)
    assert ds.transform_record["preprocess"]["margin"] == 0.0
    for pos in range(12):
        x, _, extras = ds[pos]
        assert x.shape == (3, 16, 16)
        # the crop is exactly the coloured square drawn at the bbox
        np.testing.assert_allclose(mean_rgb(x), fx.data.colors[pos], atol=8)
        np.testing.assert_array_equal(extras["landmarks"].numpy(), fx.data.landmarks_wild[pos])
    # with a margin the grey background comes in; without cropping even more of it
    red = fx.data.colors[0]
    with_margin = mean_rgb(CelebA(tmp_path, "train", variant="wild", margin=0.5)[0][0])
    whole = mean_rgb(CelebA(tmp_path, "train", variant="wild", crop=False)[0][0])
    assert with_margin[0] < red[0] - 40 and with_margin[1] > red[1] + 30
    # the whole 40x48 image: one 16x16 red square on grey
    expected = (np.array(red) * 256 + np.array(GREY) * (40 * 48 - 256)) / (40 * 48)
    np.testing.assert_allclose(whole, expected, atol=6)


def test_wild_without_bbox_file_needs_crop_false(tmp_path: Path) -> None:
    write_celeba(tmp_path, bbox=False)
    with pytest.raises(DataError, match="list_bbox_celeba.txt .* is needed: the wild variant"):
        CelebA(tmp_path, variant="wild")
    ds = CelebA(tmp_path, variant="wild", crop=False, size=24)
    assert ds[0][0].shape == (3, 24, 24)


def test_asking_for_an_absent_annotation_is_an_error(tmp_path: Path) -> None:
    write_celeba(tmp_path, identity=False)
    with pytest.raises(DataError, match="identity_CelebA.txt .* is needed"):
        CelebA(tmp_path, return_identity=True)


def test_dataset_shares_an_index(tmp_path: Path) -> None:
    write_celeba(tmp_path)
    index = CelebAIndex.load(tmp_path, variant="wild")
    train = CelebA(index, "train", variant="wild")
    test = CelebA(index, "test", variant="wild")
    assert train.index is test.index and len(train) + len(test) == 9
    with pytest.raises(ConfigError, match="loaded for the wild variant"):
        CelebA(index, "train")


def test_train_transform_augments_and_keeps_shapes(tmp_path: Path) -> None:
    write_celeba(tmp_path)
    ds = CelebA(tmp_path, "train", size=20, train=True)
    assert ds.transform_record["augment"] is not None
    x, y = ds[0]
    assert x.shape == (3, 20, 20) and y.shape == (40,)


def test_truncated_jpeg_is_a_data_error_naming_the_path(tmp_path: Path) -> None:
    fx = write_celeba(tmp_path)
    path = fx.image_dirs["aligned"] / fx.data.names[TRAIN[2]]
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    ds = CelebA(tmp_path, "train")
    ds[1]  # the others still load
    with pytest.raises(DataError) as err:
        ds[2]
    assert err.value.path == str(path)
    assert str(err.value).startswith(f"{path}: cannot decode image: ")
    assert "truncated" in str(err.value).lower()


def test_load_image_rejects_garbage_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"x\.jpg: not an image file PIL can read"):
        load_image(bad)
    with pytest.raises(DataError, match=r"y\.jpg: no such image file"):
        load_image(tmp_path / "y.jpg")


def test_load_image_is_the_runtimes_reader_exif_and_pixel_budget(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Training, bench and export read images as predict does: EXIF orientation applied (a
    phone photo is not trained sideways) and a pixel budget checked before decoding."""
    from PIL import Image

    from facedistill.runtime import load_rgb

    photo = tmp_path / "phone.jpg"
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    Image.fromarray(pixels).save(photo, quality=95, exif=exif)
    img = load_image(photo)
    assert img.size == (20, 40)  # upright: the stored 40x20 turned
    np.testing.assert_array_equal(np.asarray(img.convert("RGB")), load_rgb(photo))
    monkeypatch.setenv("FACEDISTILL_MAX_PIXELS", "500")
    with pytest.raises(DataError, match=r"phone\.jpg: image is 40x20 \(0\.0008 Mpx\), over the "
                                        r"0\.0005 Mpx budget \(FACEDISTILL_MAX_PIXELS\)"):
        load_image(photo)
    monkeypatch.setenv("FACEDISTILL_MAX_PIXELS", "many")
    with pytest.raises(ConfigError, match="FACEDISTILL_MAX_PIXELS"):
        load_image(photo)


def test_dataloader_with_two_workers(tmp_path: Path) -> None:
    fx = write_celeba(tmp_path)
    ds = CelebA(tmp_path, "all", size=16, return_identity=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=2, shuffle=False)
    images, labels, identities, names = [], [], [], []
    for x, y, extras in loader:
        assert x.shape[1:] == (3, 16, 16)
        images.append(x)
        labels.append(y)
        identities.append(extras["identity"])
        names += extras["name"]
    assert [len(b) for b in labels] == [5, 5, 2]
    np.testing.assert_array_equal(torch.cat(labels).numpy(), fx.data.attrs.astype(np.float32))
    np.testing.assert_array_equal(torch.cat(identities).numpy(), fx.data.identity)
    assert names == fx.data.names
    colours = np.stack([mean_rgb(x) for x in torch.cat(images)])
    np.testing.assert_allclose(colours, np.array(fx.data.colors, dtype=np.float64), atol=6)


@pytest.mark.parametrize("first", ["", None])
def test_csv_header_with_an_unnamed_or_missing_name_column(tmp_path: Path, first) -> None:
    fx = write_celeba(tmp_path, layout="csv")
    header = ",".join(ATTRIBUTES) if first is None else first + "," + ",".join(ATTRIBUTES)
    set_line(fx.files["attributes"], 1, header)
    np.testing.assert_array_equal(CelebAIndex.load(tmp_path).attrs, fx.data.attrs)


def test_a_folder_named_like_a_table_is_ignored(tmp_path: Path) -> None:
    fx = write_celeba(tmp_path)
    fx.files["identity"].unlink()
    fx.files["identity"].mkdir()  # a folder with the file's name is skipped, not read
    assert CelebAIndex.load(tmp_path).identity is None
