"""The machine's floors (bench/floor.py): the probe graphs compute what they say, and a bench
run reports every row against the floors it timed in the same rounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facedistill.bench import floor as floor_mod
from facedistill.bench import markdown_table, run_bench
from facedistill.bench.record import BenchResult
from facedistill.runtime.backends import open_session
from facedistill.runtime.openvino import have_openvino

pytest.importorskip("onnx")


def test_probe_graphs_compute_what_they_say() -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 12)).astype(np.float32)
    ident = open_session(floor_mod.identity_graph(8, 12), device="cpu", threads=1)
    np.testing.assert_array_equal(ident.run(None, {"x": x})[0], x)
    for int8 in (False, True):
        n = 64
        model = floor_mod.gemm_graph(n, int8=int8)
        sess = open_session(model, device="cpu", threads=1)
        a = floor_mod.gemm_input(n, int8=int8)
        import onnx
        from onnx import numpy_helper

        b = numpy_helper.to_array(onnx.load_from_string(model).graph.initializer[0])
        want = a.astype(np.int64) @ b.astype(np.int64) if int8 else a @ b
        got = sess.run(None, {"a": a})[0]
        if int8:  # exact int32 sums: the integer kernels the INT8 convolutions use
            assert got.dtype == np.int32
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def test_row_floor_arithmetic() -> None:
    floors = {"ort": {"identity_ms": {"32x32:b4": 0.02}, "fp32_gflops": 100.0,
                      "int8_gops": 400.0}}
    # 5M MACs x 4 images = 40 MFLOP: 0.4 ms at 100 GFLOP/s, 0.1 ms at 400 GOP/s
    fp32 = floor_mod.row_floor(floors, "ort", (32, 32), 4, "fp32", 5_000_000, 0.8)
    assert fp32 == pytest.approx({"floor_ms": 0.02, "x_floor": 40.0, "bound_ms": 0.42,
                                  "peak_pct": 50.0})
    int8 = floor_mod.row_floor(floors, "ort", (32, 32), 4, "int8", 5_000_000, 0.8)
    assert int8["bound_ms"] == pytest.approx(0.12) and int8["peak_pct"] == pytest.approx(12.5)
    unknown = floor_mod.row_floor(floors, "ort", (64, 64), 1, "fp32", None, 1.0)
    assert unknown == {"floor_ms": None, "x_floor": None, "bound_ms": None, "peak_pct": None}


@pytest.fixture(scope="module")
def floored(tiny_teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> BenchResult:
    from facedistill.export import export_model

    out = tmp_path_factory.mktemp("floor_export")
    export_model(tiny_teacher, out, precision="fp32,int8", calib_n=32, no_gate=True,
                 no_eval=True)
    return run_bench([out / "snet3.fp32.onnx", out / "snet3.int8.onnx", tiny_teacher],
                     batch=(1, 4), warmup=1, iters=5, threads=1)


def test_bench_rows_against_the_floors_of_the_same_run(floored: BenchResult) -> None:
    ort = floored.floors["ort"]
    assert set(ort["identity_ms"]) == {"32x32:b1", "32x32:b4"}
    assert all(ms > 0 for ms in ort["identity_ms"].values())
    assert ort["fp32_gflops"] > 0 and ort["int8_gops"] > 0
    assert floored.floors["gemm_n"] == floor_mod.GEMM_N
    runtimes = {"ort-cpu": "ort"}
    if have_openvino():  # OpenVINO's rows get its own per-call floor, the machine's peak
        runtimes["ov-cpu"] = "ov"
        assert set(floored.floors["ov"]["identity_ms"]) == {"32x32:b1", "32x32:b4"}
    assert {r.backend for r in floored.rows} == {*runtimes, "torch-cpu"}
    for r in floored.rows:
        if r.backend not in runtimes:  # torch rows: no CPU-runtime floor, and a reason
            assert r.x_floor is None and "CPU runtimes" in r.reasons["x_floor"]
            continue
        floor = floored.floors[runtimes[r.backend]]["identity_ms"][f"32x32:b{r.batch}"]
        key = "int8_gops" if r.precision == "int8" else "fp32_gflops"
        peak = max(rec[key] for rec in floored.floors.values() if isinstance(rec, dict))
        assert r.floor_ms == floor
        assert r.x_floor == pytest.approx(r.latency_ms.median / floor)
        arith = 2 * r.macs * r.batch / (peak * 1e6)
        assert r.bound_ms == pytest.approx(floor + arith)
        assert r.peak_pct == pytest.approx(100 * arith / r.latency_ms.median)
        assert r.latency_ms.median > r.floor_ms  # a model call costs more than an empty one
    md = markdown_table(floored)
    assert "x floor" in md and "% peak" in md and "Floors, timed in the same rounds" in md
    assert "ONNX Runtime: an empty graph costs" in md and "GFLOP/s" in md
    # the record survives a JSON round trip
    import json

    from facedistill.bench.report import to_json
    again = BenchResult.from_json(json.loads(to_json(floored)))
    assert again.floors == floored.floors and again.rows[0].x_floor == floored.rows[0].x_floor


def test_no_floors_says_so(tiny_teacher: Path, tmp_path: Path) -> None:
    from facedistill.export import export_model

    export_model(tiny_teacher, tmp_path, precision="fp32", no_gate=True, no_eval=True)
    res = run_bench([tmp_path / "snet3.fp32.onnx"], batch=(1,), warmup=0, iters=2, threads=1,
                    floors=False, openvino=False)
    assert res.floors == {}
    (row,) = res.rows
    assert row.x_floor is None and "--no-floors" in row.reasons["x_floor"]
    assert "x floor" not in markdown_table(res)
