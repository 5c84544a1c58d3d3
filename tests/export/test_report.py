"""The typed export report: what ``export_model`` returns is what it wrote, read back equal;
reports of older versions (lacking later keys) and of newer ones (with unknown keys) read;
a missing, corrupt or foreign file is a one-line error naming it."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from facedistill.errors import UserError
from facedistill.export.report import (
    REPORT_FORMAT,
    REPORT_NAME,
    ExportReport,
    VariantRecord,
    read_export_report,
)


def _on_disk(out: Path) -> dict[str, Any]:
    return json.loads((out / REPORT_NAME).read_text(encoding="utf-8"))


def test_round_trip_of_a_real_export(tiny_export: tuple[ExportReport, Path]) -> None:
    report, out = tiny_export
    assert isinstance(report, ExportReport)
    assert ExportReport.from_json(report.to_json()) == report
    assert read_export_report(out) == read_export_report(out / REPORT_NAME) == report
    # the file is the record's JSON, byte for byte (the writer's indent=2)
    assert (out / REPORT_NAME).read_text(encoding="utf-8") == \
        json.dumps(report.to_json(), indent=2) + "\n"
    assert report.format == REPORT_FORMAT and report.to_json()["format"] == REPORT_FORMAT
    assert report.report_path == out / REPORT_NAME
    assert report.ok_onnx() == {name: str(out / f"snet3.{name}.onnx")
                                for name in ("fp32", "fp16", "int8", "int8-trt")}
    assert report.ok_engines() == {}
    for name, v in report.variants.items():
        assert isinstance(v, VariantRecord) and v.ok and v.precision == name.split("-")[0]
        assert v.accuracy is not None and v.accuracy.split == "val"
        assert v.accuracy.n_images == 47
    assert report.data.eval is not None and report.data.eval.n_images == 47
    assert report.data.calibration is not None and report.data.calibration.method == "entropy"
    assert report.gate.enabled is False and report.gate.results is not None
    assert set(report.gate.results) == {"int8", "int8-trt"}
    assert report.gate.int8_drop_points == report.gate.results["int8"].drop_points
    assert report.arch is not None and report.arch["arch"] == "snet3"
    assert report.source.checkpoint is not None and report.source.onnx is None
    # keys that belong to a record only sometimes: absent, or null where null says something
    disk = _on_disk(out)["variants"]
    assert "qdq_conformance" not in disk["fp16"] and disk["int8"]["qdq_conformance"] is None
    assert "parity" not in disk["int8"] and "error" not in disk["fp32"]


def test_null_parity_of_an_onnx_source_is_kept(tiny_export: tuple[ExportReport, Path]
                                               ) -> None:
    """fp32 exported from an ONNX file has ``parity: null`` (not re-checked; see
    test_folder for a real one): a read keeps it, where other variants have no parity."""
    _, out = tiny_export
    rec = _on_disk(out)
    rec["source"] = {"onnx": "/x/snet3.fp32.onnx", "sha256": "0" * 64, "version": "0.1.0",
                     "note": "exported earlier; parity with PyTorch not re-checked"}
    rec["variants"]["fp32"]["parity"] = None
    del rec["variants"]["fp32"]["parity_logits"], rec["variants"]["fp32"]["opset"]
    report = ExportReport.from_json(rec)
    assert report.variants["fp32"].parity is None and report.source.checkpoint is None
    assert report.to_json() == rec


def test_an_older_report_lacking_later_keys_reads(tiny_export: tuple[ExportReport, Path],
                                                  tmp_path: Path) -> None:
    """A report from before INT8 recipes (no int8_recipes, recipe, qdq_conformance, gate
    results, integer-vs-emulated differences) and before the gate record had its kernels."""
    _, out = tiny_export
    old = copy.deepcopy(_on_disk(out))
    del old["int8_recipes"], old["gate"]["results"], old["variants"]["int8-trt"]
    int8 = old["variants"]["int8"]
    for key in ("recipe", "qdq_conformance", "max_abs_diff_integer_vs_emulated"):
        del int8[key]
    for key in ("recipe", "kernels", "max_abs_diff_integer_vs_emulated"):
        del int8["int8_gate"][key]
    (tmp_path / REPORT_NAME).write_text(json.dumps(old), encoding="utf-8")

    report = read_export_report(tmp_path)
    v = report.variants["int8"]
    assert v.recipe is None and v.qdq_conformance is None and v.int8_gate is not None
    assert v.int8_gate.kernels is None and v.int8_gate.drop_points is not None
    assert report.int8_recipes == {} and report.gate.results is None
    assert report.gate.passed is not None
    assert set(report.ok_onnx()) == {"fp32", "fp16", "int8"}
    # written again: what it had, plus the later keys' defaults where a key is always written
    again = report.to_json()
    assert again.pop("int8_recipes") == {}
    gate = again["variants"]["int8"]["int8_gate"]
    assert gate.pop("recipe") is None and gate.pop("kernels") is None
    assert gate.pop("max_abs_diff_integer_vs_emulated") is None
    assert again == old


def test_unknown_keys_of_a_newer_report_are_kept(tiny_export: tuple[ExportReport, Path]
                                                 ) -> None:
    report, _ = tiny_export
    newer = report.to_json()
    newer["signed_by"] = "a later facedistill"
    newer["variants"]["fp16"]["energy_mj"] = 1.5
    newer["variants"]["fp16"]["accuracy"]["per_attribute"] = [0.5, 0.6]
    read = ExportReport.from_json(newer)
    assert read.extra == {"signed_by": "a later facedistill"}
    assert read.variants["fp16"].extra == {"energy_mj": 1.5}
    assert read.to_json() == newer


def test_ok_onnx_lists_only_the_files_in_the_folder() -> None:
    report = ExportReport.from_json({"format": REPORT_FORMAT, "variants": {
        "fp32": {"path": "/e/m.fp32.onnx", "status": "ok"},
        "fp16": {"status": "failed", "error": "boom"},
        "int8": {"path": "/e/m.int8.onnx", "status": "failed", "rejected_by_gate": True},
        "int8-trt": {"path": "/e/m.int8-trt.onnx", "status": "ok", "carried_from": "then"}}})
    assert report.ok_onnx() == {"fp32": "/e/m.fp32.onnx", "int8-trt": "/e/m.int8-trt.onnx"}
    failed = report.variants["fp16"].to_json()
    assert failed == {"status": "failed", "error": "boom"}  # no keys it did not have


def _one_line(path: Path, named: Path | None = None) -> str:
    with pytest.raises(UserError) as err:
        read_export_report(path)
    line = err.value.format()
    assert "\n" not in line and line.startswith(f"{named or path}: "), line
    return line


def test_read_errors_are_one_line_naming_the_file(tmp_path: Path) -> None:
    assert "no export report here" in _one_line(tmp_path / REPORT_NAME)
    assert "no export report here" in _one_line(tmp_path, named=tmp_path / REPORT_NAME)

    bad = tmp_path / "truncated.json"
    bad.write_text('{"format": "facedistill.export_report/v1", "variants": {', encoding="utf-8")
    assert "not a readable export report (Expecting" in _one_line(bad)
    bad.write_bytes(b"\xff\xfe\x00garbage")
    assert "not a readable export report" in _one_line(bad)

    bad.write_text(json.dumps({"format": "facedistill.selection/v1", "k": 3}), encoding="utf-8")
    assert _one_line(bad).endswith(
        f"not a {REPORT_FORMAT} file (format 'facedistill.selection/v1')")
    bad.write_text(json.dumps([1, 2]), encoding="utf-8")
    assert _one_line(bad).endswith(f"not a {REPORT_FORMAT} file")
    bad.write_text(json.dumps({"variants": {}}), encoding="utf-8")  # every report has one
    assert _one_line(bad).endswith(f"not a {REPORT_FORMAT} file")

    bad.write_text(json.dumps({"format": REPORT_FORMAT, "variants": {
        "fp32": {"path": "m.onnx", "status": "ok", "size_bytes": "big"}}}), encoding="utf-8")
    assert _one_line(bad) == (f"{bad}: field 'variants.fp32.size_bytes': malformed export "
                              "report: expected an integer, got 'big'")
    bad.write_text(json.dumps({"format": REPORT_FORMAT, "variants": {"fp32": {"path": "m"}}}),
                   encoding="utf-8")
    assert "field 'variants.fp32.status': malformed export report: missing" in _one_line(bad)
    bad.write_text(json.dumps({"format": REPORT_FORMAT, "variants": []}), encoding="utf-8")
    assert "field 'variants': malformed export report: expected an object" in _one_line(bad)


def test_an_unreadable_previous_report_carries_nothing(tmp_path: Path) -> None:
    """The folder's previous report is only trusted when it reads: else no file is carried
    and none removed (nothing is known about them)."""
    from facedistill.export.folder import ExportFolder

    with ExportFolder(tmp_path) as folder:
        assert folder.previous_report() is None
    for text in ("{not json", json.dumps({"format": REPORT_FORMAT, "variants": [1]}),
                 json.dumps({"format": "other/v1"})):
        (tmp_path / REPORT_NAME).write_text(text, encoding="utf-8")
        with ExportFolder(tmp_path) as folder:
            assert folder.previous_report() is None
    (tmp_path / REPORT_NAME).write_text(json.dumps({"format": REPORT_FORMAT}), encoding="utf-8")
    with ExportFolder(tmp_path) as folder:
        assert folder.previous_report() == ExportReport()
