"""An export is one unit: staged, swapped in when complete, rolled forward after a kill in
its commit, never a mix of two exports; files of the previous export kept only when they
belong to the same model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from facedistill.errors import UserError
from tests.processes import kill_export_at


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _consistent(folder: Path, live: Path | None = None) -> dict[str, Any]:
    """The folder's report matches the files on disk, byte for byte, and no staging folder
    is left (but ``live``, one in use)."""
    from facedistill.io import sha256_file

    report = json.loads((folder / "export_report.json").read_text())
    for v in report["variants"].values():
        if v["status"] == "ok":
            assert sha256_file(v["path"]) == v["sha256"], v["path"]
    assert [p for p in folder.glob(".export-*") if p != live] == []
    return report


# -- the folder itself -----------------------------------------------------------------------

def test_commit_moves_the_staged_files_in_and_removes_the_stale(tmp_path: Path) -> None:
    from facedistill.export.folder import ExportFolder

    out = tmp_path / "out"
    out.mkdir()
    (out / "old.onnx").write_bytes(b"old")
    (out / "stale.onnx").write_bytes(b"stale")
    (out / "mine.txt").write_bytes(b"a user's file")
    with ExportFolder(out) as folder:
        folder.stage("old.onnx").write_bytes(b"new")
        folder.stage("added.onnx").write_bytes(b"added")
        assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
            "mine.txt", "old.onnx", "stale.onnx"]  # nothing visible before the commit
        folder.commit("report.json", {"n": 1}, remove=["stale.onnx"])
    assert _snapshot(out) == {"added.onnx": b"added", "mine.txt": b"a user's file",
                              "old.onnx": b"new", "report.json": b'{\n  "n": 1\n}\n'}


def test_a_failed_export_leaves_no_trace(tmp_path: Path) -> None:
    from facedistill.export.folder import ExportFolder

    out = tmp_path / "new" / "out"
    with pytest.raises(RuntimeError), ExportFolder(out) as folder:
        folder.stage("a.onnx").write_bytes(b"half")
        raise RuntimeError("a step failed")
    assert not out.exists()  # it created the folder, so it removes it
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "a.onnx").write_bytes(b"previous")
    with pytest.raises(RuntimeError), ExportFolder(kept) as folder:
        folder.stage("a.onnx").write_bytes(b"half")
        raise RuntimeError("a step failed")
    assert _snapshot(kept) == {"a.onnx": b"previous"} and not list(kept.glob(".*"))


def test_a_second_export_into_the_same_folder_is_refused(tmp_path: Path) -> None:
    from facedistill.export.folder import ExportFolder

    with ExportFolder(tmp_path) as first:
        with pytest.raises(UserError, match="another export is writing this folder") as err:
            ExportFolder(tmp_path).__enter__()
        assert err.value.path == str(tmp_path)
        first.commit("r.json", {})
    with ExportFolder(tmp_path) as again:  # released on leaving
        again.commit("r.json", {"again": True})


def test_a_commit_killed_half_way_is_finished_and_an_abandoned_attempt_removed(
        tmp_path: Path) -> None:
    """What a kill leaves, recovered by the next export into the folder."""
    from facedistill.export.folder import JOURNAL, ExportFolder

    out = tmp_path
    (out / "a.onnx").write_bytes(b"old a")
    (out / "gone.onnx").write_bytes(b"stale")
    decided = out / ".export-1.staging"  # killed after the journal, before the renames
    decided.mkdir()
    (decided / "a.onnx").write_bytes(b"new a")
    (decided / "r.json").write_bytes(b"new report")
    (decided / JOURNAL).write_text(json.dumps({"move": ["a.onnx", "r.json"],
                                               "remove": ["gone.onnx"]}))
    abandoned = out / ".export-2.staging"  # killed while building: no journal
    abandoned.mkdir()
    (abandoned / "a.onnx").write_bytes(b"half")
    with ExportFolder(out) as folder:
        assert not decided.exists() and not abandoned.exists()
        assert _snapshot(out) == {"a.onnx": b"new a", "r.json": b"new report"}
        folder.commit("r.json", {"next": True})


# -- export_model: what stays, what goes -----------------------------------------------------

@pytest.fixture
def fp32_source(tiny_export: tuple[dict[str, Any], Path], tmp_path: Path) -> Path:
    _, out = tiny_export
    src = tmp_path / "src" / "snet3.fp32.onnx"
    src.parent.mkdir()
    shutil.copyfile(out / "snet3.fp32.onnx", src)
    return src


def test_files_of_the_same_model_are_carried_and_of_another_removed(
        fp32_source: Path, tiny_synth: Path, tmp_path: Path) -> None:
    from facedistill.export import export_model

    out = tmp_path / "out"
    export_model(fp32_source, out, precision="fp16", eval_data=tiny_synth)
    fp16 = (out / "snet3.fp16.onnx").read_bytes()
    # re-export fp32 only: the fp16 of the same source stays and stays listed
    report = export_model(fp32_source, out, precision="fp32", eval_data=tiny_synth)
    assert report.precisions == ("fp32",)
    assert report.variants["fp16"].carried_from is not None
    assert report.ok_onnx() == {"fp32": str(out / "snet3.fp32.onnx"),
                                "fp16": str(out / "snet3.fp16.onnx")}
    # an ONNX source: parity not re-checked, written as null (and read back so)
    assert report.variants["fp32"].parity is None
    assert _consistent(out)["variants"]["fp32"]["parity"] is None
    assert (out / "snet3.fp16.onnx").read_bytes() == fp16
    assert _consistent(out)["variants"].keys() == {"fp32", "fp16"}

    # the folder's previous export was of another model: its fp16 would be stale
    previous = json.loads((out / "export_report.json").read_text())
    previous["source"]["sha256"] = "0" * 64
    (out / "export_report.json").write_text(json.dumps(previous))
    report = export_model(fp32_source, out, precision="fp32", eval_data=tiny_synth)
    assert "fp16" not in report.variants and not (out / "snet3.fp16.onnx").exists()
    assert _consistent(out)


def test_a_gate_rejection_keeps_the_accepted_int8_of_the_same_model(
        fp32_source: Path, tiny_synth: Path, tmp_path: Path) -> None:
    from facedistill.export import export_model
    from facedistill.export.api import GateError

    out = tmp_path / "out"
    export_model(fp32_source, out, precision="int8", no_gate=True, calib_n=32,
                 eval_data=tiny_synth)
    int8 = (out / "snet3.int8.onnx").read_bytes()
    with pytest.raises(GateError) as err:
        export_model(fp32_source, out, precision="int8", max_drop=-100.0, calib_n=32,
                     eval_data=tiny_synth)
    assert err.value.committed and err.value.rejected == ["int8"]
    assert "the export was written without int8" in err.value.format()
    assert (out / "snet3.int8.onnx").read_bytes() == int8
    report = _consistent(out)
    rejected = report["variants"]["int8"]
    assert rejected["status"] == "failed" and rejected["rejected_by_gate"] is True
    assert rejected["previous"]["path"] == str(out / "snet3.int8.onnx")


def test_a_full_disk_mid_export_keeps_the_previous_export(
        tiny_export: tuple[dict[str, Any], Path], tiny_teacher: Path, tmpfs: Any) -> None:
    """A disk that holds the previous export (1.4 MB) but not a second one: every step that
    writes fails with one line naming where its file was to go; nothing changes."""
    from facedistill.export import export_model
    from facedistill.export.api import ExportFailed

    _, previous = tiny_export
    out = tmpfs("2m") / "export"
    shutil.copytree(previous, out)
    before = _snapshot(out)
    with pytest.raises(ExportFailed) as err:
        export_model(tiny_teacher, out, calib_n=32, no_gate=True, trt_profile=(1, 4, 8))
    line = err.value.format()
    assert "\n" not in line and f"{out / 'snet3.fp32.onnx'}: cannot write: No space left" in line
    assert ".staging" not in line and f"nothing was written: {out} is as it was" in line
    assert _snapshot(out) == before and not err.value.committed


# -- real processes killed at known points ---------------------------------------------------

def test_a_kill_during_an_export_leaves_the_previous_one_intact(
        fp32_source: Path, tiny_synth: Path, tmp_path: Path) -> None:
    from facedistill.export import export_model

    out = tmp_path / "out"
    export_model(fp32_source, out, precision="fp16", eval_data=tiny_synth)
    before = _snapshot(out)
    kill_export_at("export:int8", fp32_source, out, tiny_synth)
    after = _snapshot(out)
    leftovers = {k for k in after if k.startswith(".export-")}
    assert leftovers and {k: v for k, v in after.items() if k not in leftovers} == before
    export_model(fp32_source, out, precision="fp32", eval_data=tiny_synth)
    assert _consistent(out)  # the abandoned staging folder is gone


@pytest.mark.parametrize("point", ["export:journal", "export:commit"])
def test_a_kill_in_the_commit_is_rolled_forward(fp32_source: Path, tiny_synth: Path,
                                                tmp_path: Path, point: str) -> None:
    """Killed after the journal (nothing moved yet) or after the first rename (a mix of two
    exports on disk): the next export into the folder first finishes that commit."""
    from facedistill.export import export_model
    from facedistill.export.folder import ExportFolder

    out = tmp_path / "out"
    export_model(fp32_source, out, precision="fp16", eval_data=tiny_synth)
    kill_export_at(point, fp32_source, out, tiny_synth)
    assert list(out.glob(".export-*.staging/COMMIT.json"))
    with ExportFolder(out) as folder:  # what every export does first
        report = _consistent(out, live=folder.staging)
        assert report["variants"].keys() == {"fp32", "fp16", "int8"}
        folder.commit("export_report.json", report)
