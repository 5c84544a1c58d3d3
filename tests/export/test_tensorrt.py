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

from ..runtime.fake_trt import FakeCudart, FakeTrt, MemoryPoolType, install

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
AGX = "NVIDIA Jetson AGX Orin Developer Kit"


def test_parse_profile() -> None:
    assert parse_profile("1,8,32") == (1, 8, 32)
    assert parse_profile(" 2 , 4 ") == (2, 4, 4)
    assert parse_profile("16") == parse_profile(16) == (16, 16, 16)
    assert parse_profile([1, 1, 1]) == (1, 1, 1)
    for bad in ("0,8,32", "8,1,32", "1,64,32", "1,2,3,4", "a,b", "", 0, True, [1.5, 2]):
        with pytest.raises(UserError) as err:
            parse_profile(bad)
        assert err.value.field == "trt_profile", bad


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
    for version, st in (("11.0.0", False), ("10.3.0", True), ("10.0.1", False)):
        assert {p: precision_plan(version, p, st).clear_tf32 for p in ("fp32", "fp16", "int8")
                } == {"fp32": True, "fp16": False, "int8": False}


def test_tf32_and_compute_precision() -> None:
    from facedistill.export.tensorrt import PrecisionPlan, apply_tf32, compute_precision

    trt = FakeTrt()
    for clear, allowed in ((True, False), (False, True)):
        config = trt.Builder(None).create_builder_config()
        assert apply_tf32(trt, config, PrecisionPlan(True, (), "", clear)) is allowed
    no_flag = type("OldTrt", (), {"BuilderFlag": type("F", (), {})})
    assert apply_tf32(no_flag, object(), PrecisionPlan(True, (), "", True)) is None
    assert compute_precision("fp32", False) == "fp32"
    assert compute_precision("fp32", True) == compute_precision("fp32", None) == "tf32"
    assert compute_precision("fp16", True) == "fp16"


def test_default_workspace() -> None:
    from facedistill.export.tensorrt import JETSON_WORKSPACE_MB, default_workspace

    assert JETSON_WORKSPACE_MB == 256
    assert default_workspace(None, jetson=True) == (256, "jetson default")
    assert default_workspace(None, jetson=False) == (None, "tensorrt default (device memory)")
    assert default_workspace(1024, jetson=True) == (1024, "user")
    with pytest.raises(UserError):
        default_workspace(0, jetson=True)


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


DEVICE = {"sm_count": 16, "total_memory_mib": 62800, "integrated": True, "jetson": True,
          "device_tree_model": AGX}


@pytest.mark.parametrize(("here", "field"), [
    ({**DEVICE, "sm_count": 8}, "device.sm_count"),
    ({**DEVICE, "device_tree_model": "NVIDIA Jetson Orin Nano Developer Kit"},
     "device.device_tree_model"),
    ({**DEVICE, "total_memory_mib": 30000}, None),  # memory is recorded, not compared
    ({**DEVICE, "sm_count": None, "device_tree_model": None}, None),  # unknown here
])
def test_check_sidecar_compares_the_device(sidecar: dict[str, Any], here: dict[str, Any],
                                           field: str | None) -> None:
    machine = {"trt_version": "10.3.0", "gpu_name": "Orin (nvgpu)", "compute_capability": "8.7"}
    side = {**sidecar, "device": DEVICE}
    if field is None:
        check_sidecar(side, **machine, device=here)
        return
    with pytest.raises(EngineMismatchError) as err:
        check_sidecar(side, **machine, device=here, path="m.engine.json")
    assert err.value.field == field and "rebuild the engine on this machine" in err.value.message
    assert "\n" not in err.value.format()
    # a sidecar from before the device record, or with unknown values, is no mismatch
    check_sidecar({**sidecar, "device": None}, **machine, device=here)
    check_sidecar({k: v for k, v in sidecar.items() if k != "device"}, **machine, device=here)
    check_sidecar({**sidecar, "device": {"sm_count": None}}, **machine, device=here)


def test_check_onnx_sibling(sidecar: dict[str, Any], tmp_path: Path) -> None:
    from facedistill.runtime.engine import check_onnx_sibling

    engine = tmp_path / "snet3.int8.engine"
    check_onnx_sibling(sidecar, engine)  # the fixture's ONNX is unchanged
    (tmp_path / "snet3.int8.onnx").write_bytes(b"re-exported")
    with pytest.raises(EngineMismatchError) as err:
        check_onnx_sibling(sidecar, engine)
    assert err.value.field == "onnx_sha256" and "rebuild with facedistill export --trt" in str(
        err.value)
    (tmp_path / "snet3.int8.onnx").unlink()
    check_onnx_sibling(sidecar, engine)  # no ONNX beside the engine: nothing to compare


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
    assert "\n" not in msg and "'facedistill[trt-cu13]'" in msg and "JetPack 6" in msg
    engine = tmp_path / "snet3.int8.engine"  # engine + sidecar present: TensorRT is the gap
    sidecar_path(engine).write_text(json.dumps(sidecar))
    with pytest.raises(TensorRTMissingError):
        TrtRunner(engine)


# -- the builder against fake tensorrt / cuda-python -----------------------------------------


@pytest.fixture
def fake_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_export: tuple[dict[str, Any],
               Path]) -> Any:
    """``build(precision, cudart=..., trt=..., **kwargs)``: build_engine on the fakes; returns
    (sidecar, fake trt)."""
    from facedistill.export.tensorrt import build_engine

    _, out = tiny_export

    def build(precision: str, *, cudart: FakeCudart | None = None, trt: FakeTrt | None = None,
              root: Path | None = None, **kwargs: Any) -> tuple[dict[str, Any], FakeTrt]:
        trt = trt or FakeTrt()
        install(monkeypatch, trt, cudart or FakeCudart(), root or tmp_path / "root")
        folder = tmp_path / f"build-{precision}-{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        onnx = folder / f"snet3.{precision}.onnx"
        source = "int8-trt" if precision == "int8" else precision  # TensorRT's INT8 recipe
        shutil.copyfile(out / f"snet3.{kwargs.pop('source', source)}.onnx", onnx)
        side = build_engine(onnx, folder / f"snet3.{precision}.engine", batches=(1, 4, 8),
                            **kwargs)
        assert read_sidecar(folder / f"snet3.{precision}.engine") == side
        return side, trt

    return build


def test_fp32_builds_clear_tf32(fake_build: Any) -> None:
    side, trt = fake_build("fp32")
    config = trt.configs[-1]
    assert ("clear_flag", "TF32") in config.calls and not config.get_flag(trt.BuilderFlag.TF32)
    assert side["build"]["tf32"] is False and side["build"]["compute_precision"] == "fp32"
    assert side["precision"] == "fp32"
    side, trt = fake_build("fp16")
    assert ("clear_flag", "TF32") not in trt.configs[-1].calls
    assert side["build"]["tf32"] is True and side["build"]["compute_precision"] == "fp16"
    assert trt.networks[-1].flags == 1 << 1  # STRONGLY_TYPED on TensorRT 10.3


def test_the_cpu_int8_recipe_is_refused_before_parsing(fake_build: Any) -> None:
    """The CPU recipe's int32 biases and activation zero points would fail in TensorRT's
    parser: refused in one line naming a broken rule and the fix, before any TensorRT network
    is made."""
    trt = FakeTrt()
    with pytest.raises(UserError) as err:
        fake_build("int8", trt=trt, source="int8")
    msg = err.value.format()
    assert "\n" not in msg and "breaks TensorRT's Q/DQ rules" in msg
    assert "zero point is not 0" in msg or "INT32" in msg
    assert "--int8-recipe tensorrt" in msg and not trt.networks


def test_the_profile_is_set_on_the_network_input(fake_build: Any) -> None:
    side, trt = fake_build("fp32")
    shapes = trt.configs[-1].profiles[0].shapes
    assert list(shapes) == ["input"] and side["build"]["input"] == "input"
    assert shapes["input"] == ((1, 3, 32, 32), (4, 3, 32, 32), (8, 3, 32, 32))
    with pytest.raises(UserError) as err:
        fake_build("fp32", trt=FakeTrt(network_inputs=("images",)))
    assert err.value.field == "input_name" and "'images'" in err.value.message
    with pytest.raises(UserError, match="expected one input tensor"):
        fake_build("fp32", trt=FakeTrt(network_inputs=("input", "mask")))


def test_the_sidecar_records_the_device(fake_build: Any) -> None:
    side, _ = fake_build("int8", cudart=FakeCudart(sm_count=46, memory_mib=24564,
                                                   name=b"NVIDIA GeForce RTX 3090", cc=(8, 6)))
    assert (side["gpu_name"], side["compute_capability"]) == ("NVIDIA GeForce RTX 3090", "8.6")
    assert side["device"] == {"sm_count": 46, "total_memory_mib": 24564, "integrated": False,
                              "jetson": False, "device_tree_model": None}
    assert tuple(side) == SIDECAR_KEYS


def test_jetson_builds_default_to_a_small_workspace(fake_build: Any, tmp_path: Path) -> None:
    side, trt = fake_build("fp16")  # desktop: TensorRT's own default
    assert MemoryPoolType.WORKSPACE not in trt.configs[-1].pools
    assert side["build"]["workspace_mb"] is None
    assert side["build"]["workspace_source"] == "tensorrt default (device memory)"

    side, trt = fake_build("fp16", cudart=FakeCudart(integrated=True))  # integrated GPU
    assert trt.configs[-1].pools[MemoryPoolType.WORKSPACE] == 256 << 20
    assert (side["build"]["workspace_mb"], side["build"]["workspace_source"]) == (
        256, "jetson default")

    root = tmp_path / "jetson"
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(AGX.encode() + b"\0")
    side, trt = fake_build("fp16", root=root)  # found by the device tree
    assert trt.configs[-1].pools[MemoryPoolType.WORKSPACE] == 256 << 20
    assert side["device"]["device_tree_model"] == AGX and side["device"]["jetson"] is True

    side, trt = fake_build("fp16", root=root, workspace_mb=1024)  # the user's value wins
    assert trt.configs[-1].pools[MemoryPoolType.WORKSPACE] == 1024 << 20
    assert (side["build"]["workspace_mb"], side["build"]["workspace_source"]) == (1024, "user")


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
    onnx_path = out / f"snet3.{'int8-trt' if precision == 'int8' else precision}.onnx"
    engine = tmp_path / f"snet3.{precision}.engine"
    side = build_engine(onnx_path, engine, batches=(1, 4, 8), workspace_mb=256)
    assert side["precision"] == precision and side["profile"] == {"min": 1, "opt": 4, "max": 8}
    assert (tmp_path / "trt_timing.cache").stat().st_size > 0
    assert read_sidecar(engine) == side
    assert report.data.eval is not None
    data = Path(str(report.data.eval.root))
    paths, _, _ = split_images(data, "val")
    x = load_batch(parse_metadata(side["metadata"]).preprocess, list(paths[:11]))
    # INT8: TensorRT sums int8 products in 32 bits, as ONNX Runtime's Q/DQ emulation does
    ref = ort_session(onnx_path, emulate_qdq=precision == "int8").run(
        ["probabilities"], {"input": x})[0]
    tol = {"fp32": 1e-3, "fp16": 1e-2, "int8": 5e-2}[precision]
    assert side["build"]["tf32"] is (precision != "fp32")
    assert side["device"]["sm_count"] > 0 and side["device"]["total_memory_mib"] > 0
    with TrtRunner(engine) as runner:
        assert runner.info.precision == precision and runner.profile == (1, 4, 8)
        for b in (1, 5, 11, 1, 5):  # interleaved sizes; 11 > max: runs in chunks (8 + 3)
            got = runner.run(x[:b])
            assert got["probabilities"].shape == (b, 40)
            assert np.abs(got["probabilities"] - ref[:b]).max() <= tol
            assert runner.gpu_compute_ms is not None and runner.gpu_compute_ms > 0
        assert set(runner.batch_sizes) == {1, 5, 8, 3}
    with TrtRunner(engine, cuda_graph=True) as runner:
        first = runner.run(x[:4])["probabilities"]
        for b in (1, 4, 3, 1):  # each size replays its own graph
            got = runner.run(x[:b])["probabilities"]
            assert np.abs(got - ref[:b]).max() <= tol
        np.testing.assert_array_equal(first, runner.run(x[:4])["probabilities"])
    if precision == "fp32":  # a profile with min 4: smaller batches run padded
        padded = tmp_path / "min4" / "snet3.fp32.engine"
        padded.parent.mkdir()
        build_engine(onnx_path, padded, batches=(4, 4, 8), workspace_mb=256)
        for graphs in (False, True):
            with TrtRunner(padded, cuda_graph=graphs) as runner:
                for b in (3, 1, 11):
                    got = runner.run(x[:b])["probabilities"]
                    assert got.shape == (b, 40) and np.abs(got - ref[:b]).max() <= tol
    # a changed engine file no longer matches its sidecar
    engine.write_bytes(engine.read_bytes() + b"\0")
    with pytest.raises(EngineMismatchError) as err:
        TrtRunner(engine)
    assert err.value.field == "engine_sha256"
