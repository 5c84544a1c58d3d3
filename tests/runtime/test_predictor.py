"""Predictor on a real exported model (ONNX Runtime, CPU): preprocessing parity with training,
results, batching, thread safety, faces and clear errors."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facedistill.errors import ConfigError, UserError
from facedistill.runtime import (
    DetectorError,
    FacePrediction,
    ImageError,
    MetadataError,
    ModelError,
    Prediction,
    Predictor,
)


@pytest.fixture(scope="module")
def predictor(tiny_onnx: Path) -> Predictor:
    return Predictor(tiny_onnx, threads=1)


@pytest.fixture(scope="module")
def synth_paths(tiny_synth: Path) -> list[Path]:
    return sorted((tiny_synth / "img_align_celeba").glob("*.jpg"))[:40]


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def _eval_transform(predictor: Predictor):  # the training pipeline's eval transform (torch)
    from facedistill.pipeline.data.transforms import transform_from_record

    return transform_from_record({"preprocess": predictor.preprocess.to_record()}, train=False)


def _torch_inputs(transform, images: list, boxes: list | None = None) -> np.ndarray:
    import torch

    boxes = boxes or [None] * len(images)
    return torch.stack([transform(img, box=box) for img, box in zip(images, boxes, strict=True)]
                       ).numpy()


def test_metadata_is_read_from_the_model(predictor: Predictor, tiny_teacher: Path) -> None:
    import torch

    ckpt = torch.load(tiny_teacher / "best.pt", map_location="cpu", weights_only=True)
    assert predictor.backend == "ort" and predictor.input_size == (32, 32)
    assert predictor.attributes == tuple(ckpt["attributes"])
    logit_t = np.asarray(ckpt["thresholds"], np.float64)
    np.testing.assert_allclose(predictor.thresholds, 1 / (1 + np.exp(-logit_t)), rtol=1e-12)
    assert predictor.describe()["providers"] == ["CPUExecutionProvider"]
    json.dumps(predictor.describe())


def test_input_matches_the_training_eval_transform(predictor: Predictor, synth_paths: list[Path],
                                                   astronaut: np.ndarray) -> None:
    transform = _eval_transform(predictor)
    # synthetic faces from files (JPEG, already 32x32)
    pil = [Image.open(p) for p in synth_paths]
    ref = _torch_inputs(transform, pil)
    got = predictor.preprocess_batch(synth_paths)
    assert got.shape == (40, 3, 32, 32) and got.dtype == np.float32
    assert np.abs(got - ref).max() <= 1e-5
    # a real photo at full size (PIL resize), its grey and RGBA versions, and the face crop path
    photo = Image.fromarray(astronaut)
    rgba = astronaut.copy()
    rgba = np.dstack([rgba, np.full(rgba.shape[:2], 200, np.uint8)])
    images = [astronaut, astronaut[..., 0], rgba, photo]
    ref = _torch_inputs(transform, [photo, photo.getchannel(0), Image.fromarray(rgba), photo])
    got = predictor.preprocess_batch(images)
    assert np.abs(got - ref).max() <= 1e-5
    box = (177, 66, 95, 95)
    ref_box = _torch_inputs(transform, [photo], [box])
    got_box = predictor.preprocess_batch([astronaut], boxes=[box])
    assert np.abs(got_box - ref_box).max() <= 1e-5
    # in fact bit for bit: the same float32 operations in the same order (batches of 1 and 4
    # take the two code paths of the normalisation)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(got_box, ref_box)


def test_probabilities_equal_a_bare_session_on_the_training_input(
        predictor: Predictor, tiny_onnx: Path, synth_paths: list[Path]) -> None:
    import onnxruntime as ort

    x = _torch_inputs(_eval_transform(predictor), [Image.open(p) for p in synth_paths])
    bare = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    probs = bare.run(["probabilities"], {"input": x})[0]
    preds = predictor.predict_batch(synth_paths)
    got = np.stack([p.probabilities for p in preds])
    assert np.abs(got - probs).max() <= 1e-6
    assert [p.source for p in preds] == [str(p) for p in synth_paths]


def test_prediction_decisions_and_json(predictor: Predictor, synth_paths: list[Path]) -> None:
    pred = predictor.predict(synth_paths[0])
    assert isinstance(pred, Prediction) and pred.source == str(synth_paths[0])
    assert pred.probabilities.shape == (40,)
    assert ((pred.probabilities >= 0) & (pred.probabilities <= 1)).all()
    np.testing.assert_array_equal(pred.positive, pred.probabilities >= predictor.thresholds)
    record = json.loads(json.dumps(pred.to_dict()))
    assert list(record["attributes"]) == list(predictor.attributes)
    for i, name in enumerate(predictor.attributes):
        entry = record["attributes"][name]
        assert entry["probability"] == pytest.approx(float(pred.probabilities[i]), abs=0)
        assert entry["positive"] == bool(pred.positive[i]) == pred.is_positive(name)
        assert entry["threshold"] == predictor.thresholds[i]
        assert entry["margin"] == entry["probability"] - entry["threshold"]
        assert entry["reliable"] == bool(predictor.reliable[i]) == pred.is_reliable(name)
        assert pred[name] == entry["probability"]
    # reliable positives only, ranked by margin over the threshold (not by probability)
    positives = pred.positives()
    assert [n for n, _ in positives] == sorted(
        (n for n in predictor.attributes if pred.is_positive(n) and pred.is_reliable(n)),
        key=lambda n: -pred.margin(n))
    assert pred.positives(top=2) == positives[:2]
    with pytest.raises(KeyError, match="no attribute 'Tail'"):
        pred["Tail"]


def test_every_input_kind_gives_the_same_prediction(predictor: Predictor,
                                                    synth_paths: list[Path]) -> None:
    path = synth_paths[1]
    data = path.read_bytes()
    rgb = np.asarray(Image.open(path).convert("RGB"))
    kinds = [path, str(path), data, Image.open(io.BytesIO(data)), rgb,
             rgb.astype(np.uint16) * 257, np.dstack([rgb, np.full((32, 32), 255, np.uint8)])]
    probs = [predictor.predict(k).probabilities for k in kinds]
    for p in probs[1:]:
        np.testing.assert_array_equal(p, probs[0])


def test_batches_equal_single_calls_in_any_chunking(predictor: Predictor,
                                                    synth_paths: list[Path]) -> None:
    paths = synth_paths[:11]
    single = np.stack([predictor.predict(p).probabilities for p in paths])
    for size in (1, 4, 32):
        got = np.stack([p.probabilities for p in predictor.predict_batch(paths, batch_size=size)])
        np.testing.assert_allclose(got, single, atol=1e-6)
    stacked = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])  # NxHxWx3
    got = np.stack([p.probabilities for p in predictor.predict_batch(stacked)])
    np.testing.assert_allclose(got, single, atol=1e-6)
    assert predictor.predict_batch(iter(paths[:3]), batch_size=2)[2].source == str(paths[2])
    assert predictor.predict_batch([]) == []
    with pytest.raises(TypeError, match="use predict"):
        predictor.predict_batch(str(paths[0]))
    with pytest.raises(ConfigError, match="batch_size"):
        predictor.predict_batch(paths, batch_size=0)


def test_a_bad_image_in_a_batch_is_named(predictor: Predictor, synth_paths: list[Path],
                                         tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(synth_paths[0].read_bytes()[:200])
    with pytest.raises(ImageError, match="broken.jpg: cannot decode image"):
        predictor.predict_batch([synth_paths[0], bad])
    arr = np.zeros((32, 32, 3), np.float64)
    with pytest.raises(ImageError, match=r"<array #1>: array dtype float64"):
        predictor.predict_batch([synth_paths[0], arr])
    with pytest.raises(ImageError, match=r"<array>: array of shape \(32, 32, 5\)"):
        predictor.predict(np.zeros((32, 32, 5), np.uint8))


def test_one_predictor_shared_by_threads(predictor: Predictor, synth_paths: list[Path],
                                         astronaut: np.ndarray) -> None:
    inputs: list = []
    for i, p in enumerate(synth_paths[:24]):
        inputs.append([p, p.read_bytes(), np.asarray(Image.open(p).convert("RGB"))][i % 3])
    inputs.append(astronaut)
    serial = [predictor.predict(x).probabilities for x in inputs]
    serial_batches = [np.stack([r.probabilities for r in predictor.predict_batch(inputs[i:i + 5])])
                      for i in range(0, len(inputs), 5)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(3):
            threaded = list(pool.map(lambda x: predictor.predict(x).probabilities, inputs))
            batches = list(pool.map(
                lambda i: np.stack([r.probabilities for r in predictor.predict_batch(
                    inputs[i:i + 5])]), range(0, len(inputs), 5)))
            for a, b in zip(threaded, serial, strict=True):
                np.testing.assert_array_equal(a, b)
            for a, b in zip(batches, serial_batches, strict=True):
                np.testing.assert_array_equal(a, b)


def test_haar_finds_the_astronauts_face(predictor: Predictor, astronaut: np.ndarray) -> None:
    faces = predictor.predict_faces(astronaut)
    assert len(faces) == 1 and isinstance(faces[0], FacePrediction)
    x, y, w, h = faces[0].box
    # her face: about 100 px wide, centred near (225, 115) in the 512x512 photo
    assert 70 <= w <= 140 and abs(w - h) <= 10
    assert abs(x + w / 2 - 225) < 25 and abs(y + h / 2 - 115) < 30
    expected = predictor.preprocess_batch([astronaut], boxes=[faces[0].box])
    np.testing.assert_allclose(faces[0].prediction.probabilities, predictor.run(expected)[0],
                               atol=1e-6)
    record = json.loads(json.dumps(faces[0].to_dict()))
    assert record["box"] == list(faces[0].box) and len(record["attributes"]) == 40
    assert predictor.predict_faces(np.zeros((200, 200, 3), np.uint8)) == []


def test_own_detector_and_margin(predictor: Predictor, astronaut: np.ndarray) -> None:
    calls = []

    def detector(rgb: np.ndarray) -> list[tuple[float, ...]]:
        calls.append(rgb.shape)
        return np.array([[10, 10, 40, 40], [177, 66, 95, 95.4]])  # any array-like of boxes

    faces = predictor.predict_faces(Image.fromarray(astronaut), detector=detector, margin=0.0)
    assert calls == [(512, 512, 3)]
    assert [f.box for f in faces] == [(177, 66, 95, 95), (10, 10, 40, 40)]  # largest first
    # margin 0 crops exactly the (square) box
    crop = Image.fromarray(astronaut).crop((177, 66, 272, 161)).resize((32, 32),
                                                                        Image.Resampling.BILINEAR)
    x = predictor.preprocess_batch([np.asarray(crop)])
    np.testing.assert_allclose(faces[0].prediction.probabilities, predictor.run(x)[0], atol=1e-6)
    wider = predictor.predict_faces(astronaut, detector=detector, margin=0.5)
    assert not np.array_equal(wider[0].prediction.probabilities, faces[0].prediction.probabilities)
    for bad, message in [(lambda rgb: [(0, 0, 0, 5)], "non-positive size"),
                         (lambda rgb: [(600, 0, 5, 5)], "outside the 512x512 image"),
                         (lambda rgb: [(1, 2, 3)], "expected \\(x, y, width, height\\)")]:
        with pytest.raises(DetectorError, match=message):
            predictor.predict_faces(astronaut, detector=bad)
    with pytest.raises(DetectorError, match="unknown detector 'yolo'"):
        predictor.predict_faces(astronaut, detector="yolo")
    with pytest.raises(ConfigError, match="margin"):
        predictor.predict_faces(astronaut, margin=-0.1)


def test_model_errors(tmp_path: Path, plain_onnx: Path, tiny_onnx: Path) -> None:
    cases: list[tuple[Path, type, str]] = [
        (tmp_path / "missing.onnx", ModelError, "no such model file"),
        (tmp_path, ModelError, "is a folder"),
        (plain_onnx, MetadataError, "not a facedistill model: no facedistill metadata"),
    ]
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(tiny_onnx.read_bytes()[:5000])
    cases.append((corrupt, ModelError, "not a loadable ONNX model"))
    weights = tmp_path / "best.pt"
    weights.write_bytes(b"PK")
    cases.append((weights, ModelError, "unknown model file type '.pt'"))
    for path, kind, message in cases:
        with pytest.raises(kind, match=message) as err:
            Predictor(path)
        assert isinstance(err.value, UserError)
        assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
    with pytest.raises(ModelError, match="backend 'trt' cannot run a .onnx file"):
        Predictor(tiny_onnx, backend="trt")
    with pytest.raises(ConfigError, match="unknown backend"):
        Predictor(tiny_onnx, backend="tflite")
    with pytest.raises(ConfigError, match="unknown device"):
        Predictor(tiny_onnx, device="tpu")


def test_gpu_request_without_a_gpu_provider_is_a_clear_error(tiny_onnx: Path) -> None:
    import onnxruntime as ort

    if {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(
            ort.get_available_providers()):
        pytest.skip("this onnxruntime has a GPU provider")
    with pytest.raises(ConfigError, match="no CUDA or TensorRT execution provider"):
        Predictor(tiny_onnx, device="cuda")
    assert Predictor(tiny_onnx, device="auto").describe()["providers"] == ["CPUExecutionProvider"]


def _sidecar(tiny_onnx: Path, engine: Path, **changes: object) -> dict:
    import onnxruntime as ort

    meta = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"]
                                ).get_modelmeta().custom_metadata_map
    side = {"format": "facedistill.engine/v1", "engine": engine.name, "trt_version": "10.3.0",
            "gpu_name": "Orin", "compute_capability": "8.7", "precision": "fp32",
            "profile": {"min": 1, "opt": 8, "max": 32}, "onnx": tiny_onnx.name,
            "onnx_sha256": "0" * 64, "built_at": "2025-01-01T00:00:00Z", "metadata": dict(meta)}
    side.update(changes)
    return side


def test_engine_errors_without_tensorrt(tiny_onnx: Path, tmp_path: Path) -> None:
    engine = tmp_path / "snet3.fp32.engine"
    engine.write_bytes(b"not really an engine")
    with pytest.raises(UserError, match="no sidecar snet3.fp32.engine.json") as err:
        Predictor(engine)
    assert str(err.value).startswith(f"{engine}: ")
    with pytest.raises(ModelError, match="backend 'ort' cannot run a .engine file"):
        Predictor(engine, backend="ort")
    with pytest.raises(ConfigError, match="runs on a GPU only"):
        Predictor(engine, device="cpu")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        (tmp_path / "snet3.fp32.engine.json").write_text(json.dumps(_sidecar(tiny_onnx, engine)))
        with pytest.raises(UserError, match=r"TensorRT is not installed.*facedistill\[trt-cu13\]"):
            Predictor(engine)


def test_engine_for_another_tensorrt_is_refused(tiny_onnx: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorrt")
    from facedistill.runtime.engine import EngineMismatchError, require_cudart

    try:
        count = require_cudart().cudaGetDeviceCount()[1]
    except UserError:
        count = 0
    if not count:
        pytest.skip("no CUDA GPU")
    engine = tmp_path / "snet3.fp32.engine"
    engine.write_bytes(b"built elsewhere")
    side = _sidecar(tiny_onnx, engine, trt_version="9.0.0")
    (tmp_path / "snet3.fp32.engine.json").write_text(json.dumps(side))
    with pytest.raises(EngineMismatchError, match="built with TensorRT 9.0.0"):
        Predictor(engine)
