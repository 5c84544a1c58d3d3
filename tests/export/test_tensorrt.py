"""TensorRT: the pure parts everywhere (profiles, version switch, sidecar rules); builds and
runs only where ``tensorrt``, ``cuda-python`` and a GPU are present (``-m gpu``)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facedistill.errors import UserError
from facedistill.runtime.engine import (
    REQUIRED_SIDECAR_KEYS,
    SIDECAR_FORMAT,
    SIDECAR_KEYS,
    EngineMismatchError,
    TensorRTMissingError,
    check_sidecar,
    parse_profile,
    read_sidecar,
    sidecar_path,
)

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None


def test_parse_profile() -> None:
    assert parse_profile("1,8,32") == (1, 8, 32)
    assert parse_profile(" 2 , 4 ") == (2, 4, 4)
    assert parse_profile("16") == parse_profile(16) == (16, 16, 16)
    assert parse_profile([1, 1, 1]) == (1, 1, 1)
    for bad in ("0,8,32", "8,1,32", "1,64,32", "1,2,3,4", "a,b", "", 0, True, [1.5, 2]):
        with pytest.raises(UserError) as err:
            parse_profile(bad)
        assert err.value.field == "batch", bad


def test_precision_plan_follows_the_tensorrt_version() -> None:
    from facedistill.export.tensorrt import precision_plan

    for version in ("11.0.0", "11.4.1.3"):
        for p in ("fp32", "fp16", "int8"):
            plan = precision_plan(version, p, has_strongly_typed=False)
            assert plan.strongly_typed and plan.flags == ()
    for p in ("fp32", "fp16", "int8"):
        plan = precision_plan("10.3.0", p, has_strongly_typed=True)
        assert plan.strongly_typed and plan.flags == ()
    old = {p: precision_plan("10.0.1", p, has_strongly_typed=False) for p in ("fp32", "fp16",
                                                                              "int8")}
    assert {p: v.flags for p, v in old.items()} == {"fp32": (), "fp16": ("FP16",),
                                                    "int8": ("INT8",)}
    assert not any(v.strongly_typed for v in old.values())
    for bad in ("8.6.1", "9.3.0", "nightly"):
        with pytest.raises(TensorRTMissingError):
            precision_plan(bad, "fp16")
    with pytest.raises(UserError) as err:
        precision_plan("10.3.0", "bf16")
    assert err.value.field == "precision"


def test_workspace_bytes() -> None:
    from facedistill.export.tensorrt import workspace_bytes

    assert workspace_bytes(None) is None
    assert workspace_bytes(256) == 256 << 20
    for bad in (0, -5, 1.5, True):
        with pytest.raises(UserError):
            workspace_bytes(bad)  # type: ignore[arg-type]


@pytest.fixture
def sidecar(tiny_export: tuple[dict[str, Any], Path], tmp_path: Path) -> dict[str, Any]:
    """A sidecar as the builder writes it, for an ONNX export and a stand-in engine file."""
    from facedistill.export.onnx import get_metadata, load_onnx
    from facedistill.export.tensorrt import build_sidecar

    _, out = tiny_export
    onnx_path = tmp_path / "snet3.int8.onnx"
    shutil.copyfile(out / "snet3.int8.onnx", onnx_path)
    engine = tmp_path / "snet3.int8.engine"
    engine.write_bytes(b"serialized engine bytes")
    return build_sidecar(
        engine=engine, onnx_path=onnx_path, trt_version="10.3.0", gpu_name="Orin (nvgpu)",
        compute_capability="8.7", precision="int8", profile=(1, 8, 32),
        metadata=get_metadata(load_onnx(onnx_path)), build={"strongly_typed": True},
        built_at="2025-01-01T00:00:00+00:00")


def test_sidecar_keys_and_metadata(sidecar: dict[str, Any]) -> None:
    from facedistill.runtime.engine import sidecar_info

    assert tuple(sidecar) == SIDECAR_KEYS
    assert set(REQUIRED_SIDECAR_KEYS) <= set(sidecar)
    assert sidecar["format"] == SIDECAR_FORMAT
    assert sidecar["profile"] == {"min": 1, "opt": 8, "max": 32}
    assert (sidecar["engine"], sidecar["onnx"]) == ("snet3.int8.engine", "snet3.int8.onnx")
    info = sidecar_info(sidecar)
    assert info.precision == "int8" and info.num_attrs == 40
    assert info.accuracy is not None and info.accuracy["split"] == "val"
    json.dumps(sidecar)  # JSON-ready


def test_check_sidecar_accepts_its_own_machine(sidecar: dict[str, Any]) -> None:
    here = {"trt_version": "10.3.0", "gpu_name": "Orin (nvgpu)", "compute_capability": "8.7"}
    check_sidecar(sidecar, **here, engine_sha256=sidecar["engine_sha256"])
    check_sidecar(sidecar, **{**here, "trt_version": "10.3.0.26"})  # build number ignored
    check_sidecar(sidecar, **{**here, "compute_capability": (8, 7)})


@pytest.mark.parametrize(("change", "field", "words"), [
    ({"trt_version": "10.4.0"}, "trt_version", "built with TensorRT 10.3.0, this is TensorRT "
                                               "10.4.0"),
    ({"trt_version": "11.0.0"}, "trt_version", "this is TensorRT 11.0.0"),
    ({"compute_capability": "8.6"}, "compute_capability", "built for compute capability 8.7"),
    ({"gpu_name": "NVIDIA GeForce RTX 3090"}, "gpu_name", "built on Orin (nvgpu)"),
    ({"engine_sha256": "0" * 64}, "engine_sha256", "the engine file changed"),
])
def test_check_sidecar_refuses_a_mismatch(sidecar: dict[str, Any], change: dict[str, str],
                                          field: str, words: str) -> None:
    here = {"trt_version": "10.3.0", "gpu_name": "Orin (nvgpu)", "compute_capability": "8.7",
            "engine_sha256": sidecar["engine_sha256"]}
    with pytest.raises(EngineMismatchError) as err:
        check_sidecar(sidecar, **{**here, **change}, path="m.engine.json")
    msg = err.value.format()
    assert err.value.field == field
    assert words in msg and "\n" not in msg and msg.startswith(f"m.engine.json: field '{field}'")
    assert isinstance(err.value, UserError)


def test_check_sidecar_refuses_bad_records(sidecar: dict[str, Any]) -> None:
    here = {"trt_version": "10.3.0", "gpu_name": "Orin (nvgpu)", "compute_capability": "8.7"}
    with pytest.raises(EngineMismatchError) as err:
        check_sidecar({**sidecar, "format": "other/v9"}, **here)
    assert err.value.field == "format"
    for key in REQUIRED_SIDECAR_KEYS[1:]:
        broken = {k: v for k, v in sidecar.items() if k != key}
        with pytest.raises(EngineMismatchError) as err:
            check_sidecar(broken, **here)
        assert err.value.field == key
    with pytest.raises(EngineMismatchError) as err:
        check_sidecar({**sidecar, "profile": {"min": 1}}, **here)
    assert err.value.field == "profile"
    no_sha = {k: v for k, v in sidecar.items() if k != "engine_sha256"}
    with pytest.raises(EngineMismatchError) as err:
        check_sidecar(no_sha, **here, engine_sha256="ab")
    assert err.value.field == "engine_sha256"


def test_read_sidecar(tmp_path: Path, sidecar: dict[str, Any]) -> None:
    engine = tmp_path / "m.engine"
    with pytest.raises(EngineMismatchError, match="no such engine file"):
        read_sidecar(engine)
    engine.write_bytes(b"x")
    assert sidecar_path(engine) == tmp_path / "m.engine.json"
    with pytest.raises(EngineMismatchError) as err:
        read_sidecar(engine)
    assert err.value.field == "sidecar" and "no sidecar m.engine.json" in err.value.format()
    sidecar_path(engine).write_text("{not json")
    with pytest.raises(EngineMismatchError, match="unreadable sidecar"):
        read_sidecar(engine)
    sidecar_path(engine).write_text(json.dumps(sidecar))
    assert read_sidecar(engine) == sidecar


def test_runner_refuses_an_engine_without_sidecar(tmp_path: Path) -> None:
    from facedistill.runtime.engine import TrtRunner

    engine = tmp_path / "snet3.fp16.engine"
    engine.write_bytes(b"x")
    with pytest.raises(EngineMismatchError) as err:
        TrtRunner(engine)
    assert err.value.field == "sidecar"


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed here")
def test_missing_tensorrt_says_what_to_install(sidecar: dict[str, Any], tmp_path: Path) -> None:
    from facedistill.runtime.engine import TrtRunner, require_tensorrt

    with pytest.raises(TensorRTMissingError) as err:
        require_tensorrt()
    msg = err.value.format()
    assert "\n" not in msg and "pip install 'facedistill[trt]'" in msg and "JetPack" in msg
    engine = tmp_path / "snet3.int8.engine"  # engine + sidecar present: TensorRT is the gap
    sidecar_path(engine).write_text(json.dumps(sidecar))
    with pytest.raises(TensorRTMissingError):
        TrtRunner(engine)


# -- on a GPU with TensorRT ---------------------------------------------------------------


def _gpu_ready() -> str | None:
    """None when TensorRT, cuda-python and a GPU are usable, else why not."""
    if not HAVE_TRT:
        return "tensorrt is not installed"
    try:
        from facedistill.runtime.engine import gpu_identity, require_cudart, require_tensorrt

        require_tensorrt()
        gpu_identity(0, require_cudart())
    except UserError as exc:
        return exc.message
    return None


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_builds_runs_and_matches_ort(tiny_export: tuple[dict[str, Any], Path],
                                            tmp_path: Path, precision: str) -> None:
    reason = _gpu_ready()
    if reason:
        pytest.skip(reason)
    from facedistill.bench.accuracy import load_batch, split_images
    from facedistill.export.onnx import ort_session
    from facedistill.export.tensorrt import build_engine
    from facedistill.runtime.engine import TrtRunner
    from facedistill.runtime.metadata import parse_metadata

    report, out = tiny_export
    onnx_path = out / f"snet3.{precision}.onnx"
    engine = tmp_path / f"snet3.{precision}.engine"
    side = build_engine(onnx_path, engine, batches=(1, 4, 8), workspace_mb=256)
    assert side["precision"] == precision and side["profile"] == {"min": 1, "opt": 4, "max": 8}
    assert (tmp_path / "trt_timing.cache").stat().st_size > 0
    assert read_sidecar(engine) == side
    data = Path(report["data"]["eval"]["root"])
    paths, _, _ = split_images(data, "val")
    x = load_batch(parse_metadata(side["metadata"]).preprocess, list(paths[:11]))
    ref = ort_session(onnx_path).run(["probabilities"], {"input": x})[0]
    tol = {"fp32": 1e-3, "fp16": 1e-2, "int8": 5e-2}[precision]
    with TrtRunner(engine) as runner:
        assert runner.info.precision == precision and runner.profile == (1, 4, 8)
        for b in (1, 5, 11):  # 11 > max: runs in chunks
            got = runner.run(x[:b])
            assert got["probabilities"].shape == (b, 40)
            assert np.abs(got["probabilities"] - ref[:b]).max() <= tol
            assert runner.gpu_compute_ms is not None and runner.gpu_compute_ms > 0
    with TrtRunner(engine, cuda_graph=True) as runner:
        first = runner.run(x[:4])["probabilities"]
        again = runner.run(x[:4])["probabilities"]  # replayed graph
        np.testing.assert_array_equal(first, again)
    # a changed engine file no longer matches its sidecar
    engine.write_bytes(engine.read_bytes() + b"\0")
    with pytest.raises(EngineMismatchError) as err:
        TrtRunner(engine)
    assert err.value.field == "engine_sha256"
