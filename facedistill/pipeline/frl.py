"""Face-region localization (FRL) with multi-net learning (MNL), the cascade paper's first
stage for unaligned faces (our reconstruction: ``docs/cascade.md``).

:class:`~facedistill.nn.models.FRLNet` has two branches on one trunk: localization (GAP -> FC,
whose class activation maps say where each attribute's evidence is) and classification. The
objective here trains them: ``off`` the localization branch alone (Table 1's "without MNL"),
``joint`` both on the labels, ``mutual`` both plus each fitting the other's (detached)
probabilities. :func:`cam_boxes` turns a trained net's maps into one box per attribute group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from facedistill.attributes import ATTRIBUTES
from facedistill.errors import ConfigError
from facedistill.nn.regions import (  # noqa: F401 (re-exported: the FRL's regions)
    BOX_SIDE,
    GROUPS,
    MAP_RULES,
    RegionBoxes,
)

MUTUAL_WEIGHT = 0.5  # the spec's ~0.5: each branch's pull toward the other's probabilities


class MNLObjective(nn.Module):
    """``BCE(loc)`` [+ ``BCE(cls)`` [+ ``w * (BCE(loc, p_cls) + BCE(cls, p_loc))``]], the
    targets of the mutual term detached (each branch learns from the other, not the reverse
    through it)."""

    MODES = ("off", "joint", "mutual")

    def __init__(self, mode: str = "joint", pos_weight: torch.Tensor | None = None,
                 mutual_weight: float = MUTUAL_WEIGHT) -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ConfigError(f"must be one of {', '.join(self.MODES)}, not {mode!r}",
                              field="mnl")
        self.mode = mode
        self.mutual_weight = float(mutual_weight)
        self.register_buffer("pos_weight", pos_weight, persistent=False)

    def forward(self, logits: torch.Tensor, features: torch.Tensor, labels: torch.Tensor,
                images: torch.Tensor, cls_logits: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        bce = nn.functional.binary_cross_entropy_with_logits
        loc = bce(logits.float(), labels, pos_weight=self.pos_weight)
        terms = {"loc": loc.detach()}
        loss = loc
        if self.mode != "off":
            if cls_logits is None:
                raise ValueError("multi-net learning needs the classification logits")
            cls = bce(cls_logits.float(), labels, pos_weight=self.pos_weight)
            terms["cls"] = cls.detach()
            loss = loss + cls
            if self.mode == "mutual":
                mutual = bce(logits.float(), torch.sigmoid(cls_logits.float()).detach()) \
                    + bce(cls_logits.float(), torch.sigmoid(logits.float()).detach())
                terms["mutual"] = mutual.detach()
                loss = loss + self.mutual_weight * mutual
        return loss, terms

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, mutual_weight={self.mutual_weight:g}"


# -- regions ------------------------------------------------------------------------------------

def group_of(name: str) -> str:
    for group, names in GROUPS.items():
        if name in names:
            return group
    raise KeyError(name)


@dataclass(frozen=True)
class Box:
    """A square region in unit image coordinates: centre ``(cx, cy)``, side ``side``;
    ``prior``: the map was flat and the group's prior box stands in."""

    cx: float
    cy: float
    side: float
    prior: bool = False

    def corners(self) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)``, clipped to the image."""
        h = self.side / 2
        return (max(0.0, self.cx - h), max(0.0, self.cy - h), min(1.0, self.cx + h),
                min(1.0, self.cy + h))

    def contains(self, x: float, y: float) -> bool:
        x0, y0, x1, y1 = self.corners()
        return x0 <= x <= x1 and y0 <= y <= y1


def region_boxes(priors: dict[str, tuple[float, float]] | None = None, *,
                 rule: str = "minmax", names: Sequence[str] = ATTRIBUTES) -> RegionBoxes:
    """The batched box extractor (:class:`~facedistill.nn.regions.RegionBoxes`) of the
    groups here: heat map per group under ``rule`` (:data:`MAP_RULES`), a box of the group's
    side on its peak, ``priors`` where the map is flat."""
    return RegionBoxes(GROUPS, names, BOX_SIDE, priors, rule=rule)


def batch_boxes(cams: np.ndarray, logits: np.ndarray | None,
                priors: dict[str, tuple[float, float]] | None = None, *, rule: str = "minmax"
                ) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``[N, G, 3]`` (cx, cy, side) and prior flags ``[N, G]`` of maps ``[N, A, h, w]``,
    groups in :data:`GROUPS` order."""
    with torch.no_grad():
        boxes, flat, _ = region_boxes(priors, rule=rule)(
            torch.from_numpy(np.asarray(cams, np.float32)),
            None if logits is None else torch.from_numpy(np.asarray(logits, np.float32)))
    return boxes.numpy(), flat.numpy()


def group_maps(cams: np.ndarray, names: Sequence[str] = ATTRIBUTES, *, rule: str = "minmax",
               logits: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per group, the heat map of one image's maps ``cams`` ``[A, h, w]`` (``logits`` ``[A]``:
    its predictions, for ``signed``): the mean of its attributes' maps under ``rule``, each
    normalised to [0, 1]."""
    with torch.no_grad():
        heat = region_boxes(rule=rule, names=names).heat(
            torch.from_numpy(np.asarray(cams, np.float32))[None],
            None if logits is None else torch.from_numpy(np.asarray(logits, np.float32))[None])
    return {g: heat[0, j].numpy() for j, g in enumerate(GROUPS)}


def cam_boxes(cams: np.ndarray, priors: dict[str, tuple[float, float]], *,
              rule: str = "minmax", logits: np.ndarray | None = None) -> dict[str, Box]:
    """One box per attribute group of one image's maps ``[A, h, w]``; ``priors``: each
    group's mean box centre on training images (the fallback of a flat map)."""
    boxes, flat = batch_boxes(cams[None], None if logits is None else logits[None], priors,
                              rule=rule)
    return {g: Box(*(float(v) for v in boxes[0, j]), prior=bool(flat[0, j]))
            for j, g in enumerate(GROUPS)}


# -- evaluation -------------------------------------------------------------------------------

#: which wild landmarks (CelebA's five: left eye, right eye, nose, left and right mouth
#: corner) a group's box must contain
LANDMARKS_OF: dict[str, tuple[int, ...]] = {"eyes": (0, 1), "nose": (2,), "mouth": (3, 4)}


def crop_coordinates(bbox: np.ndarray, points: np.ndarray, margin: float) -> np.ndarray:
    """``points`` ``[N, K, 2]`` of the source photos in unit coordinates of the square face
    crop the preprocessing cuts (:func:`facedistill.runtime.preprocess.crop_with_margin`:
    the box ``[N, 4]`` (x, y, w, h) enlarged by ``margin`` on every side, squared)."""
    x, y, w, h = (bbox[:, i, None] for i in range(4))
    side = np.maximum(w, h) * (1.0 + 2.0 * margin)
    left = np.round(x + w / 2 - side / 2)
    top = np.round(y + h / 2 - side / 2)
    side = np.round(side)
    return np.stack([(points[..., 0] - left) / side, (points[..., 1] - top) / side], axis=-1)


@dataclass
class FRLOutputs:
    """What a trained FRL net says about one split: both branches' logits ``[N, A]``, the
    CAMs ``[N, A, h, w]``, the labels; with the wild landmarks (else None), where they are
    (``[N, 5, 2]``) in unit coordinates of what the net saw (``landmarks``: its face crop or
    padded photo) and of the face box's crop (``face_landmarks``), and ``unit`` ``[N]``, the
    face crop's side in the net's unit coordinates (1 for a face-crop net): distances divided
    by it are in face-crop widths whatever the net saw."""

    loc: np.ndarray
    cls: np.ndarray
    cams: np.ndarray
    labels: np.ndarray
    landmarks: np.ndarray | None
    face_landmarks: np.ndarray | None = None
    unit: np.ndarray | None = None


def jitter_boxes(bbox: np.ndarray, amount: float, seed: int = 0) -> np.ndarray:
    """Face boxes ``[N, 4]`` (x, y, w, h) as a loose detector would give them: the centre
    moved by up to ``amount`` of the box size in x and y, the size scaled by up to
    ``1 +- amount`` (uniform, seeded)."""
    rng = np.random.default_rng(seed)
    n = len(bbox)
    x, y, w, h = (bbox[:, i].astype(np.float64) for i in range(4))
    scale = rng.uniform(1 - amount, 1 + amount, n)
    cx = x + w / 2 + rng.uniform(-amount, amount, n) * w
    cy = y + h / 2 + rng.uniform(-amount, amount, n) * h
    w, h = w * scale, h * scale
    return np.stack([cx - w / 2, cy - h / 2, w, h], axis=1).astype(bbox.dtype)


def frl_outputs(run: str, data: str | None, split: str, *, batch_size: int = 64,
                workers: int = 0, limit: int | None = None, box_jitter: float = 0.0,
                jitter_seed: int = 0) -> FRLOutputs:
    """Run a trained FRL checkpoint over ``split`` (its own eval preprocessing); with
    ``box_jitter``, on crops of loosened face boxes (:func:`jitter_boxes`): where a fixed box
    misses and a localizer must follow the face."""
    import dataclasses

    from torch.utils.data import DataLoader, Subset

    from facedistill.nn.checkpoint import load_checkpoint, model_from_checkpoint
    from facedistill.pipeline.data.dataset import CelebA
    from facedistill.pipeline.evaluate import checkpoint_data

    ckpt = load_checkpoint(run)
    model = model_from_checkpoint(ckpt).eval()
    if not hasattr(model, "branches"):
        raise ConfigError(f"{ckpt['arch']['arch']} is no FRL net (train --arch frl)",
                          field="arch")
    index, transform, _root = checkpoint_data(ckpt, data)
    variant = (ckpt.get("data") or {}).get("variant") or "aligned"
    if box_jitter > 0:
        if ckpt["preprocess"].get("frame", "face") == "photo":
            raise ConfigError("this net sees the whole photo: no face box to loosen",
                              field="box_jitter")
        if index.bbox is None:
            raise ConfigError("box jitter needs the face boxes (list_bbox_celeba.txt)")
        index = dataclasses.replace(index, bbox=jitter_boxes(index.bbox, box_jitter,
                                                             jitter_seed))
    has_marks = index.landmarks is not None
    ds = CelebA(index, split, variant=variant, transform=transform, return_bbox=True,
                return_landmarks=has_marks)
    if limit is not None:
        ds = Subset(ds, range(min(limit, len(ds))))  # type: ignore[assignment]
    loc, cls, cams, labels, boxes, sizes, marks = [], [], [], [], [], [], []
    with torch.no_grad():
        for x, y, extra in DataLoader(ds, batch_size=batch_size, num_workers=workers):
            loc_logits, cls_logits, maps = model.branches(x)
            loc.append(loc_logits)
            cls.append(cls_logits)
            cams.append(maps)
            labels.append(y)
            boxes.append(extra["bbox"])
            sizes.append(extra["image_size"])
            if has_marks:
                marks.append(extra["landmarks"])
    margin = float(ckpt["preprocess"].get("margin", 0.2))
    out = FRLOutputs(loc=torch.cat(loc).numpy(), cls=torch.cat(cls).numpy(),
                     cams=torch.cat(cams).numpy(), labels=torch.cat(labels).numpy(),
                     landmarks=None)
    if has_marks and variant == "wild":
        raw = torch.cat(marks).numpy().reshape(-1, 5, 2)
        bbox = torch.cat(boxes).numpy()
        out.face_landmarks = out.landmarks = crop_coordinates(bbox, raw, margin)
        out.unit = np.ones(len(raw))
        if ckpt["preprocess"].get("frame", "face") == "photo":
            photo = np.concatenate([np.zeros((len(raw), 2)), torch.cat(sizes).numpy()], axis=1)
            out.landmarks = crop_coordinates(photo, raw, 0.0)
            out.unit = (np.maximum(bbox[:, 2], bbox[:, 3]) * (1 + 2 * margin)
                        / np.maximum(photo[:, 2], photo[:, 3]))
    return out


def box_hits(outputs: FRLOutputs, priors: dict[str, tuple[float, float]], *,
             rule: str = "minmax", detector: dict[str, tuple[float, float]] | None = None
             ) -> dict[str, dict[str, float]]:
    """Per group with landmarks (eyes, nose, mouth): the share of images whose learned box
    contains all the group's landmarks (``learned``), the same for a fixed box at ``priors``
    (``prior``, side as the learned one's), the mean distance of each box's centre to the
    landmarks' centroid in face-crop widths (``learned_dist``, ``prior_dist``: finer than
    containment, which a box of 0.4 crop widths reaches easily) and the share of learned boxes
    that fell back to the prior (``fell_back``). Boxes are sized to the face: the group's side
    of the face crop (for a net that sees the whole photo, from the true face size, which the
    learned and the fixed box both get). ``detector``: fixed positions in face-crop coordinates
    (:func:`landmark_priors` with ``face=True``), scored as ``detector`` and ``detector_dist``:
    a face detector's box with a fixed part box in it, what a system with a detector places."""
    if outputs.landmarks is None:
        raise ConfigError("the wild landmarks are needed (list_landmarks_celeba.txt)")
    n = len(outputs.cams)
    unit = outputs.unit if outputs.unit is not None else np.ones(n)
    boxes, flat = batch_boxes(outputs.cams, outputs.loc, priors, rule=rule)
    out: dict[str, dict[str, float]] = {}
    for group, idx in LANDMARKS_OF.items():
        g = list(GROUPS).index(group)
        pts = outputs.landmarks[:, list(idx)]
        side = BOX_SIDE[group] * unit
        row = {**_placed(boxes[:, g, :2], side, pts, unit, "learned"),
               **_placed(np.array(priors[group]), side, pts, unit, "prior"),
               "fell_back": float(flat[:, g].mean())}
        if detector is not None:
            assert outputs.face_landmarks is not None
            row |= _placed(np.array(detector[group]), np.full(n, BOX_SIDE[group]),
                           outputs.face_landmarks[:, list(idx)], np.ones(n), "detector")
        out[group] = row
    return out


def _placed(centres: np.ndarray, side: np.ndarray, pts: np.ndarray, unit: np.ndarray,
            name: str) -> dict[str, float]:
    """Square boxes at ``centres`` (``[N, 2]`` or one ``[2]``), sides ``side`` ``[N]``,
    against landmarks ``pts`` ``[N, K, 2]``: the share containing every landmark (``name``)
    and the mean centre distance to their centroid in units of ``unit`` (``name_dist``)."""
    c = np.broadcast_to(centres, (len(pts), 2))
    lo = np.clip(c - side[:, None] / 2, 0.0, 1.0)[:, None]
    hi = np.clip(c + side[:, None] / 2, 0.0, 1.0)[:, None]
    inside = ((pts >= lo) & (pts <= hi)).all(axis=(1, 2))
    dist = np.hypot(*(c - pts.mean(axis=1)).T) / unit
    return {name: float(inside.mean()), f"{name}_dist": float(dist.mean())}


def cam_priors(outputs: FRLOutputs, *, rule: str = "minmax"
               ) -> dict[str, tuple[float, float]]:
    """Each group's mean box centre over ``outputs`` (training images): the fallback of a
    flat map, learned from the maps alone (no landmark)."""
    boxes, flat = batch_boxes(outputs.cams, outputs.loc, rule=rule)
    return {g: tuple(float(v) for v in boxes[~flat[:, j], j, :2].mean(axis=0))  # type: ignore[misc]
            if (~flat[:, j]).any() else (0.5, 0.5) for j, g in enumerate(GROUPS)}


def landmark_priors(outputs: FRLOutputs, *, face: bool = False
                    ) -> dict[str, tuple[float, float]]:
    """Each landmark group's mean position over ``outputs`` (training images), in what the
    net saw: the best fixed box a system without localization could place, the baseline the
    learned boxes must beat; ``face``: in the face box's crop (a detector's box plus a fixed
    part box: :func:`box_hits`' ``detector``)."""
    marks = outputs.face_landmarks if face else outputs.landmarks
    assert marks is not None
    return {g: tuple(marks[:, list(idx)].reshape(-1, 2).mean(axis=0))  # type: ignore[misc]
            for g, idx in LANDMARKS_OF.items()}


# -- the part subnets' localizer -------------------------------------------------------------


def parts_model(cfg: Any, index: Any) -> Any:
    """A :class:`~facedistill.nn.parts.PartsNet` for ``cfg`` (a TrainConfig with ``arch
    parts``) on the trained FRL run ``cfg.frl``: its weights, and the groups' prior boxes from
    its maps on (up to 1,000) training images of ``index``. The FRL must have seen the same
    input (size, margin, variant, frame) as the parts will."""
    from facedistill.nn.checkpoint import load_checkpoint
    from facedistill.nn.models import build_model

    ckpt = load_checkpoint(cfg.frl)
    if ckpt["arch"]["arch"] != "frl":
        raise ConfigError(f"{cfg.frl} is a {ckpt['arch']['arch']} run, not an FRL one "
                          "(train --arch frl)", field="frl")
    pre = ckpt["preprocess"]
    seen = ckpt.get("config") or {}
    want = {"size": [cfg.size, cfg.size], "margin": cfg.margin, "frame": cfg.frame}
    got = {"size": pre["size"], "margin": pre.get("margin", 0.2),
           "frame": pre.get("frame", "face")}
    if got != want or seen.get("variant", cfg.variant) != cfg.variant:
        def said(d: dict[str, Any], variant: Any) -> str:
            return (f"{d['size'][0]}x{d['size'][1]} {variant} {d['frame']} crops, margin "
                    f"{d['margin']:g}")

        raise ConfigError(f"{cfg.frl} saw {said(got, seen.get('variant'))}; the parts would "
                          f"see {said(want, cfg.variant)}: train both on the same input",
                          field="frl")
    model = build_model("parts", width=cfg.width, frl_width=ckpt["arch"]["width"],
                        part_size=cfg.part_size, rule=cfg.box_rule,
                        fixed=cfg.part_boxes == "fixed")
    train_out = frl_outputs(cfg.frl, str(index.root), "train", limit=1000)
    model.load_frl(ckpt["model"], cam_priors(train_out, rule=cfg.box_rule))
    return model
