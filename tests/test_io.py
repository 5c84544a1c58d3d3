"""Atomic writes keep the old artifact when writing fails."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from facedistill.io import (
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    command_line,
    sha256_file,
)


def test_atomic_write_replaces(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "a.json"
    atomic_write_json(path, {"x": 1})
    atomic_write_json(path, {"x": 2})
    assert json.loads(path.read_text()) == {"x": 2}
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    atomic_write_text(path, "old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk on fire")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "b.bin"
    data = bytes(range(256)) * 5000
    path.write_bytes(data)
    assert sha256_file(path, chunk=1000) == hashlib.sha256(data).hexdigest()


def test_command_line_is_what_to_retype_from_the_current_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "benchmarks").mkdir()
    monkeypatch.chdir(tmp_path)
    script = str(tmp_path / "benchmarks" / "b.py")
    assert command_line([script, "--out", "a b", "--k", "5"]) == \
        "python benchmarks/b.py --out 'a b' --k 5"
    # a script outside the current folder keeps its path
    assert command_line(["/elsewhere/x.py"]) == "python /elsewhere/x.py"


def test_a_full_disk_is_a_one_line_error_and_keeps_the_old_file(small_disk: Path) -> None:
    import torch

    from facedistill.errors import UserError
    from facedistill.io import atomic_write_bytes

    path = small_disk / "model.bin"
    atomic_write_bytes(path, b"old")
    with pytest.raises(UserError, match="cannot write: No space left on device") as err:
        atomic_write_bytes(path, b"x" * (2 << 20))
    assert err.value.path == str(path)
    assert path.read_bytes() == b"old" and [p.name for p in small_disk.iterdir()] == ["model.bin"]
    # torch's writer says "unexpected pos" or "PytorchStreamWriter failed": the same error
    with pytest.raises(UserError, match="cannot write: no space left on device"), \
            atomic_path(small_disk / "ckpt.pt") as tmp:
        torch.save({"w": torch.zeros(1 << 19)}, tmp)
    assert sorted(p.name for p in small_disk.iterdir()) == ["model.bin"]


def test_train_onto_a_full_disk_exits_2_with_one_line(small_disk: Path, tiny_synth: Path
                                                      ) -> None:
    import subprocess
    import sys

    out = small_disk / "run"
    proc = subprocess.run([sys.executable, "-m", "facedistill", "train", "--arch", "tnet",
                           "--width", "0.25", "--size", "32", "--epochs", "1", "--batch-size",
                           "32", "--workers", "0", "--data", str(tiny_synth), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "cannot write" in lines[0]
    assert str(small_disk) in lines[0] and "Traceback" not in proc.stderr


def test_temp_files_a_killed_writer_left_are_swept_on_the_next_write(tmp_path: Path) -> None:
    import os
    import time

    from facedistill.io import STALE_DIR_S, STALE_FILE_S, staging_dir

    old = time.time() - STALE_FILE_S - 60
    stale = tmp_path / ".model.onnx.abc123.tmp"  # what atomic_path makes, left by kill -9
    fresh = tmp_path / ".model.onnx.def456.tmp"  # a writer still at work
    other = tmp_path / ".other.onnx.ghi789.tmp"  # another artifact's: not ours to judge
    for f in (stale, fresh, other):
        f.write_bytes(b"partial")
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    atomic_write_text(tmp_path / "model.onnx", "new")
    assert not stale.exists() and fresh.exists() and other.exists()
    # staging folders (data synth): a day old goes, a fresh one stays
    dead = tmp_path / ".synth.tmp-x1"
    live = tmp_path / ".synth.tmp-x2"
    for d in (dead, live):
        (d / "img").mkdir(parents=True)
    very_old = time.time() - STALE_DIR_S - 60
    os.utime(dead, (very_old, very_old))
    new = staging_dir(tmp_path / "synth")
    assert not dead.exists() and live.exists() and new.is_dir()
