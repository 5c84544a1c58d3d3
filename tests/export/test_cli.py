"""``facedistill export`` as a user runs it: a subprocess, exit codes, one-line errors."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def _cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "120"}
    return subprocess.run([sys.executable, "-m", "facedistill", "export", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def _one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def test_missing_run(tmp_path: Path) -> None:
    line = _one_line_error(_cli(tmp_path / "nope", "--quiet"))
    assert line == f"error: {tmp_path / 'nope'}: no such checkpoint file or run folder"


def test_a_failed_preflight_creates_no_output_folder(tiny_teacher: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    line = _one_line_error(_cli(bad, "--out", tmp_path / "a", "--quiet"))
    assert str(bad) in line and "not a PyTorch checkpoint" in line
    line = _one_line_error(_cli(tiny_teacher, "--int8", "--calib-data", tmp_path / "none",
                                "--out", tmp_path / "b", "--quiet"))
    assert "calibration data folder does not exist" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pt"]


def test_bad_options_exit_2(tiny_teacher: Path, tmp_path: Path) -> None:
    line = _one_line_error(_cli(tiny_teacher, "--trt-profile", "8,1", "--out", tmp_path))
    assert "field 'trt_profile'" in line and "min <= opt <= max" in line
    line = _one_line_error(_cli(tiny_teacher, "--precision", "fp8", "--out", tmp_path))
    assert "unknown precision 'fp8'" in line
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = _one_line_error(_cli(tiny_teacher, "--out", blocker / "sub"))
    assert f"{blocker / 'sub'}: cannot write to the output folder" in line


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None,
                    reason="tensorrt is installed here")
def test_trt_without_tensorrt(tiny_teacher: Path, tmp_path: Path) -> None:
    line = _one_line_error(_cli(tiny_teacher, "--trt", "--out", tmp_path / "o"))
    assert "TensorRT is not installed" in line
    assert "'facedistill[trt-cu13]'" in line and "'facedistill[trt-jetson]'" in line
    assert not (tmp_path / "o").exists()  # refused before any work


def test_json_from_a_run_prints_nothing_else(tiny_teacher: Path, tmp_path: Path) -> None:
    """The torch exporter, ONNX Runtime and the quantizer are silenced: with --json, stdout is
    exactly the report and stderr is empty."""
    done = _cli(tiny_teacher, "--onnx", "--trt-profile", "1,2,4", "--json", "--out", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    report = json.loads(done.stdout)
    assert list(report["variants"]) == ["fp32"]
    fp32 = report["variants"]["fp32"]
    assert set(fp32["parity"]) == {"1", "4"} and max(fp32["parity"].values()) <= 1e-4
    assert fp32["accuracy"]["n_images"] == 47
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export_report.json",
                                                         "snet3.fp32.onnx"]


def test_int8_gate_from_onnx(tiny_export: tuple[dict[str, Any], Path], tiny_synth: Path,
                             tmp_path: Path) -> None:
    _, out = tiny_export
    src = tmp_path / "snet3.fp32.onnx"
    shutil.copyfile(out / "snet3.fp32.onnx", src)
    done = _cli(src, "--int8", "--calib-n", "32", "--max-drop", "-100", "--data", tiny_synth,
                "--quiet")
    line = _one_line_error(done)
    assert line.startswith(f"error: {tmp_path / 'snet3.int8.onnx'}: INT8 rejected")
    assert not (tmp_path / "snet3.int8.onnx").exists()  # default out: beside the ONNX
    report = json.loads((tmp_path / "export_report.json").read_text())
    assert report["variants"]["int8"]["status"] == "failed"
    assert report["variants"]["fp32"]["accuracy"]["n_images"] == 47


def test_table_output(tiny_export: tuple[dict[str, Any], Path], tiny_synth: Path,
                      tmp_path: Path) -> None:
    _, out = tiny_export
    done = _cli(out / "snet3.fp32.onnx", "--onnx", "--data", tiny_synth, "--quiet", "--out",
                tmp_path)
    assert done.returncode == 0, done.stderr
    assert "snet3 export (accuracy on val, 47 images)" in done.stdout
    row = next(ln for ln in done.stdout.splitlines() if "fp32" in ln and "%" in ln)
    fp32 = tiny_export[0].variants["fp32"].accuracy
    assert fp32 is not None and fp32.mean_balanced is not None
    acc = fp32.mean_balanced
    assert f"{100 * acc:.2f}%" in row and "+0.00 pt" in row
    assert f"wrote {tmp_path / 'export_report.json'}" in done.stdout


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_failing_precision_writes_nothing_and_keeps_the_previous_export(
        tiny_export: tuple[dict[str, Any], Path], tiny_synth: Path, tmp_path: Path) -> None:
    """A corrupt training image breaks INT8 calibration: fp16 is still converted and scored
    (the table shows it), the error names the image for both recipes, exit code 2 - and the
    folder keeps the previous export byte for byte (a first export leaves no folder)."""
    _, out = tiny_export
    data = tmp_path / "data"
    shutil.copytree(tiny_synth, data)
    first_train = next(line.split()[0] for line in
                       (data / "list_eval_partition.txt").read_text().splitlines()
                       if line.split()[1] == "0")
    bad = data / "img_align_celeba" / first_train
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    args = (out / "snet3.fp32.onnx", "--precision", "fp16,int8", "--int8-recipe",
            "cpu,tensorrt", "--calib-n", "100000", "--data", data, "--quiet")
    first = tmp_path / "first"
    line = _one_line_error(_cli(*args, "--out", first))
    assert "2 export steps failed" in line and first_train in line
    assert not first.exists()

    dest = tmp_path / "export"
    shutil.copytree(out, dest)
    before = _snapshot(dest)
    done = _cli(*args, "--out", dest)
    line = _one_line_error(done)
    assert "2 export steps failed" in line and first_train in line
    assert f"nothing was written: {dest} is as it was" in line
    assert _snapshot(dest) == before
    assert "int8 failed" in done.stdout and "int8-trt failed" in done.stdout  # the table
    row = next(ln for ln in done.stdout.splitlines() if "fp16" in ln and "%" in ln)
    assert " ok " in row
    assert "wrote " not in done.stdout

    done = _cli(*args, "--out", dest, "--json")  # --json: the attempt's report on stdout
    report = json.loads(done.stdout)
    v = report["variants"]
    assert (v["fp32"]["status"], v["fp16"]["status"]) == ("ok", "ok")
    assert v["fp16"]["accuracy"]["n_images"] == 47
    for name in ("int8", "int8-trt"):
        assert v[name]["status"] == "failed" and first_train in v[name]["error"]
    assert _snapshot(dest) == before


def test_int8_recipe_option(tiny_teacher: Path, tmp_path: Path) -> None:
    line = _one_line_error(_cli(tiny_teacher, "--int8-recipe", "avx2", "--out", tmp_path))
    assert "field 'int8_recipe'" in line and "cpu, cpu-vnni, tensorrt" in line
    line = _one_line_error(_cli(tiny_teacher, "--int8-recipe", "cpu,cpu-vnni", "--out",
                                tmp_path))
    assert "both write the CPU file" in line
