"""The bench's TensorRT variants against fake ``tensorrt`` / ``cuda-python``: interleaved batch
sizes timed without shape changes or captures, padded predictions, stale engines refused;
and the CUDA versions the environment record reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facedistill.bench.artifacts import Artifact, engine_onnx, engine_variants, load_variants
from facedistill.bench.environment import cuda_python_versions, environment
from facedistill.runtime.engine import EngineMismatchError

from ..runtime.fake_trt import (
    CHW,
    FakeCudart,
    FakeEngine,
    FakeTrt,
    batch,
    expected,
    install,
    write_engine,
)
from .jetson_fixtures import make_jetson


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[FakeTrt, FakeCudart]:
    cudart = FakeCudart()
    trt = FakeTrt(FakeEngine(cudart, chw=CHW, profile=(4, 32)))
    install(monkeypatch, trt, cudart, tmp_path / "root")
    return trt, cudart


def test_engine_variants_time_interleaved_batches_without_setup(
        fakes: tuple[FakeTrt, FakeCudart], tmp_path: Path) -> None:
    trt, cudart = fakes
    eng = trt.engine
    assert eng is not None
    path = write_engine(tmp_path / "e", profile=(4, 8, 32))
    variants = engine_variants(Artifact(path, "engine"))
    try:
        assert [v.mode for v in variants] == ["default", "cuda_graph"]
        default, graph = variants
        assert (default.min_batch, default.max_batch) == (4, 32)
        assert default.details["tf32"] is False and default.details["sm_count"] == 16
        calls = [v.prepare(batch(b)) for v in variants for b in (4, 32)]
        contexts, shapes = len(eng.contexts), len(eng.named("set_input_shape"))
        captures = len(cudart.named("cudaStreamBeginCapture"))
        assert (contexts, shapes, captures) == (4, 4, 2)  # 2 sizes x 2 runners, 1 graph each
        cudart.calls.clear()
        eng.calls.clear()
        for _ in range(3):  # the bench interleaves every (variant, batch) round by round
            for once in calls:
                assert once() == pytest.approx(0.25)
        assert eng.named("set_input_shape") == [] and eng.named("create_execution_context") == []
        assert cudart.named("cudaStreamBeginCapture") == []
        assert [c[1:3] for c in eng.named("compute")] == [(0, 4), (1, 32), (2, 4), (3, 32)] * 3
        assert len(cudart.named("cudaGraphLaunch")) == 6
        x = batch(3, 9)  # below the profile's minimum: padded to 4, sliced back to 3
        np.testing.assert_allclose(default.predict(x), expected(x)["probabilities"], rtol=1e-5)
    finally:
        for v in variants:
            v.close()


def test_the_bench_refuses_a_stale_engine(tmp_path: Path) -> None:
    path = write_engine(tmp_path / "e")
    onnx = tmp_path / "e" / "snet3.fp32.onnx"
    assert engine_onnx(path) == onnx
    onnx.write_bytes(b"exported again")
    assert engine_onnx(path) is None
    for load in (lambda a: engine_variants(a), lambda a: load_variants(a, "auto", None, False)):
        with pytest.raises(EngineMismatchError) as err:
            load(Artifact(path, "engine"))
        assert err.value.field == "onnx_sha256"
        assert "rebuild with facedistill export --trt" in err.value.format()


def test_cuda_versions_are_labelled_honestly(tmp_path: Path) -> None:
    got = cuda_python_versions(FakeCudart(driver=12020, runtime=12090))
    assert got == {"cuda_driver": ("12.2", None), "cuda_python_runtime": ("12.9", None)}
    none = cuda_python_versions(FakeCudart(driver=0))
    assert none["cuda_driver"] == (None, "no CUDA driver")
    env = environment(root=make_jetson(tmp_path), query_tools=False)
    assert env["cuda"] == env["cuda_toolkit"] == "12.6.68"  # the system's, not cuda-python's
    for key in ("cuda_driver", "cuda_python_runtime"):
        assert key in env and (env[key] is not None or env["reasons"][key])
    pc = environment(root=tmp_path / "pc", query_tools=False)
    assert pc["cuda_toolkit"] is None and "usr/local/cuda" in pc["reasons"]["cuda_toolkit"]
