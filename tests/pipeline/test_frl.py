"""The face-region localization net (FRL) and multi-net learning: the CAM identity, the MNL
objective, boxes from maps, landmark coordinates of the crop, and a real tiny training run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facedistill.attributes import ATTRIBUTES
from facedistill.errors import ConfigError
from facedistill.nn.models import build_model, count_params
from facedistill.pipeline.frl import (
    BOX_SIDE,
    GROUPS,
    Box,
    FRLOutputs,
    MNLObjective,
    box_hits,
    cam_boxes,
    cam_priors,
    crop_coordinates,
    frl_outputs,
    group_maps,
    group_of,
    landmark_priors,
)
from facedistill.runtime.preprocess import crop_with_margin


def test_the_cams_mean_is_the_localization_branch() -> None:
    torch.manual_seed(0)
    net = build_model("frl", width=0.125).eval()
    x = torch.randn(3, 3, 64, 64)
    cams = net.cam(x)
    assert cams.shape == (3, 40, 8, 8) and net.stride == 8  # maps of input / 8
    torch.testing.assert_close(cams.mean(dim=(2, 3)), net(x), rtol=1e-5, atol=1e-5)
    assert net.cam(torch.randn(1, 3, 96, 96)).shape[-1] == 12
    loc, cls, maps = net.branches(x)  # one trunk pass, what the FRL benchmark reads
    torch.testing.assert_close(loc, net(x))
    torch.testing.assert_close(cls, net.classify(x))
    torch.testing.assert_close(maps, cams)
    logits, feats = net.forward_with_features(x)  # eval: what export and bench see
    net.train()
    loc, feats2, cls = net.forward_with_features(x)  # training: both branches, one trunk
    assert loc.shape == cls.shape == (3, 40) and feats2.shape == feats.shape
    # every block is scaled, the last too: width 0.25 is ~16x smaller than width 1
    assert count_params(build_model("frl", width=1.0)) > 12 * count_params(
        build_model("frl", width=0.25))
    rebuilt = build_model(**net.config())
    assert type(rebuilt) is type(net) and rebuilt.feature_dim == net.feature_dim


def test_mnl_objective_terms_and_detached_mutual_targets() -> None:
    torch.manual_seed(0)
    y = torch.randint(0, 2, (4, 40)).float()
    loc = torch.randn(4, 40, requires_grad=True)
    cls = torch.randn(4, 40, requires_grad=True)
    off, t_off = MNLObjective("off")(loc, None, y, None, cls)
    joint, t_joint = MNLObjective("joint")(loc, None, y, None, cls)
    mutual, t_mutual = MNLObjective("mutual")(loc, None, y, None, cls)
    assert set(t_off) == {"loc"} and set(t_joint) == {"loc", "cls"}
    assert set(t_mutual) == {"loc", "cls", "mutual"}
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    torch.testing.assert_close(joint, bce(loc, y) + bce(cls, y))
    torch.testing.assert_close(mutual, joint + 0.5 * t_mutual["mutual"])
    # the mutual term's gradient w.r.t. loc is that of BCE(loc, sigmoid(cls)) alone: the target
    # is detached, so nothing flows into cls through it
    (g_loc,) = torch.autograd.grad(t_mutual_term(loc, cls), [loc])
    want = (torch.sigmoid(loc) - torch.sigmoid(cls)).detach() / loc.numel()
    torch.testing.assert_close(g_loc, want)
    with pytest.raises(ValueError, match="classification logits"):
        MNLObjective("joint")(loc, None, y, None)


def t_mutual_term(loc: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.binary_cross_entropy_with_logits(
        loc, torch.sigmoid(cls).detach())


def test_every_attribute_has_one_region_group() -> None:
    members = [a for names in GROUPS.values() for a in names]
    assert sorted(members) == sorted(ATTRIBUTES)
    assert group_of("Eyeglasses") == "eyes" and group_of("Wearing_Hat") == "hair"
    assert set(BOX_SIDE) == set(GROUPS)


def test_boxes_follow_the_peak_and_fall_back_on_flat_maps() -> None:
    cams = np.zeros((40, 8, 8))
    for name in GROUPS["nose"]:
        cams[ATTRIBUTES.index(name), 2, 5] = 1.0  # one hot cell: its centre is (5.5/8, 2.5/8)
    box = cam_boxes(cams, priors={"eyes": (0.4, 0.6)})
    nose = box["nose"]
    assert (nose.cx, nose.cy, nose.prior) == (5.5 / 8, 2.5 / 8, False)
    assert nose.side == pytest.approx(0.4)
    flat = box["eyes"]  # all-zero maps: flat, the prior stands in
    assert (flat.cx, flat.cy, flat.prior) == (pytest.approx(0.4), pytest.approx(0.6), True)
    assert Box(0.1, 0.1, 0.4).corners() == (0.0, 0.0, pytest.approx(0.3), pytest.approx(0.3))
    # whole-image maps: a group whose attributes all peak in the top-left gets a box there
    cams = np.zeros((40, 8, 8))
    for name in GROUPS["hair"]:
        cams[ATTRIBUTES.index(name), 0, 0] = 5.0
    boxes = cam_boxes(cams, priors={})
    assert boxes["hair"].cx < 0.1 and boxes["hair"].cy < 0.1 and not boxes["hair"].prior
    assert boxes["eyes"].prior  # all-zero maps: flat


def test_the_contrast_rule_takes_out_what_every_attribute_marks() -> None:
    """Every attribute lights the face's centre, the eye group also a spot top-left: minmax
    averages both into a box between them, contrast keeps the spot particular to the eyes."""
    cams = np.zeros((40, 8, 8))
    cams[:, 3:5, 3:5] = 4.0  # the face as a whole, in every map
    for name in GROUPS["eyes"]:
        cams[ATTRIBUTES.index(name), 1, 1] = 3.0
    minmax = cam_boxes(cams, {}, rule="minmax")["eyes"]
    contrast = cam_boxes(cams, {}, rule="contrast")["eyes"]
    assert minmax.cx > 0.4  # pulled to the shared centre
    assert (contrast.cx, contrast.cy) == (1.5 / 8, 1.5 / 8)
    assert group_maps(cams, rule="contrast")["nose"].max() == 0  # nothing of its own: flat
    with pytest.raises(ConfigError, match="contrast"):
        group_maps(cams, rule="other")


def test_box_scores_in_face_crop_widths_and_the_detector_baseline() -> None:
    """A net that saw the photo: its distances are divided by the face crop's share of the
    photo (``unit``), so they read in face-crop widths like a face-crop net's; the detector
    baseline is scored in the face crop's own coordinates."""
    n = 4
    cams = np.zeros((n, 40, 8, 8))
    for name in GROUPS["nose"]:
        cams[:, ATTRIBUTES.index(name), 4, 4] = 1.0  # every nose box at (4.5/8, 4.5/8)
    marks = np.full((n, 5, 2), 0.5)
    marks[:, 2] = (4.5 / 8 + 0.05, 4.5 / 8)  # the nose 0.05 photo widths right of the box
    face = np.full((n, 5, 2), 0.5)
    face[:, 2] = (0.52, 0.5)
    out = FRLOutputs(loc=np.zeros((n, 40)), cls=np.zeros((n, 40)), cams=cams,
                     labels=np.zeros((n, 40)), landmarks=marks, face_landmarks=face,
                     unit=np.full(n, 0.25))
    priors = {g: (0.5, 0.5) for g in GROUPS}
    hits = box_hits(out, priors, detector={"eyes": (0.5, 0.5), "nose": (0.5, 0.5),
                                          "mouth": (0.5, 0.5)})
    nose = hits["nose"]
    assert nose["learned_dist"] == pytest.approx(0.05 / 0.25)  # 0.2 face-crop widths
    prior_gap = np.hypot(4.5 / 8 + 0.05 - 0.5, 4.5 / 8 - 0.5)
    assert nose["prior_dist"] == pytest.approx(prior_gap / 0.25)
    assert nose["detector_dist"] == pytest.approx(0.02) and nose["detector"] == 1.0
    # a box of 0.4 face crops is 0.1 photo widths here: the nose, 0.05 off, is just inside
    assert nose["learned"] == 1.0 and nose["fell_back"] == 0.0
    assert hits["eyes"]["fell_back"] == 1.0  # flat eye maps: the prior stands in


def test_crop_coordinates_match_the_preprocessings_crop() -> None:
    """A dot drawn at a point of the photo lands where crop_coordinates says in the crop."""
    img = Image.new("RGB", (200, 160))
    bbox = np.array([[60.0, 30.0, 50.0, 70.0]])
    point = np.array([[[95.0, 80.0]]])
    img.putpixel((95, 80), (255, 255, 255))
    crop = np.asarray(crop_with_margin(img, bbox[0].tolist(), margin=0.2))
    ys, xs = np.nonzero(crop[..., 0])
    got = crop_coordinates(bbox, point, 0.2)[0, 0]
    side = crop.shape[1]
    assert abs(got[0] * side - xs[0]) <= 1 and abs(got[1] * side - ys[0]) <= 1


def test_train_frl_with_mnl_end_to_end(wild: Path, tmp_path: Path) -> None:
    """The real CLI trains FRL with MNL on wild crops; eval scores its localization branch;
    the outputs give boxes that sit inside the crop and are compared with a fixed box."""
    out = tmp_path / "frl"
    cmd = [sys.executable, "-m", "facedistill", "train", "--arch", "frl", "--mnl", "mutual",
           "--width", "0.125", "--size", "32", "--variant", "wild", "--data", str(wild),
           "--epochs", "1", "--batch-size", "32", "--workers", "0", "--out", str(out),
           "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["config"]["mnl"] == "mutual" and summary["config"]["arch"] == "frl"
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"train_loc", "train_cls", "train_mutual"} <= set(lines[0])
    test = frl_outputs(str(out), str(wild), "test")
    n = len(test.labels)
    assert test.loc.shape == test.cls.shape == (n, 40) and test.cams.shape == (n, 40, 4, 4)
    assert test.landmarks is not None and ((test.landmarks > 0) & (test.landmarks < 1)).all()
    train_out = frl_outputs(str(out), str(wild), "train", limit=40)
    priors = {**cam_priors(train_out), **landmark_priors(train_out)}
    hits = box_hits(test, priors)
    assert set(hits) == {"eyes", "nose", "mouth"}
    for row in hits.values():
        assert 0 <= row["learned"] <= 1 and 0 <= row["prior"] <= 1 and row["prior_dist"] < 0.2
    # eval scores the localization branch, on the run's wild crops or on the aligned ones
    from facedistill.pipeline.evaluate import evaluate_checkpoint

    on_wild = evaluate_checkpoint(out, split="test", variant="run")
    on_aligned = evaluate_checkpoint(out, split="test", variant="aligned")
    assert on_wild["variant"] == "run" and on_aligned["variant"] == "aligned"
    assert on_wild["n_test"] == on_aligned["n_test"] == n
    assert on_wild["mean_balanced"] != on_aligned["mean_balanced"]  # other images
    refused = subprocess.run([sys.executable, "-m", "facedistill", "compress", "--teacher",
                              str(out), "--method", "soft", "--data", str(wild), "--variant",
                              "wild", "--out", str(tmp_path / "s")],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "does not teach" in refused.stderr
    assert refused.stderr.count("\n") == 1 and not (tmp_path / "s").exists()
    bad = subprocess.run([sys.executable, "-m", "facedistill", "train", "--arch", "snet3",
                          "--mnl", "joint", "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "field '--mnl'" in bad.stderr and "frl" in bad.stderr


def test_map_rules_place_the_heat_where_the_decision_is() -> None:
    from facedistill.errors import ConfigError
    from facedistill.pipeline.frl import group_maps

    cams = np.zeros((40, 8, 8))
    nose = [ATTRIBUTES.index(n) for n in GROUPS["nose"]]
    for i in nose:  # strong evidence against the attribute top-left, weak for it bottom-right
        cams[i, 0, 0], cams[i, 7, 7] = -4.0, 1.0
    logits = np.full(40, -1.0)  # the nose attributes are predicted absent
    minmax = group_maps(cams, rule="minmax")["nose"]
    signed = group_maps(cams, rule="signed", logits=logits)["nose"]
    assert np.unravel_index(minmax.argmax(), minmax.shape) == (7, 7)
    assert np.unravel_index(signed.argmax(), signed.shape) == (0, 0)
    absolute = group_maps(cams, rule="abs")["nose"]
    assert np.unravel_index(absolute.argmax(), absolute.shape) == (0, 0)
    with pytest.raises(ConfigError, match="minmax, signed, abs"):
        group_maps(cams, rule="max")


def test_box_jitter_loosens_training_boxes_reproducibly(wild: Path) -> None:
    from facedistill.config import TrainConfig
    from facedistill.errors import ConfigError
    from facedistill.pipeline.data.dataset import CelebA

    plain = CelebA(wild, "train", variant="wild", size=32)
    loose = CelebA(wild, "train", variant="wild", size=32, box_jitter=0.2)
    torch.manual_seed(0)
    a = loose[0][0]
    torch.manual_seed(0)
    b = loose[0][0]
    torch.testing.assert_close(a, b)  # drawn from torch's generator: seeded, reproducible
    assert not torch.equal(a, plain[0][0]) and a.shape == plain[0][0].shape
    assert "box_jitter" not in TrainConfig().to_record()  # off: records (and keys) unchanged
    assert TrainConfig(variant="wild", box_jitter=0.1).to_record()["box_jitter"] == 0.1
    with pytest.raises(ConfigError, match="variant wild"):
        TrainConfig(box_jitter=0.1)
    with pytest.raises(ConfigError, match="< 0.5"):
        TrainConfig(variant="wild", box_jitter=0.5)


def test_frl_on_whole_photos(wild: Path, tmp_path: Path) -> None:
    """``frame=photo``: the net trains on the padded photos, its record says so, and the
    landmarks come back in the photo's coordinates and in the face crop's, with the face crop's
    share of the photo as the unit of its distances."""
    from facedistill.config import TrainConfig
    from facedistill.nn.checkpoint import load_checkpoint
    from facedistill.pipeline.train import train

    cfg = TrainConfig(arch="frl", mnl="joint", width=0.125, size=32, variant="wild",
                      frame="photo", epochs=1, batch_size=32, workers=0)
    assert cfg.to_record()["frame"] == "photo" and "frame" not in TrainConfig().to_record()
    out = tmp_path / "photo"
    train(cfg, wild, out)
    assert load_checkpoint(out)["preprocess"]["frame"] == "photo"
    test = frl_outputs(str(out), str(wild), "test")
    assert test.landmarks is not None and test.face_landmarks is not None
    assert test.unit is not None and ((test.unit > 0.2) & (test.unit < 1)).all()
    assert ((test.landmarks >= 0) & (test.landmarks <= 1)).all()
    # the landmarks spread far more over photos than over face crops: the face moves
    assert test.landmarks[:, 2].std(axis=0).min() > 3 * test.face_landmarks[:, 2].std(axis=0).max()
    hits = box_hits(test, {**cam_priors(test), **landmark_priors(test)},
                    detector=landmark_priors(test, face=True))
    assert all(h["detector_dist"] < h["prior_dist"] for h in hits.values())
    with pytest.raises(ConfigError, match="no face box"):
        frl_outputs(str(out), str(wild), "test", box_jitter=0.1)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"frame": "photo"}, "frame"),  # aligned crops are no photos
    ({"frame": "photo", "variant": "wild", "box_jitter": 0.1}, "box_jitter"),
])
def test_photo_frame_settings_checked(kwargs: dict, field: str) -> None:
    from facedistill.config import TrainConfig

    with pytest.raises(ConfigError) as err:
        TrainConfig(arch="frl", **kwargs)
    assert err.value.field == field


def test_photo_model_exports_and_refuses_face_boxes(wild: Path, tmp_path: Path) -> None:
    """An FRL net on whole photos exports like any model; the runtime pads the photo as
    training did, and will not cut face boxes for it."""
    from facedistill.config import TrainConfig
    from facedistill.export import export_model
    from facedistill.nn.checkpoint import load_checkpoint, model_from_checkpoint
    from facedistill.pipeline.data.transforms import Transform
    from facedistill.pipeline.train import train
    from facedistill.runtime import Predictor, load_image
    from facedistill.runtime.preprocess import Preprocess

    out = tmp_path / "photo"
    train(TrainConfig(arch="frl", width=0.125, size=32, variant="wild", frame="photo",
                      epochs=1, batch_size=32, workers=0), wild, out)
    onnx = export_model(out, tmp_path / "export", precision="fp32").ok_onnx()["fp32"]
    predictor = Predictor(onnx, threads=1)
    assert predictor.preprocess.frame == "photo"
    photo = next((wild / "img_celeba").iterdir())
    ckpt = load_checkpoint(out)
    x = Transform(Preprocess.from_record(ckpt["preprocess"]))(load_image(photo))
    with torch.no_grad():
        want = torch.sigmoid(model_from_checkpoint(ckpt)(x[None]))[0].numpy()
    np.testing.assert_allclose(predictor.predict(photo).probabilities, want, atol=1e-4)
    with pytest.raises(ConfigError, match="whole photo"):
        predictor.predict_faces(photo, detector=lambda rgb: [(0, 0, 10, 10)])


def test_parts_train_on_frl_boxes_and_export_as_one_graph(wild: Path, tmp_path: Path) -> None:
    """``train --arch parts --frl RUN``: part subnets on a frozen FRL's regions (the FRL's
    weights unchanged by the training), scored by eval and exported as one ONNX graph whose
    probabilities match the PyTorch model's."""
    from facedistill.config import TrainConfig
    from facedistill.export import export_model
    from facedistill.nn.checkpoint import load_checkpoint, model_from_checkpoint
    from facedistill.pipeline.train import train
    from facedistill.runtime import Predictor

    frl = tmp_path / "frl"
    train(TrainConfig(arch="frl", mnl="joint", width=0.125, size=32, variant="wild",
                      epochs=1, batch_size=32, workers=0), wild, frl)
    parts = tmp_path / "parts"
    cmd = [sys.executable, "-m", "facedistill", "train", "--arch", "parts", "--frl", str(frl),
           "--data", str(wild), "--variant", "wild", "--size", "32", "--width", "0.25",
           "--epochs", "1", "--batch-size", "32", "--workers", "0", "--out", str(parts),
           "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    ckpt = load_checkpoint(parts)
    assert ckpt["arch"] == {"arch": "parts", "width": 0.25, "num_attrs": 40,
                            "frl_width": 0.125, "part_size": 32, "rule": "minmax"}
    model = model_from_checkpoint(ckpt)
    frl_state = load_checkpoint(frl)["model"]
    for k, v in model.frl.state_dict().items():  # frozen: the FRL run's weights exactly
        torch.testing.assert_close(v, frl_state[k])
    assert not torch.equal(model.boxes.priors, torch.full_like(model.boxes.priors, 0.5))
    onnx = export_model(parts, tmp_path / "export", precision="fp32").ok_onnx()["fp32"]
    x = torch.from_numpy(Predictor(onnx).preprocess_batch(
        [np.full((40, 40, 3), 128, np.uint8), np.zeros((32, 48, 3), np.uint8)]))
    with torch.no_grad():
        want = torch.sigmoid(model(x)).numpy()
    got = Predictor(onnx, threads=1).predict_batch(
        [np.full((40, 40, 3), 128, np.uint8), np.zeros((32, 48, 3), np.uint8)])
    np.testing.assert_allclose(np.stack([p.probabilities for p in got]), want, atol=1e-4)
    # the control: every image gets the FRL's mean box per region, the same graph otherwise
    fixed = build_model(**{**ckpt["arch"], "fixed": True})
    fixed.load_state_dict(model.state_dict())
    boxes = fixed.eval().regions(x)
    assert fixed.config()["fixed"] is True and (boxes == boxes[:1]).all()
    torch.testing.assert_close(boxes[0, :, :2], model.boxes.priors)
    # an FRL run that saw other inputs is refused in one line, nothing written
    bad = subprocess.run([*cmd[:-3], "--size", "48", "--out", str(tmp_path / "p2")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "saw 32x32 wild face crops" in bad.stderr
    assert bad.stderr.count("\n") == 1 and not (tmp_path / "p2").exists()
    missing = subprocess.run([*cmd[:4], "--arch", "parts", "--out", str(tmp_path / "p3")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "--frl RUN" in missing.stderr
