"""``check_dataset``: the report's numbers equal the fixture's hand-checked values; bad images
are found; the rich tables render."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from facedistill.attributes import ATTRIBUTES, CELEBA_PREVALENCE
from facedistill.data.check import check_dataset, format_check, prevalence
from facedistill.errors import DataError, DataErrors

from .celeba_fixtures import set_field, write_celeba

TRAIN = [0, 1, 2, 4, 6, 9]
VAL = [3, 7, 10]
TEST = [5, 8, 11]


def test_report_numbers(tmp_path: Path) -> None:
    fx = write_celeba(tmp_path)
    report = check_dataset(tmp_path)
    assert json.loads(json.dumps(report)) == report  # JSON-serialisable as it is
    assert report["root"] == str(tmp_path)
    assert report["layout"] == "txt"
    assert report["variants"] == ["aligned", "wild"]
    assert report["images"] == 12
    assert report["verified_images"] == 24  # 12 aligned + 12 wild
    assert report["splits"] == {
        "train": {"images": 6, "identities": 4},
        "val": {"images": 3, "identities": 3},
        "test": {"images": 3, "identities": 3},
    }
    assert report["identities"] == 7
    assert report["identity_overlap"] == 3  # 20 and 40 in train+val, 50 in train+test
    attrs = report["attributes"]
    assert list(attrs) == list(ATTRIBUTES)
    assert attrs["Smiling"] == 50.0
    assert attrs["Male"] == 33.33
    assert attrs["Young"] == 100.0
    assert attrs["Bald"] == 0.0
    by_split = report["attributes_by_split"]
    assert list(by_split) == ["train", "val", "test"]
    assert by_split["train"]["Smiling"] == 66.67
    assert by_split["val"]["Smiling"] == 33.33
    assert by_split["test"]["Smiling"] == 33.33
    assert by_split["train"]["Male"] == 50.0  # positions 0, 6, 9 of 0 1 2 4 6 9
    assert by_split["val"]["Male"] == 33.33  # position 3
    assert by_split["test"]["Male"] == 0.0
    # every other attribute: the plain percentage of the fixture's labels
    expected = np.round(fx.data.attrs.mean(axis=0) * 100, 2)
    assert [attrs[name] for name in ATTRIBUTES] == pytest.approx(expected.tolist(), abs=1e-9)
    for name, rows in (("train", TRAIN), ("val", VAL), ("test", TEST)):
        want = np.round(fx.data.attrs[rows].mean(axis=0) * 100, 2)
        got = [by_split[name][a] for a in ATTRIBUTES]
        assert got == pytest.approx(want.tolist(), abs=1e-9)
    assert report["has_bbox"] is True and report["has_landmarks"] is True
    assert report["image_size"] == [12, 14]
    assert report["attr_values"] == "-1/1"
    assert report["files"]["aligned"]["attributes"] == str(fx.files["attributes"])
    assert report["files"]["aligned"]["landmarks"] == str(fx.files["landmarks_align"])
    assert report["files"]["wild"]["landmarks"] == str(fx.files["landmarks_wild"])


def test_kaggle_layout_without_identities(tmp_path: Path) -> None:
    write_celeba(
        tmp_path, layout="csv", nested=True, identity=False, bbox=False, landmarks=False, wild=False
    )
    report = check_dataset(tmp_path, verify_images=False)
    assert report["layout"] == "csv"
    assert report["variants"] == ["aligned"]
    assert report["verified_images"] == 0
    assert report["identities"] is None and report["identity_overlap"] is None
    assert all(info["identities"] is None for info in report["splits"].values())
    assert [info["images"] for info in report["splits"].values()] == [6, 3, 3]
    assert report["has_bbox"] is False and report["has_landmarks"] is False
    assert report["image_size"] == [12, 14]


def test_only_wild_images(tmp_path: Path) -> None:
    write_celeba(tmp_path, aligned=False)
    report = check_dataset(tmp_path)
    assert report["variants"] == ["wild"]
    assert report["image_size"] == [40, 48]
    assert report["verified_images"] == 12


def test_explicit_variant(tmp_path: Path) -> None:
    write_celeba(tmp_path)
    report = check_dataset(tmp_path, variant="aligned")
    assert report["variants"] == ["aligned"] and report["verified_images"] == 12


def test_progress_is_reported_up_to_the_total(tmp_path: Path) -> None:
    write_celeba(tmp_path)
    calls: list[tuple[int, int]] = []
    check_dataset(tmp_path, progress=lambda done, total: calls.append((done, total)), workers=2)
    assert calls == [(i, 24) for i in range(1, 25)]


def test_truncated_image_is_found_and_named(tmp_path: Path) -> None:
    fx = write_celeba(tmp_path)
    path = fx.image_dirs["wild"] / "000007.jpg"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) * 2 // 3])
    with pytest.raises(DataError) as err:
        check_dataset(tmp_path)
    assert err.value.path == str(path)
    assert "cannot decode image" in str(err.value)
    report = check_dataset(tmp_path, verify_images=False)  # labels alone are fine
    assert report["images"] == 12


def test_every_bad_image_is_reported_in_file_order(tmp_path: Path) -> None:
    fx = write_celeba(tmp_path, wild=False)
    for name in ("000009.jpg", "000004.jpg", "000011.jpg"):
        (fx.image_dirs["aligned"] / name).write_bytes(b"garbage")
    with pytest.raises(DataErrors) as err:
        check_dataset(tmp_path, workers=4)
    assert [Path(e.path).name for e in err.value.errors] == ["000004.jpg", "000009.jpg",
                                                             "000011.jpg"]
    # as one message: the first, and how many more
    assert Path(err.value.path).name == "000004.jpg" and "(and 2 more)" in str(err.value)


def test_a_decompression_bomb_as_the_first_image_is_a_data_error(tmp_path: Path) -> None:
    from PIL import Image

    fx = write_celeba(tmp_path, wild=False)
    first = fx.image_dirs["aligned"] / "000001.jpg"
    Image.new("L", (16000, 12000)).save(first, format="PNG")  # 192 Mpx: over PIL's bomb limit
    with pytest.raises(DataError, match="cannot read image") as err:
        check_dataset(tmp_path, verify_images=False)
    assert err.value.path == str(first)


def test_data_check_cli_prints_one_line_per_bad_image(tmp_path: Path) -> None:
    import subprocess
    import sys

    fx = write_celeba(tmp_path, wild=False)
    for name in ("000009.jpg", "000004.jpg"):
        (fx.image_dirs["aligned"] / name).write_bytes(b"garbage")
    proc = subprocess.run([sys.executable, "-m", "facedistill", "data", "check", str(tmp_path),
                           "--quiet"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and all(ln.startswith("error: ") for ln in lines)
    assert "000004.jpg: not an image file" in lines[0] and "000009.jpg" in lines[1]


def test_annotation_errors_propagate(tmp_path: Path) -> None:
    fx = write_celeba(tmp_path)
    set_field(fx.files["partition"], 5, 1, "9")
    with pytest.raises(DataError, match="list_eval_partition.txt:5: field 'partition'"):
        check_dataset(tmp_path)


def test_prevalence_of_an_empty_split_is_none() -> None:
    assert set(prevalence(np.zeros((0, 40), np.int8)).values()) == {None}
    pct = prevalence(np.eye(40, dtype=np.int8)[:4])
    assert pct["5_o_Clock_Shadow"] == 25.0 and pct["Young"] == 0.0


def test_format_check_renders_counts_and_prevalence(tmp_path: Path) -> None:
    write_celeba(tmp_path)
    tables = format_check(check_dataset(tmp_path))
    console = Console(record=True, width=140)
    for table in tables:
        console.print(table)
    text = console.export_text()
    assert "train" in text and "identities in >1 split" in text
    smiling = next(line for line in text.splitlines() if "Smiling" in line)
    # all, train, val, test, CelebA's value and the difference
    assert "50.00" in smiling and "66.67" in smiling and "33.33" in smiling
    assert f"{CELEBA_PREVALENCE['Smiling']:.0f}" in smiling and "+2.0" in smiling
    young = next(line for line in text.splitlines() if "Young" in line)
    assert "100.00" in young and "+22.0" in young
