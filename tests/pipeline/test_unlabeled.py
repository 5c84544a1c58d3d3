"""Distillation from unlabeled faces: the pool, the masked label loss, compress --unlabeled."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from facedistill.data.synth import SynthConfig, generate
from facedistill.errors import DataError, UserError
from facedistill.nn.checkpoint import load_checkpoint
from facedistill.pipeline.data.transforms import build_transform
from facedistill.pipeline.data.unlabeled import UNLABELED, UnlabeledImages, list_images
from facedistill.pipeline.distill import _labelled_bce


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "facedistill", *args], capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """96 synthetic faces of other people (seed 9), labels withheld."""
    out = tmp_path_factory.mktemp("pool") / "faces"
    generate(out, SynthConfig(n=96, size=32, seed=9, images_per_identity=8), workers=1,
             withhold_labels=True)
    return out


def test_a_withheld_pool_has_images_and_no_labels(pool: Path) -> None:
    assert not list(pool.glob("list_*.txt")) and not (pool / "identity_CelebA.txt").exists()
    manifest = json.loads((pool / "synth.json").read_text())
    assert manifest["labels_withheld"] is True
    files = list_images(pool)  # the img_align_celeba/ folder of the layout
    assert len(files) == 96 and files[0].parent.name == "img_align_celeba"
    ds = UnlabeledImages(pool, build_transform(32, train=True), 40, limit=10)
    x, y = ds[3]
    assert len(ds) == 10 and x.shape == (3, 32, 32)
    assert torch.equal(y, torch.full((40,), UNLABELED))
    # asking again for the same pool reuses it; a labelled set of that config is another thing
    again = generate(pool, SynthConfig(n=96, size=32, seed=9, images_per_identity=8),
                     workers=1, withhold_labels=True)
    assert again["reused"]
    with pytest.raises(UserError, match="different synthetic dataset"):
        generate(pool, SynthConfig(n=96, size=32, seed=9, images_per_identity=8), workers=1)


def test_pool_errors_name_the_folder_or_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such folder"):
        list_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no faces here")
    with pytest.raises(UserError, match="holds no images"):
        list_images(tmp_path / "empty")
    flat = tmp_path / "flat"
    (flat / "a").mkdir(parents=True)
    Image.new("RGB", (40, 40), (120, 80, 60)).save(flat / "a" / "one.png")
    (flat / "two.jpg").write_bytes(b"not a jpeg")
    (flat / ".hidden.jpg").write_bytes(b"skipped")
    ds = UnlabeledImages(flat, build_transform(32), 40)
    assert [p.name for p in ds.files] == ["one.png", "two.jpg"]
    assert ds[0][0].shape == (3, 32, 32)
    with pytest.raises(DataError, match="two.jpg"):
        ds[1]


def test_the_label_loss_skips_unlabeled_rows_and_keeps_the_graph() -> None:
    torch.manual_seed(0)
    s = torch.randn(6, 40, requires_grad=True)
    y = (torch.rand(6, 40) > 0.5).float()
    pw = torch.full((40,), 2.0)
    mixed = y.clone()
    mixed[[1, 4]] = UNLABELED
    want = F.binary_cross_entropy_with_logits(s[[0, 2, 3, 5]], y[[0, 2, 3, 5]], pos_weight=pw)
    assert torch.allclose(_labelled_bce(s, mixed, pw), want)
    assert torch.allclose(_labelled_bce(s, y, pw),
                          F.binary_cross_entropy_with_logits(s, y, pos_weight=pw))
    none = _labelled_bce(s, torch.full_like(y, UNLABELED), None)
    none.backward()
    assert none.item() == 0.0 and s.grad is not None and not s.grad.any()


def test_compress_learns_from_the_pool_too(tiny_synth: Path, tiny_teacher: Path, pool: Path,
                                           tmp_path: Path) -> None:
    common = ("compress", "--student", "snet3", "--width", "0.25", "--size", "32",
              "--teacher", str(tiny_teacher), "--data", str(tiny_synth), "--method", "soft",
              "--epochs", "1", "--batch-size", "32", "--workers", "0", "--json", "--quiet")
    plain = run_cli(*common, "--out", str(tmp_path / "plain"))
    assert plain.returncode == 0, plain.stderr
    mixed = run_cli(*common, "--out", str(tmp_path / "mixed"), "--unlabeled", str(pool),
                    "--unlabeled-n", "64")
    assert mixed.returncode == 0, mixed.stderr
    rec = json.loads(mixed.stdout)["distill"]
    assert rec["unlabeled"] == {"root": str(pool), "images": 64}
    assert load_checkpoint(tmp_path / "mixed")["extra"]["distill"]["unlabeled"]["images"] == 64

    def steps(run: str) -> int:
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return json.loads(lines[-1])["step"]

    assert steps("mixed") == steps("plain") + 64 // 32  # the pool's images are trained on

    refused = run_cli(*common[:-2], "--method", "labels", "--out", str(tmp_path / "lab"),
                      "--unlabeled", str(pool), "--json", "--quiet")
    assert refused.returncode == 2 and "needs a teacher term" in refused.stderr
    assert "Traceback" not in refused.stderr
    missing = run_cli(*common, "--out", str(tmp_path / "m"), "--unlabeled",
                      str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "nowhere" in missing.stderr
