"""compress: teacher -> selection -> student end to end, and its errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from facedistill.config import TrainConfig
from facedistill.errors import UserError
from facedistill.nn.checkpoint import load_checkpoint, save_checkpoint
from facedistill.pipeline.compress import compress

STUDENT = {"arch": "snet3", "width": 0.25, "size": 32, "batch_size": 32, "workers": 0,
           "lr": 3e-3, "warmup": 0.5, "epochs": 1}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "facedistill", *args], capture_output=True,
                          text=True, timeout=600)


def test_compress_end_to_end_records_the_teacher_and_the_selection(
        tiny_synth: Path, tiny_teacher: Path, tmp_path: Path) -> None:
    out = tmp_path / "student"
    config = tmp_path / "c.toml"  # compress's own selection takes select's table
    config.write_text('[select]\nsolver = "exact"\nsplit = "train"\n')
    proc = run_cli("--config", str(config), "compress", "--student", "snet3", "--width", "0.25", "--size", "32",
                   "--teacher", str(tiny_teacher), "--data", str(tiny_synth), "--k", "300",
                   "--epochs", "1", "--batch-size", "32", "--workers", "0", "--out", str(out),
                   "--weight", "selected=0.5", "--json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    student, teacher = result["rows"]
    assert student["arch"] == "snet3" and student["width"] == 0.25
    assert teacher["params"] > student["params"]
    assert student["compression"] == pytest.approx(teacher["params"] / student["params"])
    assert student["delta"] == pytest.approx(student["mean_balanced"] - teacher["mean_balanced"])
    assert 0.5 <= student["mean_balanced"] <= 1.0
    ckpt = load_checkpoint(out)
    distill = ckpt["extra"]["distill"]
    sel = json.loads((out / "selection" / "selection.json").read_text())
    assert distill["method"] == "selected"
    assert sel["solver"] == "exact" and sel["config"]["split"] == "train"
    assert distill["weights"] == {"labels": 1.0, "selected": 0.5}
    assert distill["selection"]["indices"] == sel["indices"] and len(sel["indices"]) == 300
    assert distill["teachers"][0]["sha256"] == sel["teachers"][0]["sha256"]
    # the training-only regressor (k=300 != 1280) is not part of the student
    assert not any("regress" in key for key in ckpt["model"])
    assert set(ckpt["model"]) == set(_student_keys())
    assert (out / "compare.md").read_text().count("|") > 10
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert "train_selected" in metrics[0] and "train_labels" in metrics[0]


def _student_keys() -> list[str]:
    from facedistill.nn.models import build_model

    return list(build_model("snet3", width=0.25).state_dict())


def test_compress_refuses_a_teacher_of_another_attribute_set(
        tiny_synth: Path, tiny_teacher: Path, tmp_path: Path) -> None:
    ckpt = load_checkpoint(tiny_teacher)
    ckpt.pop("path")
    ckpt["attributes"] = list(reversed(ckpt["attributes"]))
    other = save_checkpoint(tmp_path / "other.pt", ckpt)
    with pytest.raises(UserError, match="another attribute set"):
        compress(TrainConfig(**STUDENT), [other], tiny_synth, tmp_path / "s", method="hint")


def test_compress_bad_options_are_one_line_errors(tiny_synth: Path, tiny_teacher: Path,
                                                  tmp_path: Path) -> None:
    base = ("compress", "--teacher", str(tiny_teacher), "--data", str(tiny_synth),
            "--out", str(tmp_path / "s"), "--quiet")
    for extra, needle in ((("--student", "snet9"), "snet9"),
                          (("--k", "5000"), "more than the 1280 neurons"),
                          (("--method", "magic"), "magic"),
                          (("--weight", "selected"), "TERM=WEIGHT"),
                          (("--weight", "hnit=1"), "unknown loss term 'hnit'"),
                          (("--weight", "selected=-1"), "finite number >= 0")):
        proc = run_cli(*base, *extra)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert "Traceback" not in proc.stderr and any(needle in line for line in lines)
    assert not (tmp_path / "s" / "best.pt").exists()
    bad_sel = tmp_path / "sel.json"
    bad_sel.write_text(json.dumps({"format": "facedistill.selection/v1", "k": 1, "candidates": 5,
                                   "indices": [7]}))
    proc = run_cli(*base, "--selection", str(bad_sel))
    assert proc.returncode == 2 and "indices" in proc.stderr


def test_labels_method_needs_no_teacher_forward(tiny_synth: Path, tiny_teacher: Path,
                                                tmp_path: Path) -> None:
    torch.manual_seed(0)
    result = compress(TrainConfig(**STUDENT), [tiny_teacher], tiny_synth, tmp_path / "s",
                      method="labels")
    assert result["distill"]["selection"] is None
    assert [r["role"] for r in result["rows"]] == ["student", "teacher"]


def test_an_ensemble_gets_its_own_row_and_is_the_reference(
        tiny_synth: Path, tiny_teacher: Path, tmp_path: Path) -> None:
    import shutil

    twin = tmp_path / "teacher2"
    shutil.copytree(tiny_teacher, twin)  # the same weights: the mean of two is the one
    result = compress(TrainConfig(**STUDENT), [tiny_teacher, twin], tiny_synth,
                      tmp_path / "s", method="hint")
    student, t0, t1, ens = result["rows"]
    assert ens["role"] == "ensemble (2)" and result["reference"] == "ensemble (2)"
    assert ens["params"] == t0["params"] + t1["params"] and ens["macs"] == 2 * t0["macs"]
    assert ens["mean_balanced"] == pytest.approx(t0["mean_balanced"], abs=1e-9)
    assert student["compression"] == pytest.approx(ens["params"] / student["params"])
    assert student["delta"] == pytest.approx(student["mean_balanced"] - ens["mean_balanced"])
    best = result["best_teacher"]
    assert best["delta"] == pytest.approx(student["mean_balanced"] - t0["mean_balanced"])
    assert "best single teacher" in (tmp_path / "s" / "compare.md").read_text()


def test_a_second_student_of_the_same_seed_reuses_the_teachers_outputs(
        tiny_synth: Path, tiny_teacher: Path, tmp_path: Path) -> None:
    """The pipeline's SNet1/2/3 see the same batches: the teacher runs for the first only."""
    from facedistill.pipeline.distill import TEACHER_CACHE

    TEACHER_CACHE.clear()
    first = compress(TrainConfig(**STUDENT), [tiny_teacher], tiny_synth, tmp_path / "a",
                     method="soft")
    second = compress(TrainConfig(**{**STUDENT, "arch": "snet2"}), [tiny_teacher], tiny_synth,
                      tmp_path / "b", method="hint")
    other_seed = compress(TrainConfig(**{**STUDENT, "seed": 1}), [tiny_teacher], tiny_synth,
                          tmp_path / "c", method="soft")
    steps = first["teacher_cache"]["misses"]
    assert steps > 0 and first["teacher_cache"]["hits"] == 0
    assert second["teacher_cache"] == {"hits": steps, "misses": 0}
    assert other_seed["teacher_cache"] == {"hits": 0, "misses": steps}
    TEACHER_CACHE.clear()
    # and the teacher was scored once for all three (memoised by sha256, data and split)
    from facedistill.pipeline.compress import _TEACHER_EVALS

    sha = first["distill"]["teachers"][0]["sha256"]
    assert len([k for k in _TEACHER_EVALS if k[0] == sha and k[2] == "test"]) == 1
    assert first["rows"][1] == second["rows"][1] == other_seed["rows"][1]
