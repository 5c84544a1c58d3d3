"""Predictions that know their limits: each attribute's validation balanced accuracy travels in
the model, attributes under the reliability floor are flagged and left out of the positives,
positives are ranked by margin over their threshold, and arrays say their channel order.

Most tests run a hand-made ONNX model through ONNX Runtime, so every number is known: the image
is averaged per channel and each attribute's logit is ``bias + w . mean(x)``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facedistill.errors import ConfigError
from facedistill.runtime import MetadataError, Predictor

# name, bias (logit), threshold (probability), val balanced accuracy
ATTRS = (
    ("Young", 2.0, 0.85, 0.91),  # p 0.881: the highest reliable probability, margin 0.031
    ("Smiling", 0.0, 0.20, 0.83),  # p 0.5, margin 0.30: ranked first
    ("Narrow_Eyes", 3.0, 0.10, 0.5004),  # the measured case: positive everywhere, 50.04%
    ("Eyeglasses", -2.0, 0.50, 0.97),  # negative
    ("Bald", 1.0, 0.65, None),  # p 0.731, margin 0.081; accuracy undefined: not flagged
    ("Red", 0.0, 0.50, 0.60),  # logit 0.4 * (x_R - x_B): p 0.738 here; channel order!
)
NAMES = tuple(a[0] for a in ATTRS)
COLOR = (200, 100, 30)  # RGB of the test image


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _write_model(path: Path, val_balanced: list[float | None] | None) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from facedistill.export.onnx import set_metadata
    from facedistill.runtime.metadata import build_metadata
    from facedistill.runtime.preprocess import Preprocess

    weights = np.zeros((3, len(ATTRS)), np.float32)
    weights[:, NAMES.index("Red")] = (0.4, 0.0, -0.4)
    bias = np.asarray([a[1] for a in ATTRS], np.float32)
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", len(ATTRS)])
            for n in ("probabilities", "logits")]
    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("MatMul", ["flat", "W"], ["mixed"]),
             helper.make_node("Add", ["mixed", "B"], ["logits"]),
             helper.make_node("Sigmoid", ["logits"], ["probabilities"])]
    graph = helper.make_graph(nodes, "handmade", [x], outs,
                              [numpy_helper.from_array(weights, "W"),
                               numpy_helper.from_array(bias, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = build_metadata(
        version="test", arch={"arch": "handmade", "width": 1.0, "num_attrs": len(ATTRS)},
        preprocess=Preprocess(size=(32, 32)).to_record(), attributes=list(NAMES),
        logit_thresholds=[_logit(a[2]) for a in ATTRS], precision="fp32",
        source_sha256="0" * 64, val_balanced=val_balanced)
    set_metadata(model, meta)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def handmade(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_model(tmp_path_factory.mktemp("handmade") / "handmade.onnx",
                        [a[3] for a in ATTRS])


@pytest.fixture(scope="module")
def old_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model as exported before the validation accuracy was recorded."""
    return _write_model(tmp_path_factory.mktemp("old") / "old.onnx", None)


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return np.broadcast_to(np.asarray(COLOR, np.uint8), (32, 32, 3)).copy()


def test_an_export_carries_each_attributes_val_balanced_accuracy(tiny_onnx: Path,
                                                                 tiny_teacher: Path) -> None:
    import torch

    ckpt = torch.load(tiny_teacher / "best.pt", map_location="cpu", weights_only=True)
    assert len(ckpt["val_balanced"]) == 40
    predictor = Predictor(tiny_onnx, threads=1)
    assert predictor.info.val_balanced == pytest.approx(tuple(ckpt["val_balanced"]))
    flagged = [n for n, v in zip(ckpt["attributes"], ckpt["val_balanced"], strict=True)
               if v is not None and v < 0.6]
    assert list(predictor.unreliable) == flagged
    assert predictor.reliable.tolist() == [n not in flagged for n in predictor.attributes]
    described = predictor.describe()["reliability"]
    assert described["floor"] == 0.6 and described["unreliable"] == flagged
    assert described["val_balanced"] == dict(zip(ckpt["attributes"], ckpt["val_balanced"],
                                                 strict=True))


def test_attributes_under_the_floor_are_flagged_and_left_out(handmade: Path,
                                                             rgb: np.ndarray) -> None:
    predictor = Predictor(handmade, threads=1)
    assert predictor.unreliable == ("Narrow_Eyes",)  # 0.60 is at the floor, None unknown
    pred = predictor.predict(rgb)
    probs = dict(zip(NAMES, pred.probabilities.tolist(), strict=True))
    for name, bias, *_ in ATTRS[:5]:
        assert probs[name] == pytest.approx(_sigmoid(bias), abs=1e-6)
    assert probs["Red"] == pytest.approx(0.7380, abs=1e-4)
    # still a decision, with its probability, but not one of the positives
    assert pred.is_positive("Narrow_Eyes") and not pred.is_reliable("Narrow_Eyes")
    shown = [n for n, _ in pred.positives()]
    assert shown == ["Smiling", "Red", "Bald", "Young"]
    # ranked by margin over the threshold, not by probability (Young is the most probable)
    margins = [pred.margin(n) for n in shown]
    assert margins == sorted(margins, reverse=True) and all(m >= 0 for m in margins)
    assert pred.margin("Smiling") == pytest.approx(0.30, abs=1e-6)
    assert pred.margin("Young") == pytest.approx(_sigmoid(2.0) - 0.85, abs=1e-6)
    assert max(probs, key=lambda n: probs[n] if n != "Narrow_Eyes" else 0) == "Young"
    assert [n for n, _ in pred.positives(all=True)] == ["Narrow_Eyes", *shown]
    assert pred.positives(top=2) == pred.positives()[:2]
    record = json.loads(json.dumps(pred.to_dict()))["attributes"]
    assert [record[n]["reliable"] for n in NAMES] == [True, True, False, True, True, True]
    assert record["Narrow_Eyes"]["positive"] is True
    assert record["Smiling"]["threshold"] == pytest.approx(0.20)
    assert record["Smiling"]["margin"] == pytest.approx(0.30, abs=1e-6)
    assert "Narrow_Eyes" not in repr(pred)


def test_the_floor_is_configurable_and_checked(handmade: Path) -> None:
    assert Predictor(handmade, reliability_floor=0.0).unreliable == ()
    assert Predictor(handmade, reliability_floor=0.61).unreliable == ("Narrow_Eyes", "Red")
    assert Predictor(handmade, reliability_floor=1.0).unreliable == (
        "Young", "Smiling", "Narrow_Eyes", "Eyeglasses", "Red")  # Bald: unknown
    for bad in (1.5, -1, float("nan"), True, "0.6"):
        with pytest.raises(ConfigError, match="between 0 and 1") as err:
            Predictor(handmade, reliability_floor=bad)  # type: ignore[arg-type]
        assert err.value.field == "reliability_floor"


def test_a_model_without_the_accuracy_loads_and_flags_nothing(old_model: Path,
                                                              rgb: np.ndarray) -> None:
    from facedistill.export.onnx import get_metadata, load_onnx

    assert "val_balanced" not in get_metadata(load_onnx(old_model))
    predictor = Predictor(old_model, threads=1, reliability_floor=0.9)
    assert predictor.info.val_balanced is None and predictor.val_balanced is None
    assert predictor.unreliable == () and predictor.reliable.all()
    assert predictor.describe()["reliability"]["val_balanced"] is None
    pred = predictor.predict(rgb)
    assert [n for n, _ in pred.positives()] == ["Narrow_Eyes", "Smiling", "Red", "Bald",
                                                "Young"]


def test_malformed_accuracy_metadata_is_one_line(handmade: Path, tmp_path: Path) -> None:
    import shutil

    from facedistill.export.onnx import update_metadata

    for value, message in (("[0.9, 0.8]", "expected a list of 6 numbers"),
                           ("[1.5, 0.8, 0.5, 0.9, 0.9, 0.9]", "found 1.5"),
                           ('[0.9, 0.8, "x", 0.9, 0.9, 0.9]', "found 'x'")):
        bad = tmp_path / "bad.onnx"
        shutil.copy(handmade, bad)
        update_metadata(bad, val_balanced=value)
        with pytest.raises(MetadataError, match=message) as err:
            Predictor(bad)
        assert err.value.field == "val_balanced" and "\n" not in err.value.format()


def test_bgr_arrays_are_converted_when_said(handmade: Path, tiny_onnx: Path,
                                            tiny_synth: Path, rgb: np.ndarray) -> None:
    predictor = Predictor(handmade, threads=1)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    as_rgb = predictor.predict(rgb)
    np.testing.assert_array_equal(predictor.predict(bgr, channels="BGR").probabilities,
                                  as_rgb.probabilities)
    # the same array read as RGB: red and blue swapped, the Red attribute flips
    wrong = predictor.predict(bgr)
    assert as_rgb.is_positive("Red") and not wrong.is_positive("Red")
    # a real model, every entry point, BGRA too; grey has no order to change
    real = Predictor(tiny_onnx, threads=1)
    faces = [np.asarray(Image.open(p).convert("RGB"))
             for p in sorted((tiny_synth / "img_align_celeba").glob("*.jpg"))[:8]]
    flipped = [np.ascontiguousarray(f[..., ::-1]) for f in faces]
    want = np.stack([p.probabilities for p in real.predict_batch(faces)])
    got = np.stack([p.probabilities for p in real.predict_batch(flipped, channels="BGR")])
    np.testing.assert_array_equal(got, want)
    assert np.abs(np.stack([p.probabilities for p in real.predict_batch(flipped)])
                  - want).max() > 0.05  # silently wrong without it
    np.testing.assert_array_equal(real.preprocess_batch(flipped, channels="BGR"),
                                  real.preprocess_batch(faces))
    bgra = np.dstack([flipped[0], np.full((32, 32), 255, np.uint8)])
    np.testing.assert_array_equal(real.predict(bgra, channels="BGR").probabilities, want[0])
    grey = faces[0][..., 0]
    np.testing.assert_array_equal(real.predict(grey, channels="BGR").probabilities,
                                  real.predict(grey).probabilities)
    big = np.asarray(Image.fromarray(faces[0]).resize((96, 96)))  # through PIL's resize
    np.testing.assert_array_equal(
        real.predict(np.ascontiguousarray(big[..., ::-1]), channels="BGR").probabilities,
        real.predict(big).probabilities)
    for bad in ("bgr", "RGBA", None):
        with pytest.raises(ConfigError, match="'RGB' or 'BGR'") as err:
            real.predict(faces[0], channels=bad)  # type: ignore[arg-type]
        assert err.value.field == "channels"


def test_face_detection_sees_the_converted_image(handmade: Path, rgb: np.ndarray) -> None:
    predictor = Predictor(handmade, threads=1)
    seen: list[np.ndarray] = []

    def detector(image: np.ndarray) -> list[tuple[int, int, int, int]]:
        seen.append(image)
        return [(4, 4, 24, 24)]

    face = predictor.predict_faces(np.ascontiguousarray(rgb[..., ::-1]), detector=detector,
                                   channels="BGR")[0]
    np.testing.assert_array_equal(seen[0], rgb)
    assert face.prediction.is_positive("Red")
    assert face.to_dict()["attributes"]["Narrow_Eyes"]["reliable"] is False


def test_annotations_leave_unreliable_attributes_out(handmade: Path, rgb: np.ndarray) -> None:
    from facedistill.runtime.draw import label_lines

    pred = Predictor(handmade, threads=1).predict(rgb)
    assert label_lines(pred, top=3) == ["Smiling 0.50", "Red 0.74", "Bald 0.73"]
    assert label_lines(pred, top=2, all=True) == ["Narrow_Eyes 0.95 (unreliable)",
                                                 "Smiling 0.50"]


# -- the CLI -------------------------------------------------------------------------------
def _main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from facedistill.cli import main

    code = 0
    try:
        main(["predict", *argv])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def face_file(tmp_path_factory: pytest.TempPathFactory, rgb: np.ndarray) -> Path:
    path = tmp_path_factory.mktemp("img") / "face.png"
    Image.fromarray(rgb).save(path)
    return path


def test_predict_cli_floor_and_all(handmade: Path, old_model: Path, face_file: Path,
                                   tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    code, out, _ = _main(capsys, str(face_file), "--model", str(handmade), "--threads", "1")
    assert code == 0
    assert "1 attribute under 60% validation balanced accuracy is unreliable, left out " \
           "(--all shows them): Narrow_Eyes" in out
    table = out.split("\n", 1)[1]
    assert "Narrow_Eyes" not in table and "threshold (prob.)" in table and "margin" in table
    rows = [line.split()[1] for line in table.splitlines()
            if line.split()[1:2] and line.split()[1] in NAMES]
    assert rows == ["Smiling", "Red", "Bald", "Young"]  # by margin
    assert "+0.300" in table
    code, out, _ = _main(capsys, str(face_file), "--model", str(handmade), "--all")
    assert code == 0 and "shown and marked" in out
    line = next(r for r in out.splitlines() if "Narrow_Eyes" in r and "0.953" in r)
    assert "unreliable" in line
    code, out, _ = _main(capsys, str(face_file), "--model", str(handmade),
                         "--reliability-floor", "0.95", "--json")
    assert code == 0
    record = json.loads(out)
    attrs = record["images"][0]["attributes"]
    assert [n for n in NAMES if not attrs[n]["reliable"]] == ["Young", "Smiling",
                                                              "Narrow_Eyes", "Red"]
    assert record["model"]["reliability"]["floor"] == 0.95
    code, out, _ = _main(capsys, str(face_file), "--model", str(old_model))
    assert code == 0 and "carries no per-attribute validation accuracy" in out
    assert "Narrow_Eyes" in out.split("\n", 1)[1]
    # --annotate draws the reliable positives only, unless --all
    _main(capsys, str(face_file), "--model", str(handmade), "--annotate",
          str(tmp_path / "a.png"))
    _main(capsys, str(face_file), "--model", str(handmade), "--annotate",
          str(tmp_path / "b.png"), "--all")
    with Image.open(tmp_path / "a.png") as a, Image.open(tmp_path / "b.png") as b:
        assert np.asarray(a).tolist() != np.asarray(b).tolist()


@pytest.mark.parametrize("floor", ["1.5", "-1", "nan"])
def test_a_bad_floor_is_a_one_line_error(handmade: Path, face_file: Path, floor: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _main(capsys, str(face_file), "--model", str(handmade),
                           "--reliability-floor", floor)
    assert code == 2 and out == ""
    assert err.startswith("error: field '--reliability-floor': must be a fraction between 0 "
                          "and 1") and err.count("\n") == 1, err
