"""``facedistill predict`` in a subprocess: JSON, tables, annotated images, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# runs the CLI as 'python -m facedistill' would, with torch made unimportable
NO_TORCH_CLI = r"""
import sys


class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None


sys.meta_path.insert(0, NoTorch())
from facedistill.cli import main

main(sys.argv[1:])
"""


def _cli(*args: str, no_torch: bool = False) -> subprocess.CompletedProcess[str]:
    head = ["-c", NO_TORCH_CLI] if no_torch else ["-m", "facedistill"]
    env = {**os.environ, "COLUMNS": "120", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *head, "predict", *args], capture_output=True,
                          text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def faces_dir(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("faces")
    for src in sorted((tiny_synth / "img_align_celeba").glob("*.jpg"))[:3]:
        (out / src.name).write_bytes(src.read_bytes())
    (out / "notes.txt").write_text("not an image, and not picked up from a folder\n")
    return out


def test_json_for_a_folder_with_annotations(tiny_onnx: Path, faces_dir: Path,
                                            tmp_path: Path) -> None:
    from facedistill.runtime import Predictor

    ann = tmp_path / "annotated"
    proc = _cli(str(faces_dir), "--model", str(tiny_onnx), "--json", "--threads", "1",
                "--annotate", str(ann))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    images = sorted(faces_dir.glob("*.jpg"))
    assert [r["source"] for r in out["images"]] == [str(p) for p in images]
    assert out["model"]["backend"] == "ort" and out["model"]["input_size"] == [32, 32]
    expected = Predictor(tiny_onnx, threads=1).predict_batch(images)
    for record, pred in zip(out["images"], expected, strict=True):
        probs = [record["attributes"][n]["probability"] for n in pred.attributes]
        np.testing.assert_allclose(probs, pred.probabilities, atol=1e-6)
        assert [record["attributes"][n]["positive"] for n in pred.attributes] == \
            pred.positive.tolist()
    written = sorted(ann.iterdir())
    assert [p.name for p in written] == [p.name for p in images]
    for path, src in zip(written, images, strict=True):
        # a 32 px crop is drawn 8x larger, its label on a panel below: the face stays visible
        with Image.open(path) as img, Image.open(src) as face:
            assert img.width == 256 and img.height > 256
            big = np.asarray(face.convert("RGB").resize((256, 256), Image.Resampling.NEAREST),
                             np.float32)
            top = np.asarray(img.convert("RGB"), np.float32)[:256]
            assert np.abs(top - big).mean() < 12  # the same picture, up to JPEG loss


def test_detect_table_and_annotated_photo_without_torch(tiny_onnx: Path, tmp_path: Path) -> None:
    from skimage import data

    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    out_jpg = tmp_path / "out" / "astronaut.annotated.jpg"
    proc = _cli(str(photo), "--model", str(tiny_onnx), "--detect", "--top", "2",
                "--annotate", str(out_jpg), no_torch=True)
    assert proc.returncode == 0, proc.stderr
    assert "face 1 at [" in proc.stdout and "probability" in proc.stdout
    assert f"annotated 1 image: {out_jpg}" in proc.stdout.replace("\n", "")
    with Image.open(out_jpg) as img:
        assert img.format == "JPEG" and img.size == (512, 512)
        drawn = np.asarray(img.convert("RGB")).astype(int)
    original = np.asarray(Image.open(photo).convert("RGB")).astype(int)
    changed = np.abs(drawn - original).sum(axis=2) > 60
    ys, xs = np.nonzero(changed)
    # the box (and its label under it) were drawn around the face, not elsewhere
    assert changed.mean() < 0.1 and 150 < xs.mean() < 300 and 60 < ys.mean() < 260
    assert not list(out_jpg.parent.glob(".*.tmp"))  # atomic write left no temp file


def test_bad_inputs_exit_2_with_one_line(tiny_onnx: Path, faces_dir: Path,
                                         tmp_path: Path) -> None:
    bad = tmp_path / "holiday.jpg"
    bad.write_text("this is a text file, not a JPEG\n")
    good = sorted(faces_dir.glob("*.jpg"))[0]
    proc = _cli(str(good), str(bad), "--model", str(tiny_onnx), "--json")
    assert proc.returncode == 2
    message = f"{bad}: not an image file PIL can read (unknown format or corrupt header)"
    assert proc.stderr.strip() == f"error: {message}"
    # one bad file does not cost the good ones their results: each image has its record
    out = json.loads(proc.stdout)
    assert out["failed"] == 1 and [r["source"] for r in out["images"]] == [str(good), str(bad)]
    assert "attributes" in out["images"][0] and out["images"][1] == {"source": str(bad),
                                                                     "error": message}
    # several bad ones in a folder: every one is named, the good ones are printed
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i, src in enumerate(sorted(faces_dir.glob("*.jpg"))):
        (mixed / f"{2 * i}.jpg").write_bytes(src.read_bytes())
        (mixed / f"{2 * i + 1}.jpg").write_bytes(src.read_bytes()[:40])  # truncated
    proc = _cli(str(mixed), "--model", str(tiny_onnx), "--batch-size", "4", "--annotate",
                str(tmp_path / "ann"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [e for e in proc.stderr.splitlines() if e.startswith("error: ")]  # + progress
    assert [e.split(":")[1].strip() for e in errors] == [str(mixed / f"{i}.jpg")
                                                          for i in (1, 3, 5)]
    assert sorted(p.name for p in (tmp_path / "ann").iterdir()) == ["0.jpg", "2.jpg", "4.jpg"]
    assert "annotated 3 images" in proc.stdout


def test_usage_error_messages(tiny_onnx: Path, faces_dir: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    from facedistill.cli import main

    img = str(sorted(faces_dir.glob("*.jpg"))[0])
    cases = [
        (["predict", img, "--model", str(tmp_path / "nope.onnx")],
         f"error: {tmp_path / 'nope.onnx'}: no such model file"),
        (["predict", img, img, "--model", str(tiny_onnx), "--annotate", str(tmp_path / "a.jpg")],
         f"error: {tmp_path / 'a.jpg'}: field '--annotate': several images: give a folder, "
         "not a file name"),
        (["predict", img, "--model", str(tiny_onnx), "--annotate", str(faces_dir)],
         "would overwrite an input image"),
        (["predict", img, "--model", str(tiny_onnx), "--margin", "0.3"],
         "error: field '--margin': needs --detect"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
