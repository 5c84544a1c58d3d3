"""The bench for real on this CPU: a checkpoint (torch), its FP32 and INT8 ONNX exports (ORT).

Iterations are tiny; what is asserted is behaviour and exact bookkeeping (counts, params, MACs,
accuracy deltas, fake-clock latencies), never speed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from facedistill.bench import markdown_table, run_bench, write_outputs
from facedistill.bench.artifacts import engine_onnx
from facedistill.bench.core import _Bench
from facedistill.bench.environment import cpu_has_bf16
from facedistill.bench.record import BenchResult, BenchRow, LatencyStats, read_bench
from facedistill.bench.report import to_json
from facedistill.config import BenchConfig
from facedistill.io import sha256_file
from facedistill.runtime.openvino import have_openvino

from .jetson_fixtures import make_jetson
from .test_stats import FakeClock

ITERS, WARMUP, BATCHES, LIMIT = 2, 1, (1, 4), 32


@pytest.fixture(scope="module")
def exported(tiny_teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``tiny_teacher`` exported with the export engineer's ``export_model``: FP32 + INT8."""
    from facedistill.export import export_model

    out = tmp_path_factory.mktemp("bench_export")
    export_model(tiny_teacher, out, precision="fp32,int8", calib_n=32, no_gate=True,
                 no_eval=True, trt_profile=(1, 4, 8))
    return {"fp32": out / "snet3.fp32.onnx", "int8": out / "snet3.int8.onnx",
            "run": tiny_teacher}


@pytest.fixture(scope="module")
def result(exported: dict[str, Path], tiny_synth: Path) -> BenchResult:
    return run_bench([exported["fp32"], exported["int8"], exported["run"]], batch=BATCHES,
                     warmup=WARMUP, iters=ITERS, threads=1, data=tiny_synth, limit=LIMIT)


def _row(result: BenchResult, backend: str, precision: str, batch: int) -> BenchRow:
    hits = [r for r in result.rows if (r.backend, r.precision, r.batch)
            == (backend, precision, batch)]
    assert len(hits) == 1, (backend, precision, batch)
    return hits[0]


def test_every_artifact_kind_runs_on_cpu(result: BenchResult, exported: dict[str, Path]
                                         ) -> None:
    import torch

    from facedistill.nn.checkpoint import load_checkpoint, model_from_checkpoint
    from facedistill.nn.models import count_macs, count_params

    torch_precisions = ["fp32", "bf16"] if cpu_has_bf16()[0] else ["fp32"]
    expected = {("ort-cpu", "fp32"), ("ort-cpu", "int8")} | {
        ("torch-cpu", p) for p in torch_precisions}
    if have_openvino():  # each ONNX file also through OpenVINO, in the same rounds
        expected |= {("ov-cpu", "fp32"), ("ov-cpu", "int8")}
    got = {(r.backend, r.precision) for r in result.rows}
    assert got == expected
    assert len(result.rows) == len(expected) * len(BATCHES)
    assert result.config["rounds"] == ITERS and result.config["interleaved"] is True

    ckpt = load_checkpoint(exported["run"])
    model = model_from_checkpoint(ckpt)
    params = count_params(model)
    bn_channels = sum(m.num_features for m in model.modules()
                      if isinstance(m, torch.nn.BatchNorm2d))
    macs = count_macs(model, 32)
    sha = sha256_file(ckpt["path"])
    for r in result.rows:
        lat = r.latency_ms
        assert r.runs == ITERS and r.warmup == WARMUP
        assert lat.min <= lat.median <= lat.p90 <= lat.p99 <= lat.max
        assert r.throughput_ips == pytest.approx(r.batch / (lat.mean / 1000))
        assert r.per_image_ms == pytest.approx(lat.median / r.batch)
        assert r.input_shape == (r.batch, 3, 32, 32)
        assert r.model == "snet3-w0.5" and r.source_sha256 == sha
        assert r.macs == macs
        # the exporter folds every BatchNorm (2C parameters) into a conv bias (C)
        assert r.params == (params if r.kind == "checkpoint" else params - bn_channels)
        assert r.gpu_compute_ms is None and "CPU" in r.reasons["gpu_compute_ms"]
        assert r.power is None and "not a Jetson" in r.reasons["power"]
        assert r.threads == 1
    assert _row(result, "ort-cpu", "fp32", 1).file_bytes == exported["fp32"].stat().st_size
    assert _row(result, "ort-cpu", "int8", 1).file_bytes == exported["int8"].stat().st_size
    assert _row(result, "torch-cpu", "fp32", 4).layout == "channels_last"
    env = result.environment
    assert env["torch"] == torch.__version__ and env["threads_used"]["torch"] == 1


def test_accuracy_and_delta_to_the_fp32_reference(result: BenchResult,
                                                  exported: dict[str, Path]) -> None:
    fp32 = _row(result, "ort-cpu", "fp32", 1).accuracy
    int8 = _row(result, "ort-cpu", "int8", 1).accuracy
    torch32 = _row(result, "torch-cpu", "fp32", 1).accuracy
    assert fp32 is not None and int8 is not None and torch32 is not None
    assert fp32.n_images == int8.n_images == torch32.n_images == LIMIT
    assert fp32.split == "val"
    assert fp32.reference == str(exported["fp32"]) and fp32.delta_to_fp32 == 0.0
    assert int8.reference == str(exported["fp32"])
    assert int8.delta_to_fp32 == pytest.approx(int8.mean_balanced - fp32.mean_balanced)
    # torch and ORT agree to ~1e-7 in probability: at most one image may flip a threshold
    assert torch32.mean_balanced == pytest.approx(fp32.mean_balanced, abs=0.02)
    for b in BATCHES[1:]:  # accuracy is per variant, the same on every batch row
        assert _row(result, "ort-cpu", "int8", b).accuracy == int8
    assert 0.4 < fp32.mean_balanced <= 1.0


REQUIRED_ROW = {
    "model": str, "arch": dict, "artifact": str, "kind": str, "backend": str, "precision": str,
    "mode": str, "layout": str, "batch": int, "input_shape": list, "warmup": int, "runs": int,
    "latency_ms": dict, "per_image_ms": float, "throughput_ips": float, "file_bytes": int,
    "reasons": dict, "details": dict,
}
NULLABLE_ROW = {"source_sha256": str, "threads": int, "gpu_compute_ms": dict, "params": int,
                "macs": int, "accuracy": dict, "power": dict}
REQUIRED_ENV = {"cpu_arch": str, "cores_logical": int, "os": str, "python": str,
                "threads_used": dict, "reasons": dict, "cpu_bf16": bool}
NULLABLE_ENV = {"cpu_model": str, "cores_physical": int, "numpy": str, "onnxruntime": str,
                "tensorrt": str, "cuda": str, "gpu_name": str, "torch": str, "jetson": dict,
                "threads_requested": int}


def test_json_schema_of_a_result(result: BenchResult) -> None:
    data = json.loads(to_json(result))
    assert data["format"] == "facedistill.bench/v1" and isinstance(data["created"], str)
    for key in ("artifacts", "backend", "batches", "warmup", "iters", "seconds", "rounds",
                "threads", "data", "split", "limit", "input_seed"):
        assert key in data["config"], key
    env = data["environment"]
    for key, typ in REQUIRED_ENV.items():
        assert isinstance(env[key], typ), key
    for key, typ in NULLABLE_ENV.items():
        assert key in env and (isinstance(env[key], typ) or env["reasons"].get(key)), key
    for row in data["rows"]:
        for key, typ in REQUIRED_ROW.items():
            assert isinstance(row[key], typ), key
        for key, typ in NULLABLE_ROW.items():
            assert key in row, key
            if row[key] is None:
                assert key in row["reasons"] or key == "source_sha256", key
            else:
                assert isinstance(row[key], typ), key
        assert set(row["latency_ms"]) == {"median", "p90", "p99", "mean", "min", "max", "std"}
        assert all(isinstance(v, float) for v in row["latency_ms"].values())
        if row["accuracy"] is not None:
            assert {"split", "mean_balanced", "n_images", "delta_to_fp32",
                    "reference"} <= set(row["accuracy"])


def test_outputs_json_markdown_and_png(result: BenchResult, tmp_path: Path) -> None:
    out = tmp_path / "deep" / "bench"
    written = write_outputs(result, json_path=out.with_suffix(".json"),
                            md_path=out.with_suffix(".md"), plot_path=out.with_suffix(".png"))
    assert [p.suffix for p in written] == [".json", ".md", ".png"]
    assert json.loads(out.with_suffix(".json").read_text()) == json.loads(to_json(result))
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = out.with_suffix(".md").read_text()
    assert md == markdown_table(result)
    main_table, speedups = [b for b in md.split("\n\n") if b.startswith("| ")][:2]
    table = [ln for ln in main_table.splitlines() if ln.startswith("| snet3")]
    assert len(table) == len(result.rows)
    # speed-ups: int8 vs fp32 (ORT) per batch, and bf16 vs fp32 (torch) when the CPU has bf16
    assert "| int8 ms | int8 speed-up |" in speedups
    for b in BATCHES:
        line = next(ln for ln in speedups.splitlines()
                    if ln.startswith(f"| snet3-w0.5 | ort-cpu | {b} |"))
        want = (_row(result, "ort-cpu", "fp32", b).latency_ms.median
                / _row(result, "ort-cpu", "int8", b).latency_ms.median)
        assert line.rstrip(" |").endswith(f"{want:.2f}x")
    precisions = [ln.split("|")[2].strip() for ln in table]
    order = {"fp32": 0, "bf16": 1, "fp16": 2, "int8": 3}
    assert precisions == sorted(precisions, key=order.__getitem__)  # sorted by precision
    assert "| model | precision | backend | batch | median ms |" in md
    assert "ref" in md and "snet3.int8.onnx" in md
    assert not list(out.parent.glob(".*.tmp"))  # atomic writes leave no temp files


def test_fake_clock_gives_exact_latencies_end_to_end(exported: dict[str, Path]) -> None:
    # 4 rounds of one config: durations 2, 8, 4, 6 ms -> median 5, p90 7.4, p99 7.94
    stamps = [0.0, 0.002, 1.0, 1.008, 2.0, 2.004, 3.0, 3.006]
    res = _Bench(clock=FakeClock(stamps), query_tools=False).run(
        [exported["fp32"]],
        BenchConfig(backend="ort", batch=(2,), warmup=1, iters=4, threads=1, floors=False))
    (row,) = res.rows
    lat = row.latency_ms
    assert lat.median == pytest.approx(5.0, abs=1e-9)
    assert lat.p90 == pytest.approx(7.4, abs=1e-9)
    assert lat.p99 == pytest.approx(7.94, abs=1e-9)
    assert lat.mean == pytest.approx(5.0, abs=1e-9) and lat.max == pytest.approx(8.0)
    assert row.throughput_ips == pytest.approx(400.0)  # 2 images per 5 ms
    assert row.accuracy is None and row.reasons["accuracy"] == "no --data given"
    # every "-" of the table has a footnote with its reason (here: a row without params)
    blind = dataclasses.replace(row, params=None, macs=None,
                                reasons={**row.reasons, "params": "engine: no ONNX beside it",
                                         "macs": "engine: no ONNX beside it"})
    md = markdown_table(dataclasses.replace(res, rows=[blind]))
    assert "| -[1] | -[2] |" in md
    assert "[1] params '-': engine: no ONNX beside it." in md
    assert "[2] MACs '-': engine: no ONNX beside it." in md


def test_power_and_jetson_record_on_a_fixture_jetson(exported: dict[str, Path],
                                                     tmp_path: Path) -> None:
    root = make_jetson(tmp_path / "orin")
    res = _Bench(root=root, power_seconds=0.02).run(
        [exported["int8"]],
        BenchConfig(backend="auto", batch=(2,), warmup=0, iters=2, threads=1, openvino=False))
    (row,) = res.rows
    power = row.power
    assert power is not None and power.runs is not None
    assert power.source == "sysfs" and power.rail == "VDD_IN"
    assert power.mean_mw == pytest.approx(5080.0)
    assert power.runs >= 5
    assert power.energy_mj_per_image == pytest.approx(
        5080.0 * power.seconds / (power.runs * 2))
    assert "power" not in row.reasons
    jet = res.environment["jetson"]
    assert jet["jetpack"] == "6.0" and jet["power_mode"] == {"id": 0, "name": "15W"}
    md = markdown_table(res)
    assert "mJ/img" in md and "L4T 36.3.0, JetPack 6.0, power mode 15W" in md


def test_engine_finds_the_onnx_it_was_built_from(exported: dict[str, Path],
                                                 tmp_path: Path) -> None:
    onnx = tmp_path / "renamed.onnx"
    shutil.copy(exported["int8"], onnx)
    shutil.copy(exported["fp32"], tmp_path / "other.onnx")
    engine = tmp_path / "snet3.int8.engine"
    engine.write_bytes(b"not really an engine")
    assert engine_onnx(engine) is None  # no sidecar
    (tmp_path / "snet3.int8.engine.json").write_text(
        json.dumps({"onnx": "snet3.int8.onnx", "onnx_sha256": sha256_file(onnx)}))
    assert engine_onnx(engine) == onnx


NO_TORCH = r"""
import json, sys


class NoTorch:  # as if torch were not installed
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None


sys.meta_path.insert(0, NoTorch())
from facedistill.cli import main

main(sys.argv[1:])
print(json.dumps(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))))
"""


def test_bench_of_onnx_files_never_imports_torch(exported: dict[str, Path], tiny_synth: Path,
                                                 tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    args = ["bench", str(exported["fp32"]), str(exported["int8"]), "--iters", "2", "--warmup",
            "1", "--batch", "1,2", "--threads", "1", "--data", str(tiny_synth), "--limit", "16",
            "--json-out", str(out), "--md", str(tmp_path / "r.md"), "--quiet", "--no-openvino"]
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, *args], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
    data = read_bench(out)
    assert len(data.rows) == 4 and data.environment["torch"] is None
    assert all(r.params and r.macs and r.accuracy and r.accuracy.n_images == 16
               for r in data.rows)


def test_json_prints_to_stdout_like_every_verb(exported: dict[str, Path],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from facedistill.cli import main

    main(["bench", str(exported["fp32"]), "--iters", "2", "--warmup", "0", "--batch", "1",
          "--threads", "1", "--json", "--no-openvino"])
    data = BenchResult.from_json(json.loads(capsys.readouterr().out))
    assert [r.batch for r in data.rows] == [1] and data.rows[0].precision == "fp32"
    line = _cli_error(capsys, str(exported["fp32"]), "--json", "out.json")
    assert "out.json is not an artifact" in line and "--json-out FILE" in line


# -- one-line errors -----------------------------------------------------------------------


def _cli_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    from facedistill.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["bench", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0]
    return err[0]


@pytest.fixture(scope="module")
def broken(exported: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
           ) -> dict[str, Path]:
    import onnx
    from onnx import TensorProto, helper

    d = tmp_path_factory.mktemp("broken")
    (d / "noise.onnx").write_bytes(bytes(range(256)) * 8)
    data = exported["fp32"].read_bytes()
    (d / "half.onnx").write_bytes(data[: len(data) // 2])
    (d / "bad.pt").write_bytes(b"PK\x03\x04 not really a zip")
    (d / "notes.txt").write_text("hello")
    (d / "empty").mkdir()
    (d / "x.engine").write_bytes(b"engine")
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])
    y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3, 32, 32])
    graph = helper.make_graph([helper.make_node("Sigmoid", ["input"], ["probabilities"])],
                              "plain", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(d / "plain.onnx"))
    return d


@pytest.mark.parametrize("name, extra, needles", [
    ("missing.onnx", [], ["missing.onnx", "no such file or folder"]),
    ("notes.txt", [], ["notes.txt", "unknown artifact type '.txt'"]),
    ("noise.onnx", [], ["noise.onnx", "not a loadable ONNX model"]),
    ("half.onnx", [], ["half.onnx", "not a loadable ONNX model"]),
    ("bad.pt", [], ["bad.pt", "not a PyTorch checkpoint"]),
    ("plain.onnx", [], ["plain.onnx", "not a facedistill model"]),
    ("empty", [], ["empty", "folder holds no best.pt/last.pt, .onnx or .engine"]),
])
def test_bad_artifacts_are_one_line_errors(broken: Path, capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path, name: str, extra: list[str],
                                           needles: list[str]) -> None:
    out = tmp_path / "r.json"
    line = _cli_error(capsys, str(broken / name), "--iters", "1", "--warmup", "0",
                      "--json-out", str(out), *extra)
    for needle in needles:
        assert needle in line
    assert not out.exists()


def test_missing_tensorrt_says_what_to_install(exported: dict[str, Path], broken: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    line = _cli_error(capsys, str(exported["fp32"]), "--backend", "trt")
    assert "--backend trt needs TensorRT, which is not installed: pip install " \
           "'facedistill[trt-cu13]'" in line
    line = _cli_error(capsys, str(broken / "x.engine"))
    assert "a TensorRT engine needs TensorRT" in line and "JetPack" in line


def test_wrong_backend_and_bad_options(exported: dict[str, Path],
                                       capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    onnx, run = str(exported["fp32"]), str(exported["run"])
    assert "export the checkpoint first" in _cli_error(capsys, run, "--backend", "ort")
    assert "torch runs checkpoints" in _cli_error(capsys, onnx, "--backend", "torch")
    assert "not both" in _cli_error(capsys, onnx, "--iters", "2", "--seconds", "1")
    assert "'--batch'" in _cli_error(capsys, onnx, "--batch", "1,0")
    assert "no such data folder" in _cli_error(capsys, onnx, "--iters", "1", "--data",
                                               str(tmp_path / "nodata"))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if matplotlib were not installed
    line = _cli_error(capsys, onnx, "--plot", str(tmp_path / "p.png"))
    assert "pip install matplotlib" in line and not (tmp_path / "p.png").exists()


def test_seconds_mode_and_progress(exported: dict[str, Path]) -> None:
    seen: list[tuple[int, int]] = []
    res = run_bench([exported["int8"]], batch=(1,), warmup=2, seconds=0.05, openvino=False,
                    progress=lambda d, t: seen.append((d, t)))
    (row,) = res.rows
    assert row.runs >= 3 and res.config["seconds"] == 0.05
    # the floors (an empty graph at batch 1, fp32 and int8 products) run in the same rounds
    assert seen and seen[-1][0] == seen[-1][1] == (1 + 3) * (2 + row.runs)
    assert all(d <= t for d, t in seen) and not math.isnan(row.latency_ms.median)


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
def test_torch_on_cuda_runs_eager_and_cuda_graph_replay(exported: dict[str, Path],
                                                        tiny_synth: Path) -> None:
    res = run_bench([exported["run"]], batch=BATCHES, warmup=WARMUP, iters=3,
                    data=tiny_synth, limit=LIMIT)
    rows = res.rows
    assert {(r.backend, r.precision, r.mode) for r in rows} == {
        ("torch-cuda", "fp32", "default"), ("torch-cuda", "fp32", "cuda_graph"),
        ("torch-cuda", "fp16", "autocast"), ("torch-cuda", "fp16", "cuda_graph")}
    assert len(rows) == 4 * len(BATCHES)
    for r in rows:
        assert r.gpu_compute_ms is not None and r.gpu_compute_ms.median > 0
        acc = r.accuracy
        assert acc is not None and acc.n_images == LIMIT
        # the graph replays the kernels eager mode ran: the same predictions up to rounding
        if r.precision == "fp32":
            assert acc.delta_to_fp32 == pytest.approx(0.0, abs=0.005)
    graph = [r for r in rows if r.mode == "cuda_graph" and r.precision == "fp32"]
    assert sorted(r.batch for r in graph) == sorted(BATCHES)


def test_speedup_table_reports_cuda_graph_replay_against_plain_fp32() -> None:
    from facedistill.bench.report import speedup_table, speedups

    def row(model: str, precision: str, mode: str, batch: int, ms: float) -> BenchRow:
        return BenchRow(model=model, arch={"arch": model}, artifact=f"{model}.{precision}",
                        backend="torch-cuda", precision=precision, mode=mode, batch=batch,
                        latency_ms=LatencyStats.from_samples([ms]), per_image_ms=ms / batch,
                        throughput_ips=batch / ms * 1000,
                        params={"tnet": 13_764_616, "snet3": 315_320}[model])

    rows = [row("tnet", "fp32", "default", 1, 1.6), row("tnet", "fp32", "cuda_graph", 1, 0.32),
            row("tnet", "fp16", "autocast", 1, 2.0), row("tnet", "fp16", "cuda_graph", 1, 0.3),
            row("snet3", "fp32", "default", 1, 0.9), row("snet3", "fp32", "default", 32, 0.8)]
    items = {(i["model"], i["batch"]): i for i in speedups(BenchResult(rows=tuple(rows)))}
    assert items[("tnet", 1)]["cuda_graph"] == {"ms": 0.32, "speedup": pytest.approx(5.0)}
    assert items[("tnet", 1)]["precisions"]["fp16"]["speedup"] == pytest.approx(0.8)
    assert items[("snet3", 1)]["cuda_graph"] is None  # no graph row for it
    lines = speedup_table(BenchResult(rows=tuple(rows)))
    header = next(ln for ln in lines if ln.startswith("| model"))
    assert "| fp32 CUDA graph ms | graph speed-up |" in header
    tnet = next(ln for ln in lines if ln.startswith("| tnet | torch-cuda | 1 |"))
    assert "| 5.00x |" in tnet
    snet3 = next(ln for ln in lines if ln.startswith("| snet3 | torch-cuda | 32 |"))
    assert snet3.count("| - |") >= 2
    # a lone model with only a graph to compare still gets its table
    alone = [r for r in rows if r.model == "tnet" and r.precision == "fp32"]
    assert any("5.00x" in ln for ln in speedup_table(BenchResult(rows=tuple(alone))))
