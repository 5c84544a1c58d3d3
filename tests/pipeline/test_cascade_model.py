"""The cascade as one model, on real tiny runs: ``facedistill cascade`` puts a whole-image run
and a fixed-box part-subnets run together (switch + relations), the result evaluates, exports
to one ONNX graph that ``Predictor`` runs (with the regions it used), ``predict --annotate``
draws them, and part subnets distil from part subnets (the compressed cascade)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facedistill.config import DistillConfig, TrainConfig
from facedistill.nn.checkpoint import load_checkpoint, model_from_checkpoint
from facedistill.nn.models import build_model, count_params
from facedistill.nn.regions import GROUPS
from facedistill.pipeline.cascade import assemble
from facedistill.pipeline.train import train
from facedistill.runtime.metadata import MetadataError, build_metadata, parse_metadata
from facedistill.runtime.preprocess import Preprocess, crop_rect

SMALL = {"size": 32, "variant": "wild", "epochs": 1, "batch_size": 32, "workers": 0}


@pytest.fixture(scope="module")
def runs(wild: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An FRL (for the boxes), a whole-image SNet3 and fixed-box part subnets, all tiny."""
    root = tmp_path_factory.mktemp("runs")
    out = {name: root / name for name in ("frl", "whole", "parts")}
    train(TrainConfig(arch="frl", width=0.125, **SMALL), wild, out["frl"])
    train(TrainConfig(arch="snet3", width=0.25, **SMALL), wild, out["whole"])
    train(TrainConfig(arch="parts", width=0.25, frl=str(out["frl"]), part_boxes="fixed",
                      **SMALL), wild, out["parts"])
    return out


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "facedistill", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_fixed_box_parts_ship_without_the_frl(runs: dict[str, Path]) -> None:
    """Fixed boxes need no localizer at run time: none is built, counted or exported, and a
    checkpoint that still holds the FRL's weights loads all the same."""
    model = model_from_checkpoint(load_checkpoint(runs["parts"]))
    assert model.frl is None and not any(k.startswith("frl.") for k in model.state_dict())
    with_frl = build_model("parts", width=0.25)
    assert count_params(with_frl) - count_params(model) == count_params(with_frl.frl)
    old = {**{f"frl.{k}": v for k, v in with_frl.frl.state_dict().items()},
           **model.state_dict()}
    again = build_model(**model.config())
    again.load_state_dict(old)  # the FRL's keys are dropped, the rest must fit exactly
    regions = again.fixed_regions()
    assert regions is not None and list(regions) == list(GROUPS)
    assert with_frl.fixed_regions() is None  # per-image boxes: nothing fixed to record


def test_cascade_cli_builds_one_model_that_evaluates_and_exports(
        runs: dict[str, Path], wild: Path, tmp_path: Path) -> None:
    from facedistill.export import export_model
    from facedistill.pipeline.evaluate import evaluate_checkpoint
    from facedistill.runtime import Predictor

    out = tmp_path / "cascade"
    done = _cli("cascade", "--whole", str(runs["whole"]), "--parts", str(runs["parts"]),
                "--out", str(out), "--workers", "0", "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert json.loads((out / "cascade.json").read_text()) == record
    ckpt = load_checkpoint(out)
    model = model_from_checkpoint(ckpt)
    assert ckpt["arch"]["arch"] == "cascade" and ckpt["arch"]["whole"]["arch"] == "snet3"
    assert record["params"]["cascade"] == count_params(model) == (
        record["params"]["whole"] + record["params"]["parts"] + 40 * 41)
    # the hard switch: 0/1 per attribute, as many parts as the record says
    m = model.use_part
    assert set(m.unique().tolist()) <= {0.0, 1.0} and int(m.sum()) == record["parts_chosen"]
    assert record["relations"] and record["relation_decay"] in (1e-3, 1e-2, 1e-1)
    # the forward is the switch and the relation layer over the two runs' own outputs
    whole = model_from_checkpoint(load_checkpoint(runs["whole"]))
    parts = model_from_checkpoint(load_checkpoint(runs["parts"]))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        mixed = m * parts(x) + (1 - m) * whole(x)
        torch.testing.assert_close(model(x), mixed @ model.relation.weight.T
                                   + model.relation.bias)
    assert not torch.equal(model.relation.weight, torch.eye(40))  # fitted, not left at I
    # eval of the saved model gives the record's test score (thresholds from val)
    report = evaluate_checkpoint(out, data=wild, split="test", workers=0)
    assert report["mean_balanced"] == pytest.approx(record["mean_balanced"]["cascade"],
                                                    abs=1e-6)
    # one ONNX graph, the same probabilities, and the regions in its metadata
    onnx = export_model(out, tmp_path / "export", precision="fp32").ok_onnx()["fp32"]
    pred = Predictor(onnx, threads=1)
    assert pred.info.regions == {g: tuple(b) for g, b in model.fixed_regions().items()}
    img = np.random.default_rng(0).integers(0, 255, (48, 40, 3), dtype=np.uint8)
    got = pred.predict(img)
    with torch.no_grad():
        want = torch.sigmoid(model(torch.from_numpy(pred.preprocess_batch([img])))).numpy()
    np.testing.assert_allclose(got.probabilities, want[0], atol=1e-4)
    # a whole-image prediction places the regions on the image it was given
    cx, cy, side = pred.info.regions["eyes"]
    assert got.regions["eyes"] == (round((cx - side / 2) * 40), round((cy - side / 2) * 48),
                                   round(side * 40), round(side * 48))
    assert got.to_dict()["regions"]["eyes"] == list(got.regions["eyes"])
    # a detected face: the regions in the photo's pixels, inside the face's crop
    photo = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    face = (50, 30, 40, 44)
    [found] = pred.predict_faces(photo, detector=lambda rgb: [face])
    left, top, w, h = crop_rect(face, pred.preprocess.margin)
    assert found.prediction.regions["face"] == (
        round(left + (pred.info.regions["face"][0] - pred.info.regions["face"][2] / 2) * w),
        round(top + (pred.info.regions["face"][1] - pred.info.regions["face"][2] / 2) * h),
        round(pred.info.regions["face"][2] * w), round(pred.info.regions["face"][2] * h))
    assert "regions" in found.to_dict()
    # predict --annotate, in a runtime-only process (torch and onnx blocked), draws them
    from tests.runtime.test_no_torch import VERB_SCRIPT

    src = tmp_path / "crop.png"
    Image.fromarray(img).save(src)
    shown = subprocess.run([sys.executable, "-c", VERB_SCRIPT, "predict", str(src), "--model",
                            str(onnx), "--annotate", str(tmp_path / "ann.png"), "--json"],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    printed = json.loads(shown.stdout)["images"][0]
    assert printed["regions"] == {g: list(b) for g, b in got.regions.items()}
    np.testing.assert_allclose([printed["attributes"][n]["probability"]
                                for n in pred.attributes], got.probabilities, atol=1e-6)
    from facedistill.runtime.draw import REGION_COLORS, annotate

    drawn = np.asarray(Image.open(tmp_path / "ann.png").convert("RGB"))
    plain = np.asarray(annotate(Image.fromarray(img), replace(got, regions=None)))
    assert drawn.shape == plain.shape and (drawn != plain).any()
    for color in REGION_COLORS:  # every group's box is there, in its own colour
        assert (drawn.reshape(-1, 3) == color).all(axis=1).any()
        assert not (plain.reshape(-1, 3) == color).all(axis=1).any()


def test_soft_switch_and_no_relations(runs: dict[str, Path], wild: Path, tmp_path: Path
                                      ) -> None:
    record = assemble(runs["whole"], runs["parts"], tmp_path / "soft", data=wild,
                      switch="soft", relations=False)
    model = model_from_checkpoint(load_checkpoint(tmp_path / "soft"))
    m = model.use_part
    assert ((m > 0) & (m < 1)).all() and model.switch == "soft"  # a mix, not a choice
    assert record["relation_decay"] is None
    torch.testing.assert_close(model.relation.weight, torch.eye(40))
    assert record["mean_balanced"]["cascade"] == record["mean_balanced"]["switch"]


def test_bad_pairs_are_refused_in_one_line(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "c"
    swapped = _cli("cascade", "--whole", str(runs["parts"]), "--parts", str(runs["whole"]),
                   "--out", str(out))
    assert swapped.returncode == 2 and "--parts must be a part-subnets run" in swapped.stderr
    assert swapped.stderr.count("\n") == 1 and not out.exists()
    frl = _cli("cascade", "--whole", str(runs["frl"]), "--parts", str(runs["parts"]),
               "--out", str(out))
    assert frl.returncode == 2 and "--whole must be a whole-image classifier" in frl.stderr
    assert not out.exists()


def test_part_subnets_distil_from_part_subnets(runs: dict[str, Path], wild: Path,
                                               tmp_path: Path) -> None:
    """The compressed cascade's parts: narrower part subnets learn the selected neurons of the
    wider ones (features 1280 per region), on the same fixed boxes."""
    from facedistill.pipeline.compress import compress

    cfg = TrainConfig(arch="parts", width=0.125, frl=str(runs["frl"]), part_boxes="fixed",
                      **SMALL)
    out = tmp_path / "small"
    result = compress(cfg, [runs["parts"]], wild, out,
                      DistillConfig(method="selected", k=64, split="val"))
    ckpt = load_checkpoint(out)
    assert ckpt["arch"]["arch"] == "parts" and ckpt["arch"]["width"] == 0.125
    selection = ckpt["extra"]["distill"]["selection"]
    assert selection["k"] == 64 and max(selection["indices"]) < 7 * 1280
    assert result["rows"][0]["arch"] == "parts" and result["rows"][1]["arch"] == "parts"
    teacher = model_from_checkpoint(load_checkpoint(runs["parts"]))
    student = model_from_checkpoint(ckpt)
    torch.testing.assert_close(student.boxes.priors, teacher.boxes.priors)


def test_regions_metadata_is_checked() -> None:
    base = {"version": "t", "arch": {"arch": "cascade", "width": 1.0, "num_attrs": 1},
            "preprocess": Preprocess(size=(32, 32)).to_record(), "attributes": ["a"],
            "logit_thresholds": [0.0], "precision": "fp32", "source_sha256": "0" * 64}
    meta = build_metadata(**base, regions={"eyes": [0.5, 0.4, 0.4]})
    assert parse_metadata(meta).regions == {"eyes": (0.5, 0.4, 0.4)}
    assert parse_metadata(build_metadata(**base)).regions is None
    with pytest.raises(ValueError, match="regions"):
        build_metadata(**base, regions={"eyes": [0.5, 0.4, 1.5]})
    for bad in ('{"eyes": [0.5, 0.4]}', '[1, 2, 3]', '{"eyes": [0.5, true, 0.3]}'):
        with pytest.raises(MetadataError, match="regions"):
            parse_metadata({**meta, "regions": bad}, source="m.onnx")
