"""examples/face_app.py runs end to end: a folder of photos in, annotated photos + JSON out."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
from PIL import Image

APP = Path(__file__).resolve().parents[2] / "examples" / "face_app.py"


def test_face_app_on_a_folder(tiny_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    from skimage import data

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(data.astronaut()).save(photos / "astronaut.png")
    Image.new("RGB", (120, 90), (90, 120, 200)).save(photos / "sky.jpg")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["face_app.py", "--model", str(tiny_onnx), "--images",
                                      str(photos), "--out", str(out), "--workers", "2"])
    runpy.run_path(str(APP), run_name="__main__")

    report = json.loads((out / "results.json").read_text())
    by_name = {r["image"]: r for r in report["images"]}
    assert set(by_name) == {"astronaut.png", "sky.jpg", "broken.jpg"}
    assert len(by_name["astronaut.png"]["faces"]) == 1
    assert len(by_name["astronaut.png"]["faces"][0]["attributes"]) == 40
    assert by_name["sky.jpg"]["faces"] == []
    assert "cannot decode image" in by_name["broken.jpg"]["error"]
    assert sorted(p.name for p in out.glob("*.jpg")) == ["astronaut.jpg", "sky.jpg"]
    with Image.open(out / "astronaut.jpg") as img:
        assert img.size == (512, 512)
    printed = capsys.readouterr().out
    assert "sky.jpg: no face found" in printed and "broken.jpg: skipped" in printed


def test_face_app_fails_at_start_without_a_detector(tiny_onnx: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Without OpenCV the app stops before the first photo with the extra to install (it
    used to skip every image and exit 0); nothing is written."""
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (60, 60)).save(photos / "a.png")
    out = tmp_path / "out"
    monkeypatch.setitem(sys.modules, "cv2", None)  # as if the 'detect' extra were absent
    monkeypatch.setattr(sys, "argv", ["face_app.py", "--model", str(tiny_onnx), "--images",
                                      str(photos), "--out", str(out)])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(APP), run_name="__main__")
    assert "pip install 'facedistill[detect]'" in str(stop.value.code)
    assert not out.exists()
