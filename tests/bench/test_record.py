"""The typed bench records: a real run survives to_json/from_json and bench.json unchanged,
older files still read (missing fields take their defaults), bad files are one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from facedistill.bench import markdown_table, read_bench, write_outputs
from facedistill.bench.core import _Bench
from facedistill.bench.record import (
    FORMAT,
    Accuracy,
    BenchResult,
    BenchRow,
    LatencyStats,
    Power,
    Skipped,
)
from facedistill.bench.report import to_json
from facedistill.config import BenchConfig
from facedistill.errors import UserError

from .test_bench import exported  # noqa: F401  (the module fixture: tiny FP32 + INT8 ONNX)

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


@pytest.fixture(scope="module")
def small(exported: dict[str, Path], tiny_synth: Path) -> BenchResult:  # noqa: F811
    """A real run (what run_bench does, whatever its options look like)."""
    return _Bench().run([exported["fp32"], exported["int8"]],
                        BenchConfig(batch=(1, 2), warmup=1, iters=2, threads=1, limit=16,
                                    openvino=False),
                        data=tiny_synth)


def test_a_real_run_round_trips(small: BenchResult, tmp_path: Path) -> None:
    assert isinstance(small, BenchResult) and small.format == FORMAT
    assert len(small.rows) == 4 and all(isinstance(r, BenchRow) for r in small.rows)
    assert all(isinstance(r.latency_ms, LatencyStats) and isinstance(r.accuracy, Accuracy)
               for r in small.rows)
    assert BenchResult.from_json(small.to_json()) == small
    # and through the file: what is read back is the run, and writing it again changes nothing
    (path,) = write_outputs(small, json_path=tmp_path / "bench.json")
    text = path.read_text()
    back = read_bench(path)
    assert back == small and read_bench(tmp_path) == small  # a folder means its bench.json
    assert to_json(back) == text
    assert markdown_table(back) == markdown_table(small)


def test_the_json_keeps_its_keys_and_order(small: BenchResult) -> None:
    data = json.loads(to_json(small))
    assert list(data) == ["format", "version", "created", "config", "environment", "rows",
                          "skipped", "floors"]
    assert list(data["rows"][0]) == [
        "model", "arch", "source_sha256", "artifact", "kind", "backend", "precision", "mode",
        "layout", "batch", "input_shape", "threads", "warmup", "runs", "latency_ms",
        "per_image_ms", "throughput_ips", "gpu_compute_ms", "params", "macs", "file_bytes",
        "accuracy", "power", "details", "reasons", "floor_ms", "x_floor", "bound_ms",
        "peak_pct"]
    assert list(data["rows"][0]["latency_ms"]) == ["median", "p90", "p99", "mean", "min",
                                                   "max", "std"]
    assert list(data["rows"][0]["accuracy"]) == ["split", "mean_balanced", "n_images",
                                                 "delta_to_fp32", "reference"]
    assert data["rows"][0]["input_shape"] == [1, 3, 32, 32] and data["skipped"] == []
    # the JSON object is a copy: changing it leaves the frozen record as it was
    js = small.to_json()
    js["rows"][0]["details"]["changed"] = True
    js["config"]["backend"] = "changed"
    assert "changed" not in small.rows[0].details and small.config["backend"] != "changed"


@pytest.mark.parametrize("name", sorted(p.name for p in RESULTS.glob("bench_*.json")))
def test_committed_results_read_and_write_back_byte_identical(name: str) -> None:
    path = RESULTS / name
    res = read_bench(path)
    assert res.rows and res.version == "0.1.0"
    assert to_json(res) == path.read_text()


def test_an_older_row_without_later_fields_takes_the_defaults(small: BenchResult) -> None:
    data = small.to_json()
    del data["skipped"]
    row = data["rows"][0]
    for key in ("mode", "layout", "source_sha256", "gpu_compute_ms", "details", "reasons",
                "per_image_ms", "throughput_ips"):
        row.pop(key, None)
    row["power"] = {"source": "sysfs", "rail": "VDD_IN", "mean_mw": 5080.0,
                    "rails_mw": {"VDD_IN": 5080.0}, "samples": 12,
                    "energy_mj_per_image": 1.5, "seconds": 2.0}  # no "runs" yet
    res = BenchResult.from_json(data)
    old = res.rows[0]
    assert res.skipped == () and res.rows[1:] == small.rows[1:]
    assert old.mode == "default" and old.layout == "" and old.source_sha256 is None
    assert old.gpu_compute_ms is None and old.details == {} and old.reasons == {}
    assert old.per_image_ms == pytest.approx(old.latency_ms.median / old.batch)
    assert old.throughput_ips == pytest.approx(old.batch / (old.latency_ms.mean / 1000))
    assert old.power == Power(source="sysfs", rail="VDD_IN", mean_mw=5080.0,
                              rails_mw={"VDD_IN": 5080.0}, samples=12,
                              energy_mj_per_image=1.5, seconds=2.0, runs=None)
    assert old.latency_ms == small.rows[0].latency_ms and old.accuracy == small.rows[0].accuracy
    assert "mJ/img" in markdown_table(res)  # the report reads it like a new one


def test_non_finite_numbers_are_null_in_the_file_and_nan_when_read(small: BenchResult,
                                                                   tmp_path: Path) -> None:
    from dataclasses import replace

    row = replace(small.rows[0], throughput_ips=math.inf)
    res = replace(small, rows=(row,), skipped=(Skipped(
        artifact="m.onnx", precision="fp32", backend="ort-cpu", batch=8,
        reason="the model takes batch 1 only (static batch axis)"),))
    (path,) = write_outputs(res, json_path=tmp_path / "b.json")
    assert json.loads(path.read_text())["rows"][0]["throughput_ips"] is None
    back = read_bench(path)
    assert math.isnan(back.rows[0].throughput_ips) and back.skipped == res.skipped
    assert to_json(back) == path.read_text()
    assert "Skipped m.onnx fp32 batch 8: the model takes batch 1 only" in markdown_table(back)


def _one_line_error(path: Path) -> str:
    with pytest.raises(UserError) as exc:
        read_bench(path)
    line = str(exc.value)
    assert "\n" not in line and str(path) in line and exc.value.path == str(path)
    return line


def test_bad_files_are_one_line_errors_naming_the_file(small: BenchResult,
                                                       tmp_path: Path) -> None:
    (path,) = write_outputs(small, json_path=tmp_path / "bench.json")
    text = path.read_text()

    missing = tmp_path / "nothing.json"
    assert "no bench file here" in _one_line_error(missing)

    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text(text[: len(text) // 2])
    assert "not a readable bench file" in _one_line_error(corrupt)

    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert "not a readable bench file" in _one_line_error(binary)

    other = tmp_path / "selection.json"
    other.write_text(json.dumps({"format": "facedistill.selection/v1", "k": 3}))
    line = _one_line_error(other)
    assert f"not a {FORMAT} file" in line and "facedistill.selection/v1" in line

    not_object = tmp_path / "list.json"
    not_object.write_text("[1, 2]")
    assert f"not a {FORMAT} file" in _one_line_error(not_object)

    data = json.loads(text)
    del data["rows"][1]["latency_ms"]
    bad_row = tmp_path / "bad_row.json"
    bad_row.write_text(json.dumps(data))
    line = _one_line_error(bad_row)
    assert "rows[1].latency_ms" in line and "missing" in line

    data = json.loads(text)
    data["rows"][0]["batch"] = "one"
    bad_batch = tmp_path / "bad_batch.json"
    bad_batch.write_text(json.dumps(data))
    assert "rows[0].batch" in _one_line_error(bad_batch)
