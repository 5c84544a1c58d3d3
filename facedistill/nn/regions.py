"""Region boxes from class activation maps, and the crops they cut, as tensor ops.

What :mod:`facedistill.pipeline.frl` does per image (heat map per attribute group, a box on its
peak, a prior where the map is flat) is written here once, batched and without Python control
flow on values, so the same module runs in training, in the benchmarks and inside an exported
ONNX graph (elementwise ops, reductions and ``GridSample``: what ONNX Runtime and TensorRT
10.x/11.x both run). :func:`crop_regions` cuts each box out of the image by bilinear sampling
(an RoiAlign with one sample per output pixel), differentiable in the image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

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


#: a map is flat (its box falls back to the prior) when its max is less than this above its
#: mean, on a [0, 1] map
FLAT = 0.15
#: the cells of a map that place its box: those at or above this share of its maximum
PEAK_SHARE = 0.5
#: how an attribute's CAM becomes its heat map: ``minmax`` where its logit is highest;
#: ``signed`` where the evidence for the image's decision is (the map negated for an attribute
#: predicted absent); ``abs`` where the logit departs most from its mean, either way;
#: ``contrast`` where it is higher than the mean of all attributes' minmax maps (what the net
#: finds everywhere, the face as a whole, taken out: the part particular to the attribute)
MAP_RULES = ("minmax", "signed", "abs", "contrast")


def unit_maps(m: torch.Tensor) -> torch.Tensor:
    """Each map of ``[..., h, w]`` shifted and scaled to [0, 1] (zeros where constant)."""
    m = m - m.amin(dim=(-2, -1), keepdim=True)
    top = m.amax(dim=(-2, -1), keepdim=True)
    return torch.where(top > 0, m / torch.where(top > 0, top, torch.ones_like(top)),
                       torch.zeros_like(m))


class RegionBoxes(nn.Module):
    """CAMs ``[N, A, h, w]`` (+ the logits ``[N, A]``, for ``signed``) -> per group a square
    box ``[N, G, 3]`` = (cx, cy, side) in unit image coordinates, a flag ``[N, G]`` where the
    prior stood in, and the group heat maps ``[N, G, h, w]``.

    A group's heat map is the mean of its attributes' maps under ``rule`` (each normalised to
    [0, 1]); its box is centred on the weighted centroid of the cells at or above half the
    map's maximum, with the group's fixed ``sides``; a flat map takes ``priors[group]``.
    """

    def __init__(self, groups: Mapping[str, Sequence[str]], names: Sequence[str],
                 sides: Mapping[str, float], priors: Mapping[str, tuple[float, float]]
                 | None = None, *, rule: str = "minmax") -> None:
        super().__init__()
        from facedistill.errors import ConfigError

        if rule not in MAP_RULES:
            raise ConfigError(f"must be one of {', '.join(MAP_RULES)}, not {rule!r}",
                              field="rule")
        self.rule = rule
        self.groups = tuple(groups)
        names = list(names)
        weights = torch.zeros(len(self.groups), len(names))
        for g, members in enumerate(groups.values()):
            idx = [names.index(n) for n in members if n in names]
            if idx:
                weights[g, idx] = 1.0 / len(idx)
        priors = priors or {}
        self.register_buffer("weights", weights)
        self.register_buffer("sides", torch.tensor([float(sides[g]) for g in self.groups]))
        self.register_buffer("priors", torch.tensor(
            [list(priors.get(g, (0.5, 0.5))) for g in self.groups], dtype=torch.float32))

    def heat(self, cams: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        """The group heat maps ``[N, G, h, w]``."""
        m = cams.float()
        if self.rule == "signed" and logits is not None:
            m = torch.where(logits[..., None, None] < 0, -m, m)
        elif self.rule == "abs":
            m = (m - m.mean(dim=(-2, -1), keepdim=True)).abs()
        elif self.rule == "contrast":
            m = unit_maps(m)
            m = (m - m.mean(dim=1, keepdim=True)).clamp(min=0.0)
        return torch.einsum("ga,nahw->nghw", self.weights, unit_maps(m))

    def forward(self, cams: torch.Tensor, logits: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        heat = self.heat(cams, logits)
        h, w = heat.shape[-2:]
        top = heat.amax(dim=(-2, -1))
        flat = (top - heat.mean(dim=(-2, -1))) < FLAT
        wts = torch.where(heat >= PEAK_SHARE * top[..., None, None], heat,
                          torch.zeros_like(heat))
        total = wts.sum(dim=(-2, -1)).clamp(min=1e-12)
        xs = (torch.arange(w, dtype=heat.dtype, device=heat.device) + 0.5) / w
        ys = (torch.arange(h, dtype=heat.dtype, device=heat.device) + 0.5) / h
        cx = (wts.sum(dim=-2) * xs).sum(dim=-1) / total
        cy = (wts.sum(dim=-1) * ys).sum(dim=-1) / total
        centre = torch.stack([cx, cy], dim=-1)
        centre = torch.where(flat[..., None], self.priors.expand_as(centre), centre)
        side = self.sides.expand(centre.shape[:-1])[..., None]
        return torch.cat([centre, side], dim=-1), flat, heat


def crop_regions(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Cut square ``boxes`` ``[N, G, 3]`` (cx, cy, side in unit coordinates) out of
    ``images`` ``[N, C, H, W]`` as ``[N, G, C, size, size]``, bilinear, zeros outside the
    image (a box near the border sees black, as the preprocessing's crops do).

    The sampling is ``grid_sample``'s (bilinear, ``align_corners=False``, zero padding) on an
    axis-aligned grid, which factors into one interpolation matrix per axis: the crop is
    ``Wy @ image @ Wx^T`` with ``W[i, p] = max(0, 1 - |s_i - p|)`` (``s_i`` the i-th sampling
    position in pixels; taps off the image have no column, hence the zeros). Two batched
    MatMuls: no copy of the image per region, and ops every runtime has (ONNX Runtime,
    TensorRT)."""
    h, w = images.shape[-2:]
    steps = (torch.arange(size, dtype=images.dtype, device=images.device) + 0.5) / size - 0.5

    def weights(centre: torch.Tensor, side: torch.Tensor, pixels: int) -> torch.Tensor:
        at = (centre[..., None] + side[..., None] * steps) * pixels - 0.5  # [N, G, size]
        grid = torch.arange(pixels, dtype=images.dtype, device=images.device)
        return torch.relu(1 - (at[..., None] - grid).abs())  # [N, G, size, pixels]

    n, g, c = boxes.shape[0], boxes.shape[1], images.shape[1]
    wy = weights(boxes[..., 1], boxes[..., 2], h).reshape(n, g * size, h)
    wx = weights(boxes[..., 0], boxes[..., 2], w)
    # every region's rows at once: [N, G*size, H] @ [N, H, C*W]
    rows = torch.bmm(wy, images.permute(0, 2, 1, 3).reshape(n, h, c * w))
    rows = rows.reshape(n, g, size, c, w).permute(0, 1, 3, 2, 4)  # [N, G, C, size, W]
    return torch.matmul(rows, wx[:, :, None].transpose(-1, -2))  # [N, G, C, size, size]
