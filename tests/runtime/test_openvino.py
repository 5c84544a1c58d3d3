"""OpenVINO as a second CPU backend of the runtime: the same ONNX file and metadata, the same
probabilities as ONNX Runtime, f32 float precision whatever the CPU, one-line errors. Real
OpenVINO (the [openvino] extra, installed with [dev]); skipped only where it is absent."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from facedistill.errors import ConfigError
from facedistill.runtime import MetadataError, ModelError, Predictor
from facedistill.runtime.backends import OrtBackend, open_backend, resolve_backend
from facedistill.runtime.openvino import INSTALL_OV

pytest.importorskip("openvino")

from facedistill.runtime.openvino import OvBackend  # noqa: E402


def _batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32)).astype(np.float32)


@pytest.fixture(scope="module")
def int8_onnx(tiny_teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from facedistill.export import export_model

    out = tmp_path_factory.mktemp("ov_int8")
    export_model(tiny_teacher, out, precision="fp32,int8", calib_n=32, no_gate=True,
                 no_eval=True)
    return out / "snet3.int8.onnx"


def test_same_file_same_metadata_same_probabilities(tiny_onnx: Path) -> None:
    ov, ort = OvBackend(tiny_onnx, threads=1), OrtBackend(tiny_onnx, device="cpu", threads=1)
    assert ov.info == ort.info and ov.fixed_batch is None and ov.name == "ov"
    for n in (1, 5, 32):  # one compiled model serves every batch size (dynamic batch axis)
        x = _batch(n, seed=n)
        got, ref = ov.run(x), ort.run(x)
        assert got.shape == (n, 40) and got.dtype == np.float32
        np.testing.assert_allclose(got, ref, atol=1e-5)
    facts = ov.describe()
    # f32 is forced: the CPU plugin would otherwise pick bf16 where it can
    assert facts["inference_precision"] == "f32" and facts["threads"] == 1
    assert facts["backend"] == "ov" and facts["path"] == str(tiny_onnx)


def test_hints_and_threads_are_what_the_compiled_model_reports(tiny_onnx: Path) -> None:
    latency = OvBackend(tiny_onnx, threads=1, hint="latency").describe()
    throughput = OvBackend(tiny_onnx, hint="throughput").describe()
    assert latency["hint"] == "LATENCY" and latency["streams"] == 1
    assert throughput["hint"] == "THROUGHPUT" and throughput["streams"] >= 1
    with pytest.raises(ConfigError, match="unknown OpenVINO hint 'fast'"):
        OvBackend(tiny_onnx, hint="fast")


def test_int8_qdq_runs_its_integer_graph_close_to_onnx_runtime(int8_onnx: Path) -> None:
    ov, ort = OvBackend(int8_onnx, threads=1), OrtBackend(int8_onnx, device="cpu", threads=1)
    assert ov.info.precision == "int8" == ort.info.precision
    x = _batch(16)
    got, ref = ov.run(x), ort.run(x)
    # two integer kernel libraries round differently; the tuner's int8 tolerance is 2e-2
    assert np.abs(got - ref).max() < 2e-2


def test_calls_from_several_threads_each_get_their_own_request(tiny_onnx: Path) -> None:
    ov = OvBackend(tiny_onnx, threads=1)
    inputs = [_batch(n, seed=n) for n in (1, 2, 3, 4)]
    want = [ov.run(x) for x in inputs]
    got: dict[int, list[np.ndarray]] = {}

    def work(i: int) -> None:
        got[i] = [ov.run(inputs[i]) for _ in range(20)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        assert all(np.array_equal(r, want[i]) for r in got[i])


def test_the_predictor_runs_on_openvino_as_on_onnx_runtime(tiny_onnx: Path) -> None:
    assert resolve_backend(tiny_onnx, "ov") == "ov"
    ov = Predictor(tiny_onnx, backend="ov", threads=1)
    ort = Predictor(tiny_onnx, backend="ort", device="cpu", threads=1)
    assert ov.backend == "ov" and ov.tuning is None
    faces = list(np.random.default_rng(1).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8))
    a, b = ov.predict_batch(faces), ort.predict_batch(faces)
    for p, q in zip(a, b, strict=True):
        np.testing.assert_allclose(p.probabilities, q.probabilities, atol=1e-5)
    with pytest.raises(ConfigError, match="runs on the CPU here"):
        open_backend(tiny_onnx, backend="ov", device="cuda")


def test_bad_files_are_one_line_errors(tmp_path: Path, plain_onnx: Path) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07 this is not a protobuf" * 10)
    with pytest.raises(ModelError, match="OpenVINO cannot load it as ONNX") as exc:
        OvBackend(garbage)
    assert "\n" not in str(exc.value) and str(garbage) in str(exc.value)
    with pytest.raises(MetadataError):  # a valid ONNX that is not a facedistill export
        OvBackend(plain_onnx)
    with pytest.raises(ModelError, match="no such model file"):
        OvBackend(tmp_path / "missing.onnx")


BLOCKED = r"""
import sys


class NoOpenVINO:  # as if openvino were not installed
    def find_spec(self, name, path=None, target=None):
        if name == "openvino" or name.startswith("openvino."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None


sys.meta_path.insert(0, NoOpenVINO())
from facedistill.cli import main

main(sys.argv[1:])
"""


def test_without_openvino_the_cli_says_what_to_install(tiny_onnx: Path, tmp_path: Path) -> None:
    from PIL import Image

    image = tmp_path / "face.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    proc = subprocess.run([sys.executable, "-c", BLOCKED, "predict", str(image), "--model",
                           str(tiny_onnx), "--backend", "ov"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-1500:]
    assert proc.stderr.strip().splitlines()[-1] == f"error: {INSTALL_OV}"
    # and bench simply leaves OpenVINO out
    proc = subprocess.run([sys.executable, "-c", BLOCKED, "bench", str(tiny_onnx), "--iters",
                           "2", "--warmup", "0", "--batch", "1", "--threads", "1", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert '"ov-cpu"' not in proc.stdout and '"ort-cpu"' in proc.stdout
