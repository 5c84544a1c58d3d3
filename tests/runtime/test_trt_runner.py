"""TrtRunner against fake ``tensorrt`` / ``cuda-python`` modules (tests/runtime/fake_trt.py):
one execution context and CUDA graph per batch size, padding below the profile's minimum,
the sidecar's device and ONNX checks, CUDA error messages, the device set per thread."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facedistill.errors import UserError
from facedistill.runtime import engine as engine_mod
from facedistill.runtime.engine import (
    CudaError,
    EngineMismatchError,
    TensorRTMissingError,
    TrtRunner,
    cuda_check,
    cuda_error_text,
    is_jetson,
    plan_chunks,
    probe_gpu,
    read_device_tree_model,
    sidecar_path,
)

from .fake_trt import (
    AGX,
    CHW,
    ITEM,
    NANO,
    CudaErr,
    FakeCudart,
    FakeEngine,
    FakeTrt,
    batch,
    expected,
    install,
    write_engine,
)


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[FakeTrt, FakeCudart]:
    """Fake TensorRT + cuda-python, an engine with profile (1, 32), a root with no Jetson."""
    cudart = FakeCudart()
    trt = FakeTrt(FakeEngine(cudart, chw=CHW, profile=(1, 32)))
    install(monkeypatch, trt, cudart, tmp_path / "root")
    return trt, cudart


def check_outputs(got: dict[str, np.ndarray], x: np.ndarray) -> None:
    want = expected(x)
    assert set(got) == set(want)
    for name in want:
        assert got[name].shape == want[name].shape and got[name].dtype == np.float32
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5)


def test_plan_chunks() -> None:
    assert plan_chunks(35, 4, 32) == [(0, 32, 32), (32, 35, 4)]
    assert plan_chunks(3, 4, 8) == [(0, 3, 4)]
    assert plan_chunks(8, 1, 8) == [(0, 8, 8)]
    assert plan_chunks(17, 1, 8) == [(0, 8, 8), (8, 16, 8), (16, 17, 1)]
    assert plan_chunks(11, 4, 8) == [(0, 8, 8), (8, 11, 4)]
    for bad in ((0, 1, 8), (3, 0, 8), (3, 8, 4)):
        with pytest.raises(ValueError):
            plan_chunks(*bad)


def test_interleaved_batches_use_one_context_each_and_no_shape_changes(
        gpu: tuple[FakeTrt, FakeCudart], tmp_path: Path) -> None:
    trt, cudart = gpu
    eng = trt.engine
    assert eng is not None
    with TrtRunner(write_engine(tmp_path / "e")) as runner:
        assert runner.input_name == "input" and runner.profile == (1, 8, 32)
        x1, x32 = batch(1, 1), batch(32, 2)
        for x in (x1, x32):
            check_outputs(runner.run(x), x)
        shapes_after_setup = list(eng.named("set_input_shape"))
        addresses_after_setup = list(eng.named("set_tensor_address"))
        cudart.calls.clear()
        eng.calls.clear()
        for x in (x1, x32, x1, x32):
            check_outputs(runner.run(x), x)
            assert runner.gpu_compute_ms == pytest.approx(0.25)
        assert runner.batch_sizes == (1, 32)
    assert shapes_after_setup == [("set_input_shape", 0, (1, *CHW)),
                                  ("set_input_shape", 1, (32, *CHW))]
    assert len(addresses_after_setup) == 2 * 3  # every tensor, once per context
    assert eng.named("set_input_shape") == [] and eng.named("set_tensor_address") == []
    assert eng.named("create_execution_context") == []
    assert [c[1] for c in eng.named("execute_async_v3")] == [0, 1, 0, 1]
    copies = [c[1:] for c in cudart.named("cudaMemcpyAsync")]
    one = [("cudaMemcpyHostToDevice", ITEM * 4)] + [("cudaMemcpyDeviceToHost", 2 * 4)] * 2
    many = [("cudaMemcpyHostToDevice", 32 * ITEM * 4)] + [("cudaMemcpyDeviceToHost", 32 * 8)] * 2
    assert copies == (one + many) * 2
    assert cudart.named("cudaGraphLaunch") == []


def test_cuda_graphs_are_captured_once_per_batch_size_and_replayed(
        gpu: tuple[FakeTrt, FakeCudart], tmp_path: Path) -> None:
    trt, cudart = gpu
    eng = trt.engine
    assert eng is not None
    with TrtRunner(write_engine(tmp_path / "e"), cuda_graph=True) as runner:
        runner.prepare(1)
        runner.prepare(32)
        captures = cudart.named("cudaStreamBeginCapture")
        execs = [c[1] for c in cudart.named("cudaGraphInstantiate")]
        # TensorRT needs one plain enqueue after the shape is set: it ran before each capture
        assert [c[:2] for c in eng.calls if c[0] in ("execute_async_v3", "capture_enqueue")] == [
            ("execute_async_v3", 0), ("capture_enqueue", 0),
            ("execute_async_v3", 1), ("capture_enqueue", 1)]
        cudart.calls.clear()
        eng.calls.clear()
        seeds = iter(range(10, 20))
        for n in (1, 32, 1, 32, 1):
            x = batch(n, next(seeds))  # new data each time: the replay reads the input buffer
            check_outputs(runner.run(x), x)
    assert captures == [("cudaStreamBeginCapture", "cudaStreamCaptureModeThreadLocal")] * 2
    assert len(set(execs)) == 2
    assert [c[1] for c in cudart.named("cudaGraphLaunch")] == [execs[0], execs[1]] * 2 + [
        execs[0]]
    assert [c[1:3] for c in eng.named("compute")] == [(0, 1), (1, 32), (0, 1), (1, 32), (0, 1)]
    assert eng.named("execute_async_v3") == [] and eng.named("set_input_shape") == []
    assert cudart.named("cudaStreamBeginCapture") == []
    assert sorted(c[1] for c in cudart.named("cudaGraphExecDestroy")) == sorted(execs)


def test_a_remainder_below_the_minimum_is_padded_and_sliced(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cudart = FakeCudart()
    trt = FakeTrt(FakeEngine(cudart, chw=CHW, profile=(4, 8)))
    install(monkeypatch, trt, cudart, tmp_path / "root")
    eng = trt.engine
    assert eng is not None
    ctx = eng.create_execution_context()
    assert not ctx.set_input_shape("input", (3, *CHW))  # the fake refuses, like TensorRT
    eng.contexts.clear()
    eng.calls.clear()
    with TrtRunner(write_engine(tmp_path / "e", profile=(4, 8, 8))) as runner:
        check_outputs(runner.run(batch(4, 5)), batch(4, 5))  # leaves data in the input buffer
        x = batch(3, 6)
        got = runner.run(x)
        check_outputs(got, x)
        x11 = batch(11, 7)
        check_outputs(runner.run(x11), x11)
    assert [c[2] for c in eng.named("set_input_shape")] == [(4, *CHW), (8, *CHW)]
    sums = [c for c in eng.named("compute") if c[2] == 4]
    assert len(sums) == 3
    padded = sums[1][3]  # the batch of 3 ran as 4: item 4 is zeros, not the last run's data
    np.testing.assert_allclose(padded[:3], expected(x)["logits"][:, 0] * -1, rtol=1e-5)
    assert padded[3] == 0.0
    h2d = [c[2] for c in cudart.named("cudaMemcpyAsync") if c[1] == "cudaMemcpyHostToDevice"]
    assert h2d == [4 * ITEM * 4, 4 * ITEM * 4, 8 * ITEM * 4, 4 * ITEM * 4]


def test_prepare_makes_the_contexts_and_too_many_sizes_evict_the_oldest(
        gpu: tuple[FakeTrt, FakeCudart], tmp_path: Path) -> None:
    trt, cudart = gpu
    eng = trt.engine
    assert eng is not None
    with TrtRunner(write_engine(tmp_path / "e", profile=(1, 8, 8)), cuda_graph=True,
                   max_contexts=2) as runner:
        runner.prepare(11)  # 8 + a remainder of 3
        assert runner.batch_sizes == (8, 3)
        made = len(eng.contexts)
        runner.run(batch(11))
        assert len(eng.contexts) == made == 2
        runner.run(batch(5))
        assert runner.batch_sizes == (3, 5)  # 8 was the least recently used
        evicted = cudart.named("cudaGraphExecDestroy")
        assert len(evicted) == 1
    assert len(cudart.named("cudaGraphExecDestroy")) == 3
    assert len(cudart.named("cudaFree")) == 3 and len(cudart.named("cudaFreeHost")) == 3
    with pytest.raises(RuntimeError, match="closed"):
        runner.run(batch(1))


def test_run_sets_the_device_in_the_calling_thread(gpu: tuple[FakeTrt, FakeCudart],
                                                   tmp_path: Path) -> None:
    _, cudart = gpu
    runner = TrtRunner(write_engine(tmp_path / "e"), device=0)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            runner.run(batch(2))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    cudart.calls.clear()
    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    runner.close()
    assert not errors
    assert ("cudaSetDevice", 0, worker.ident) in cudart.calls


def test_the_input_name_comes_from_the_engine(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    cudart = FakeCudart()
    trt = FakeTrt(FakeEngine(cudart, input_name="images", chw=CHW, profile=(1, 32)))
    install(monkeypatch, trt, cudart, tmp_path / "root")
    with TrtRunner(write_engine(tmp_path / "a", input_name="images")) as runner:
        assert runner.input_name == "images"
        check_outputs(runner.run(batch(2)), batch(2))
    with pytest.raises(EngineMismatchError) as err:
        TrtRunner(write_engine(tmp_path / "b", input_name="input"))
    assert err.value.field == "input_name" and "'images'" in err.value.message
    assert trt.engine is not None
    trt.engine.names.insert(1, "second_input")
    monkeypatch.setattr(trt.engine, "get_tensor_mode",
                        lambda name: trt.TensorIOMode.INPUT if "input" in name or
                        name == "images" else trt.TensorIOMode.OUTPUT)
    with pytest.raises(EngineMismatchError, match="expected one input tensor"):
        TrtRunner(write_engine(tmp_path / "c", input_name="images"))


def test_a_stale_engine_is_refused_before_tensorrt_loads(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    engine = write_engine(tmp_path / "e")
    (tmp_path / "e" / "snet3.fp32.onnx").write_bytes(b"re-exported since")

    def no_trt() -> Any:
        raise AssertionError("TensorRT must not load for a stale engine")

    monkeypatch.setattr(engine_mod, "require_tensorrt", no_trt)
    with pytest.raises(EngineMismatchError) as err:
        TrtRunner(engine)
    msg = err.value.format()
    assert err.value.field == "onnx_sha256" and "\n" not in msg
    assert "stale engine: snet3.fp32.onnx" in msg and "rebuild with facedistill export --trt" in msg
    assert msg.startswith(f"{sidecar_path(engine)}: field 'onnx_sha256': ")


def test_an_engine_without_its_onnx_still_loads(gpu: tuple[FakeTrt, FakeCudart],
                                                tmp_path: Path) -> None:
    engine = write_engine(tmp_path / "e")
    (tmp_path / "e" / "snet3.fp32.onnx").unlink()
    with TrtRunner(engine) as runner:
        check_outputs(runner.run(batch(3)), batch(3))


def test_the_device_identity_is_checked(monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 3.0\n")
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(NANO.encode() + b"\0")
    cudart = FakeCudart(sm_count=8, integrated=True, memory_mib=7620)
    trt = FakeTrt(FakeEngine(cudart, chw=CHW, profile=(1, 32)))
    install(monkeypatch, trt, cudart, root)
    here = probe_gpu(0, cudart).record()
    assert here == {"sm_count": 8, "total_memory_mib": 7620, "integrated": True,
                    "jetson": True, "device_tree_model": NANO}

    agx = {**here, "sm_count": 16, "device_tree_model": AGX, "total_memory_mib": 62800}
    with pytest.raises(EngineMismatchError) as err:
        TrtRunner(write_engine(tmp_path / "agx", device=agx))
    assert err.value.field == "device.sm_count" and "16 SMs, this one has 8" in err.value.message
    nx = {**here, "device_tree_model": "NVIDIA Jetson Orin NX Engineering Reference Developer Kit"}
    with pytest.raises(EngineMismatchError) as err:
        TrtRunner(write_engine(tmp_path / "nx", device=nx))
    assert err.value.field == "device.device_tree_model" and NANO in err.value.message
    with TrtRunner(write_engine(tmp_path / "same", device=here)) as runner:
        assert runner.gpu.device_tree_model == NANO
    # older sidecars (no device) and unknown fields load: unknown is not a mismatch
    with TrtRunner(write_engine(tmp_path / "old", device=None)):
        pass
    with TrtRunner(write_engine(tmp_path / "partial", device={"sm_count": None})):
        pass


def test_jetson_detection(tmp_path: Path) -> None:
    release, model = tmp_path / "nv_tegra_release", tmp_path / "model"
    assert not is_jetson(release, model) and read_device_tree_model(model) is None
    model.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\0")
    assert not is_jetson(release, model)
    assert is_jetson(release, model, integrated=True)
    model.write_bytes(AGX.encode() + b"\0")
    assert read_device_tree_model(model) == AGX and is_jetson(release, model)
    model.unlink()
    release.write_text("# R35 (release), REVISION: 4.1\n")
    assert is_jetson(release, model)


def test_cuda_errors_carry_their_name() -> None:
    cudart = FakeCudart()
    with pytest.raises(CudaError) as err:
        cuda_check((CudaErr.cudaErrorMemoryAllocation, 0), "cudaMalloc", cudart)
    assert str(err.value) == ("CUDA error in cudaMalloc: cudaErrorMemoryAllocation (2): "
                              "out of memory")
    assert err.value.code == 2 and err.value.what == "cudaMalloc"
    assert cuda_error_text(2, cudart) == "cudaErrorMemoryAllocation (2): out of memory"
    assert cuda_error_text(CudaErr.cudaErrorNoDevice) == "cudaErrorNoDevice (100)"
    with pytest.raises(CudaError) as err:
        cuda_check((CudaErr.cudaErrorInsufficientDriver,), "cudaSetDevice",
                   FakeCudart(driver=12020, runtime=13000))
    assert str(err.value).startswith("CUDA error in cudaSetDevice: cudaErrorInsufficientDriver "
                                     "(35): CUDA driver version is insufficient")
    assert "(driver: CUDA 12.2, cuda-python: CUDA 13.0)" in str(err.value)
    assert cuda_check((CudaErr.cudaSuccess, 7), "x", cudart) == 7
    assert cuda_check((CudaErr.cudaSuccess, 1, 2), "x", cudart) == (1, 2)


def test_a_failed_allocation_names_the_error(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    cudart = FakeCudart(malloc_error=2)
    install(monkeypatch, FakeTrt(FakeEngine(cudart, chw=CHW, profile=(1, 32))), cudart,
            tmp_path / "root")
    with pytest.raises(CudaError, match="cudaMalloc: cudaErrorMemoryAllocation \\(2\\): out of"):
        TrtRunner(write_engine(tmp_path / "e"))


def test_no_gpu_says_which_cuda_error() -> None:
    too_new = FakeCudart(count_error=35, driver=12020, runtime=13000)
    with pytest.raises(TensorRTMissingError) as err:
        probe_gpu(0, too_new)
    msg = err.value.format()
    assert "\n" not in msg and "cudaErrorInsufficientDriver (35)" in msg
    assert "driver: CUDA 12.2, cuda-python: CUDA 13.0" in msg
    assert "cuda-python 12.x on JetPack 6" in msg
    with pytest.raises(TensorRTMissingError) as err:
        probe_gpu(0, FakeCudart(count_error=100))
    assert "cudaErrorNoDevice (100): no CUDA-capable device" in err.value.message
    assert "JetPack" not in err.value.message
    with pytest.raises(TensorRTMissingError, match="found none"):
        probe_gpu(0, FakeCudart(device_count=0))
    with pytest.raises(UserError, match="GPU 1 does not exist"):
        probe_gpu(1, FakeCudart())
