"""The cascade's part subnets (cascade paper, "Parts and Whole"): one small net per face region,
on the region the face-region localization (FRL) net finds.

:class:`PartsNet` holds a frozen :class:`~facedistill.nn.models.FRLNet`, the box extractor of
:mod:`facedistill.nn.regions` (with the groups' prior boxes as buffers) and one SNet3-shaped
subnet per attribute group. Its forward is one graph - FRL -> CAMs -> boxes -> crops -> subnets
-> the 40 logits in attribute order - so it trains through the one Trainer, checkpoints,
exports and runs like any registered model. Our reconstruction: ``docs/cascade.md``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from facedistill.attributes import ATTRIBUTES
from facedistill.errors import UserError
from facedistill.nn.models import DEFAULT_NUM_ATTRS, FRLNet, build_model, register_model
from facedistill.nn.regions import BOX_SIDE, GROUPS, RegionBoxes, crop_regions

#: side of the square crop each part subnet sees, pixels
PART_SIZE = 32


class PartsNet(nn.Module):
    """Part subnets on the FRL's regions: ``forward(x)`` -> logits ``[N, 40]``.

    ``width`` scales every part subnet (SNet3's blocks); ``frl_width`` is the width of the
    frozen FRL net (its weights come from a trained FRL run: :meth:`load_frl`); ``part_size``
    the crops' side; ``rule`` the heat-map rule of the boxes; ``fixed``: every image gets the
    groups' prior boxes instead of its own (the control). The FRL stays in eval mode and
    gets no gradient: the boxes are the trained localizer's, as the spec's cascade has it.
    """

    arch = "parts"

    def __init__(self, width: float = 1.0, num_attrs: int = DEFAULT_NUM_ATTRS, *,
                 frl_width: float = 0.25, part_size: int = PART_SIZE,
                 rule: str = "minmax", fixed: bool = False) -> None:
        super().__init__()
        if num_attrs != len(ATTRIBUTES):
            raise UserError(f"the part subnets cover CelebA's {len(ATTRIBUTES)} attributes, "
                            f"not {num_attrs}", field="num_attrs")
        if isinstance(part_size, bool) or not isinstance(part_size, int) or part_size < 8:
            raise UserError(f"part_size must be an integer >= 8, not {part_size!r}",
                            field="part_size")
        self.width, self.num_attrs = float(width), int(num_attrs)
        self.frl_width, self.part_size, self.rule = float(frl_width), int(part_size), rule
        self.fixed = bool(fixed)
        self.frl = FRLNet(frl_width, num_attrs).requires_grad_(False).eval()
        self.boxes = RegionBoxes(GROUPS, ATTRIBUTES, BOX_SIDE, rule=rule)
        self.parts = nn.ModuleDict({g: build_model("snet3", width=width, num_attrs=len(m))
                                    for g, m in GROUPS.items()})
        order = [ATTRIBUTES.index(n) for m in GROUPS.values() for n in m]
        # position of each attribute in the concatenated group outputs
        self.register_buffer("order", torch.argsort(torch.tensor(order)), persistent=False)
        self.feature_dim = sum(p.feature_dim for p in self.parts.values())

    @property
    def min_input_size(self) -> int:
        return self.frl.min_input_size

    def train(self, mode: bool = True) -> PartsNet:
        super().train(mode)
        self.frl.eval()  # frozen: its BatchNorm statistics are the trained FRL's
        return self

    def load_frl(self, state: dict[str, torch.Tensor],
                 priors: dict[str, tuple[float, float]]) -> None:
        """The trained FRL's weights and the groups' prior box centres (a flat map's
        fallback, :func:`facedistill.pipeline.frl.cam_priors` on training images)."""
        self.frl.load_state_dict(state)
        self.boxes.priors.copy_(torch.tensor([list(priors.get(g, (0.5, 0.5)))
                                              for g in self.boxes.groups]))

    def regions(self, x: torch.Tensor) -> torch.Tensor:
        """The boxes ``[N, G, 3]`` (cx, cy, side; unit coordinates) the parts see: the FRL's
        for each image, or with ``fixed`` its prior boxes for every image (the control that
        asks whether localizing per image matters)."""
        if self.fixed:
            boxes = torch.cat([self.boxes.priors, self.boxes.sides[:, None]], dim=1)
            return boxes.to(x.dtype).expand(x.shape[0], *boxes.shape)
        with torch.no_grad():
            loc, _, cams = self.frl.branches(x)
            return self.boxes(cams, loc)[0]

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        crops = crop_regions(x, self.regions(x), self.part_size)
        outs = [net.forward_with_features(crops[:, g].contiguous())
                for g, net in enumerate(self.parts.values())]
        logits = torch.cat([o[0] for o in outs], dim=1)[:, self.order]
        return logits, torch.cat([o[1] for o in outs], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[0]

    def config(self) -> dict[str, Any]:
        return {"arch": self.arch, "width": self.width, "num_attrs": self.num_attrs,
                "frl_width": self.frl_width, "part_size": self.part_size, "rule": self.rule,
                **({"fixed": True} if self.fixed else {})}

    def extra_repr(self) -> str:
        return (f"width={self.width:g}, frl_width={self.frl_width:g}, "
                f"part_size={self.part_size}, rule={self.rule!r}, fixed={self.fixed}")


@register_model
def parts(width: float = 1.0, num_attrs: int = DEFAULT_NUM_ATTRS, **options: Any) -> PartsNet:
    """The cascade's part subnets: SNet3-shaped, one per face region, on a frozen FRL's
    boxes (``PartsNet``)."""
    return PartsNet(width, num_attrs, **options)
