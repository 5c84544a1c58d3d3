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

import numpy as np
import torch
from torch import nn

from facedistill.attributes import ATTRIBUTES
from facedistill.errors import ConfigError

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

#: attribute groups that share a face region (the spec's groups); every attribute is in one
GROUPS: dict[str, tuple[str, ...]] = {
    "eyes": ("Arched_Eyebrows", "Bags_Under_Eyes", "Bushy_Eyebrows", "Eyeglasses",
             "Narrow_Eyes"),
    "nose": ("Big_Nose", "Pointy_Nose"),
    "mouth": ("5_o_Clock_Shadow", "Big_Lips", "Double_Chin", "Goatee", "Mouth_Slightly_Open",
              "Mustache", "No_Beard", "Smiling", "Wearing_Lipstick"),
    "hair": ("Bald", "Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair",
             "Receding_Hairline", "Straight_Hair", "Wavy_Hair", "Wearing_Hat"),
    "cheeks": ("High_Cheekbones", "Rosy_Cheeks", "Sideburns", "Heavy_Makeup", "Pale_Skin"),
    "neck": ("Wearing_Earrings", "Wearing_Necklace", "Wearing_Necktie"),
    "face": ("Attractive", "Blurry", "Chubby", "Male", "Oval_Face", "Young"),
}

#: a box's side as a fraction of the image: local regions small, hair and the face large
BOX_SIDE: dict[str, float] = {"eyes": 0.4, "nose": 0.4, "mouth": 0.4, "cheeks": 0.5,
                              "neck": 0.5, "hair": 0.6, "face": 1.0}


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


#: how an attribute's CAM becomes its heat map: ``minmax`` where its logit is highest;
#: ``signed`` where the evidence for the image's decision is (the map negated for an attribute
#: predicted absent); ``abs`` where the logit departs most from its mean, either way
MAP_RULES = ("minmax", "signed", "abs")


def group_maps(cams: np.ndarray, names: Sequence[str] = ATTRIBUTES, *, rule: str = "minmax",
               logits: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per group, the mean of its attributes' heat maps (``rule``, :data:`MAP_RULES`), each
    normalised to [0, 1] (``cams``: ``[A, h, w]`` of one image; ``logits`` ``[A]``: its
    predictions, for ``signed``)."""
    if rule not in MAP_RULES:
        raise ConfigError(f"must be one of {', '.join(MAP_RULES)}, not {rule!r}", field="rule")
    out: dict[str, np.ndarray] = {}
    for group, members in GROUPS.items():
        idx = [list(names).index(n) for n in members if n in names]
        maps = []
        for i in idx:
            m = cams[i]
            if rule == "signed" and logits is not None and logits[i] < 0:
                m = -m
            elif rule == "abs":
                m = np.abs(m - m.mean())
            m = m - m.min()
            maps.append(m / m.max() if m.max() > 0 else m)
        out[group] = np.mean(maps, axis=0) if maps else np.zeros(cams.shape[1:])
    return out


def peak_box(heat: np.ndarray, side: float, prior: tuple[float, float],
             flat: float = 0.15) -> Box:
    """A square of ``side`` centred on the heat map's weighted peak (the centroid of the
    cells above half its maximum); the ``prior`` centre when the map is flat (its max less
    than ``flat`` above its mean, on a [0, 1] map)."""
    h, w = heat.shape
    if heat.max() - heat.mean() < flat:
        return Box(prior[0], prior[1], side, prior=True)
    mask = heat >= 0.5 * heat.max()
    ys, xs = np.nonzero(mask)
    wts = heat[ys, xs]
    cx = float(((xs + 0.5) / w * wts).sum() / wts.sum())
    cy = float(((ys + 0.5) / h * wts).sum() / wts.sum())
    return Box(cx, cy, side)


def cam_boxes(cams: np.ndarray, priors: dict[str, tuple[float, float]],
              names: Sequence[str] = ATTRIBUTES, *, rule: str = "minmax",
              logits: np.ndarray | None = None) -> dict[str, Box]:
    """One box per attribute group of one image's maps ``[A, h, w]``; ``priors``: each
    group's mean box centre on training images (the fallback of a flat map)."""
    heats = group_maps(cams, names, rule=rule, logits=logits)
    return {g: peak_box(heats[g], BOX_SIDE[g], priors.get(g, (0.5, 0.5))) for g in GROUPS}


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
    CAMs ``[N, A, h, w]``, the labels, the face boxes and wild landmarks in crop coordinates
    (unit, ``[N, 5, 2]``; None without landmark files)."""

    loc: np.ndarray
    cls: np.ndarray
    cams: np.ndarray
    labels: np.ndarray
    landmarks: np.ndarray | None


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
        if index.bbox is None:
            raise ConfigError("box jitter needs the face boxes (list_bbox_celeba.txt)")
        index = dataclasses.replace(index, bbox=jitter_boxes(index.bbox, box_jitter,
                                                             jitter_seed))
    has_marks = index.landmarks is not None
    ds = CelebA(index, split, variant=variant, transform=transform, return_bbox=True,
                return_landmarks=has_marks)
    if limit is not None:
        ds = Subset(ds, range(min(limit, len(ds))))  # type: ignore[assignment]
    loc, cls, cams, labels, boxes, marks = [], [], [], [], [], []
    with torch.no_grad():
        for x, y, extra in DataLoader(ds, batch_size=batch_size, num_workers=workers):
            loc_logits, cls_logits, maps = model.branches(x)
            loc.append(loc_logits)
            cls.append(cls_logits)
            cams.append(maps)
            labels.append(y)
            boxes.append(extra["bbox"])
            if has_marks:
                marks.append(extra["landmarks"])
    margin = float(ckpt["preprocess"].get("margin", 0.2))
    points = None
    if has_marks and variant == "wild":
        raw = torch.cat(marks).numpy().reshape(-1, 5, 2)
        points = crop_coordinates(torch.cat(boxes).numpy(), raw, margin)
    return FRLOutputs(loc=torch.cat(loc).numpy(), cls=torch.cat(cls).numpy(),
                      cams=torch.cat(cams).numpy(), labels=torch.cat(labels).numpy(),
                      landmarks=points)


def box_hits(outputs: FRLOutputs, priors: dict[str, tuple[float, float]], *,
             rule: str = "minmax") -> dict[str, dict[str, float]]:
    """Per group with landmarks (eyes, nose, mouth): the share of images whose learned box
    contains all the group's landmarks (``learned``), the same for a fixed box at ``priors``
    (``prior``, side as the learned one's), the mean distance of each box's centre to the
    landmarks' centroid in crop widths (``learned_dist``, ``prior_dist``: finer than
    containment, which a box of 0.4 crop widths reaches easily) and the share of learned boxes
    that fell back to the prior (``fell_back``)."""
    if outputs.landmarks is None:
        raise ConfigError("the wild landmarks are needed (list_landmarks_celeba.txt)")
    out: dict[str, dict[str, float]] = {}
    n = len(outputs.cams)
    boxes = [cam_boxes(outputs.cams[i], priors, rule=rule, logits=outputs.loc[i])
             for i in range(n)]
    for group, idx in LANDMARKS_OF.items():
        learned = fixed = fell_back = 0
        d_learned = d_prior = 0.0
        prior = Box(*priors[group], BOX_SIDE[group])
        for i in range(n):
            pts = outputs.landmarks[i, list(idx)]
            box = boxes[i][group]
            learned += all(box.contains(*p) for p in pts)
            fixed += all(prior.contains(*p) for p in pts)
            fell_back += box.prior
            centre = pts.mean(axis=0)
            d_learned += float(np.hypot(box.cx - centre[0], box.cy - centre[1]))
            d_prior += float(np.hypot(prior.cx - centre[0], prior.cy - centre[1]))
        out[group] = {"learned": learned / n, "prior": fixed / n, "learned_dist": d_learned / n,
                      "prior_dist": d_prior / n, "fell_back": fell_back / n}
    return out


def cam_priors(outputs: FRLOutputs, *, rule: str = "minmax"
               ) -> dict[str, tuple[float, float]]:
    """Each group's mean box centre over ``outputs`` (training images): the fallback of a
    flat map, learned from the maps alone (no landmark)."""
    centres: dict[str, list[tuple[float, float]]] = {g: [] for g in GROUPS}
    for cams, logits in zip(outputs.cams, outputs.loc, strict=True):
        for g, box in cam_boxes(cams, {}, rule=rule, logits=logits).items():
            if not box.prior:
                centres[g].append((box.cx, box.cy))
    return {g: tuple(np.mean(c, axis=0)) if c else (0.5, 0.5)  # type: ignore[misc]
            for g, c in centres.items()}


def landmark_priors(outputs: FRLOutputs) -> dict[str, tuple[float, float]]:
    """Each landmark group's mean position over ``outputs`` (training images): the best fixed
    box a detector-free system could place, the baseline the learned boxes must beat."""
    assert outputs.landmarks is not None
    return {g: tuple(outputs.landmarks[:, list(idx)].reshape(-1, 2).mean(axis=0))  # type: ignore[misc]
            for g, idx in LANDMARKS_OF.items()}
