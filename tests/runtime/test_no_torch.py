"""The runtime runs without torch: a fresh interpreter imports it, predicts and detects faces,
and neither torch nor facedistill.pipeline gets imported (nor is needed: torch is blocked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SCRIPT = r"""
import json, sys


class NoTorch:  # as if torch were not installed: 'import torch' fails, sys.modules stays clean
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None


sys.meta_path.insert(0, NoTorch())
import numpy as np
from facedistill.runtime import DetectorError, Predictor

predictor = Predictor(sys.argv[1], threads=1)
pred = predictor.predict(sys.argv[2])
faces = predictor.predict_faces(sys.argv[2])
batch = predictor.predict_batch([np.zeros((40, 30, 3), np.uint8)] * 3)
loaded = sorted(m for m in sys.modules
                if m == "torch" or m.startswith("torch.") or m.startswith(("facedistill.pipeline", "facedistill.nn")))
sys.modules["cv2"] = None  # as if the 'detect' extra were not installed
try:
    Predictor(sys.argv[1]).predict_faces(sys.argv[2])
    no_cv2 = None
except DetectorError as exc:
    no_cv2 = str(exc)
print(json.dumps({"loaded": loaded, "probabilities": pred.probabilities.tolist(),
                  "faces": [f.to_dict()["box"] for f in faces], "batch": len(batch),
                  "no_cv2": no_cv2}))
"""


def test_runtime_imports_and_predicts_without_torch(tiny_onnx: Path, tmp_path: Path) -> None:
    from skimage import data

    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_onnx), str(photo)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["loaded"] == []
    assert len(out["faces"]) == 1 and out["batch"] == 3
    assert out["no_cv2"] == "face detection needs OpenCV: pip install 'facedistill[detect]'"

    from facedistill.runtime import Predictor  # the same numbers as in this (torch) process

    here = Predictor(tiny_onnx, threads=1).predict(photo).probabilities
    np.testing.assert_array_equal(np.asarray(out["probabilities"], np.float32), here)


VERB_SCRIPT = r"""
import sys


class NoTorch:  # a runtime-only install: torch and onnx absent
    def find_spec(self, name, path=None, target=None):
        if name in ("torch", "onnx") or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None


sys.meta_path.insert(0, NoTorch())
from facedistill.cli import main

main(sys.argv[1:])
"""


def test_verbs_that_need_an_extra_say_which_in_one_line(tmp_path: Path) -> None:
    """In a runtime-only install, models/train/eval/export exit 2 with the extra to install,
    no traceback; nothing is written."""
    for verb in (["models"], ["train", "--out", str(tmp_path / "t")],
                 ["eval", str(tmp_path / "run")],
                 ["export", str(tmp_path / "run"), "--out", str(tmp_path / "e")]):
        proc = subprocess.run([sys.executable, "-c", VERB_SCRIPT, *verb], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2, (verb, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert f"'facedistill {verb[0]}' needs the 'train' extra" in proc.stderr
        assert "pip install 'facedistill[train]'" in proc.stderr
    assert not any(tmp_path.iterdir())
