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
