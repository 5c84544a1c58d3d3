"""The cascade's models (cascade paper, "Parts and Whole"; our reconstruction,
``docs/cascade.md``).

* :class:`PartsNet` (``parts``): one SNet3-shaped subnet per face region, on the region the
  face-region localization (FRL) net finds - or, with ``fixed``, on the FRL's mean box per
  region, the same for every image (then no FRL is kept). It holds the box extractor of
  :mod:`facedistill.nn.regions` (the groups' prior boxes as buffers) and, for per-image boxes,
  the frozen :class:`~facedistill.nn.models.FRLNet`. Its forward is one graph - (FRL -> CAMs ->)
  boxes -> crops -> subnets -> the 40 logits in attribute order - so it trains through the one
  Trainer, checkpoints, exports and runs like any registered model.
* :class:`AttributeCascade` (``cascade``): part subnets and a whole-image subnet on the same
  face crop, the region switch and the attribute relation layer, as one model
  (``facedistill cascade`` builds it from two trained runs).
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
        # with fixed boxes the FRL only gave the priors (buffers of ``boxes``): not kept, so
        # that its weights are neither counted nor shipped; checkpoints written before this
        # hold them and load all the same (the hook drops them)
        self.frl = (None if self.fixed else
                    FRLNet(frl_width, num_attrs).requires_grad_(False).eval())
        if self.frl is None:
            self.register_load_state_dict_pre_hook(_drop_frl)
        self.boxes = RegionBoxes(GROUPS, ATTRIBUTES, BOX_SIDE, rule=rule)
        self.parts = nn.ModuleDict({g: build_model("snet3", width=width, num_attrs=len(m))
                                    for g, m in GROUPS.items()})
        order = [ATTRIBUTES.index(n) for m in GROUPS.values() for n in m]
        # position of each attribute in the concatenated group outputs
        self.register_buffer("order", torch.argsort(torch.tensor(order)), persistent=False)
        self.feature_dim = sum(p.feature_dim for p in self.parts.values())

    @property
    def min_input_size(self) -> int:
        return self.frl.min_input_size if self.frl is not None else 1

    def train(self, mode: bool = True) -> PartsNet:
        super().train(mode)
        if self.frl is not None:
            self.frl.eval()  # frozen: its BatchNorm statistics are the trained FRL's
        return self

    def load_frl(self, state: dict[str, torch.Tensor],
                 priors: dict[str, tuple[float, float]]) -> None:
        """The trained FRL's weights and the groups' prior box centres (a flat map's
        fallback, :func:`facedistill.pipeline.frl.cam_priors` on training images)."""
        if self.frl is not None:
            self.frl.load_state_dict(state)
        self.boxes.priors.copy_(torch.tensor([list(priors.get(g, (0.5, 0.5)))
                                              for g in self.boxes.groups]))

    def regions(self, x: torch.Tensor) -> torch.Tensor:
        """The boxes ``[N, G, 3]`` (cx, cy, side; unit coordinates) the parts see: the FRL's
        for each image, or with ``fixed`` its prior boxes for every image (the control that
        asks whether localizing per image matters)."""
        if self.frl is None:
            boxes = torch.cat([self.boxes.priors, self.boxes.sides[:, None]], dim=1)
            return boxes.to(x.dtype).expand(x.shape[0], *boxes.shape)
        with torch.no_grad():
            loc, _, cams = self.frl.branches(x)
            return self.boxes(cams, loc)[0]

    def fixed_regions(self) -> dict[str, list[float]] | None:
        """With fixed boxes, ``{group: [cx, cy, side]}`` (unit coordinates of the input): what
        an export records so that the runtime can show the regions; None when the boxes
        depend on the image."""
        if self.frl is not None:
            return None
        return {g: [float(self.boxes.priors[i, 0]), float(self.boxes.priors[i, 1]),
                    float(self.boxes.sides[i])] for i, g in enumerate(self.boxes.groups)}

    def crops(self, x: torch.Tensor) -> torch.Tensor:
        """The regions cut from ``x``: ``[N, G, 3, part_size, part_size]``."""
        return crop_regions(x, self.regions(x), self.part_size)

    def score_crops(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits [N, 40] in attribute order, features)`` of the subnets on ``crops``."""
        outs = [net.forward_with_features(crops[:, g].contiguous())
                for g, net in enumerate(self.parts.values())]
        logits = torch.cat([o[0] for o in outs], dim=1)[:, self.order]
        return logits, torch.cat([o[1] for o in outs], dim=1)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.score_crops(self.crops(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[0]

    def config(self) -> dict[str, Any]:
        return {"arch": self.arch, "width": self.width, "num_attrs": self.num_attrs,
                "frl_width": self.frl_width, "part_size": self.part_size, "rule": self.rule,
                **({"fixed": True} if self.fixed else {})}

    def extra_repr(self) -> str:
        return (f"width={self.width:g}, frl_width={self.frl_width:g}, "
                f"part_size={self.part_size}, rule={self.rule!r}, fixed={self.fixed}")


#: how the switch mixes the part and whole scores: ``hard`` (0 or 1 per attribute, chosen on
#: val) or ``soft`` (a learned weight in (0, 1) per attribute)
SWITCHES = ("hard", "soft")


class AttributeCascade(nn.Module):
    """The cascade as one model (cascade paper, "Parts and Whole" with the region switch and
    the attribute relation layer): ``forward(x)`` -> logits ``[N, 40]``.

    On the face crop ``x``, the part subnets (a :class:`PartsNet`, config ``parts``) and the
    whole-image subnet (any registered classifier, config ``whole``) both score the 40
    attributes; the switch mixes them per attribute, ``z = m * z_part + (1 - m) * z_whole``
    (``m`` is the buffer ``use_part``: 0/1 for the ``hard`` switch, in (0, 1) for the ``soft``
    one); the relation layer maps the 40 mixed scores through ``relation`` (a 40 x 40 linear
    layer, identity until fitted). The switch and relations are fitted on the frozen subnets'
    scores (:func:`facedistill.pipeline.cascade.assemble`); the class only runs them, in one
    graph that exports like any model.
    """

    arch = "cascade"

    def __init__(self, width: float = 1.0, num_attrs: int = DEFAULT_NUM_ATTRS, *,
                 whole: dict[str, Any] | None = None, parts: dict[str, Any] | None = None,
                 switch: str = "hard") -> None:
        super().__init__()
        # the defaults: SNet3 on the face crop and fixed-box part subnets, both at ``width``
        # (what ``facedistill models`` lists; a built cascade names its own subnets)
        whole = whole if whole is not None else {"arch": "snet3", "width": width}
        parts = parts if parts is not None else {"arch": "parts", "width": width,
                                                 "fixed": True}
        if not isinstance(parts, dict) or parts.get("arch") != "parts":
            raise UserError(f"the cascade's parts must be a parts model, not {parts!r}",
                            field="parts")
        if not isinstance(whole, dict) or whole.get("arch") in (None, "parts", "frl",
                                                                  "cascade"):
            raise UserError(f"the cascade's whole-image subnet must be a classifier (tnet, "
                            f"snet1-3), not {whole!r}", field="whole")
        if switch not in SWITCHES:
            raise UserError(f"switch must be one of {', '.join(SWITCHES)}, not {switch!r}",
                            field="switch")
        self.width, self.num_attrs, self.switch = float(width), int(num_attrs), switch
        self.whole = build_model(**whole)
        self.parts = build_model(**parts)
        for net in (self.whole, self.parts):
            if net.num_attrs != self.num_attrs:
                raise UserError(f"a subnet scores {net.num_attrs} attributes, the cascade "
                                f"{self.num_attrs}", field="num_attrs")
        self.register_buffer("use_part", torch.zeros(self.num_attrs))
        self.relation = nn.Linear(self.num_attrs, self.num_attrs)
        with torch.no_grad():
            self.relation.weight.copy_(torch.eye(self.num_attrs))
            self.relation.bias.zero_()
        self.feature_dim = self.whole.feature_dim + self.parts.feature_dim

    @property
    def min_input_size(self) -> int:
        return max(getattr(n, "min_input_size", 1) for n in (self.whole, self.parts))

    def set_head(self, use_part: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
                 ) -> None:
        """The fitted switch (per attribute, the part's share in [0, 1]) and relations."""
        with torch.no_grad():
            self.use_part.copy_(torch.as_tensor(use_part, dtype=torch.float32))
            self.relation.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
            self.relation.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))

    def regions(self, x: torch.Tensor) -> torch.Tensor:
        """The part subnets' boxes ``[N, G, 3]`` (:meth:`PartsNet.regions`)."""
        return self.parts.regions(x)

    def fixed_regions(self) -> dict[str, list[float]] | None:
        """The part subnets' fixed boxes (:meth:`PartsNet.fixed_regions`)."""
        return self.parts.fixed_regions()

    def scores(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(part logits, whole logits, features)``: the two subnets' raw scores, before the
        switch (what the switch and relations are fitted on)."""
        zp, fp = self.parts.forward_with_features(x)
        zw, fw = self.whole.forward_with_features(x)
        return zp, zw, torch.cat([fw, fp], dim=1)

    def combine(self, zp: torch.Tensor, zw: torch.Tensor) -> torch.Tensor:
        """The switch and the relation layer over part and whole logits."""
        m = self.use_part
        return self.relation(m * zp + (1 - m) * zw)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        zp, zw, features = self.scores(x)
        return self.combine(zp, zw), features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[0]

    def config(self) -> dict[str, Any]:
        return {"arch": self.arch, "width": self.width, "num_attrs": self.num_attrs,
                "whole": self.whole.config(), "parts": self.parts.config(),
                "switch": self.switch}

    def extra_repr(self) -> str:
        return f"switch={self.switch!r}, parts chosen={int((self.use_part > 0.5).sum())}"


def _drop_frl(module: nn.Module, state: dict[str, Any], prefix: str, *args: Any) -> None:
    for key in [k for k in state if k.startswith(prefix + "frl.")]:
        del state[key]


@register_model
def parts(width: float = 1.0, num_attrs: int = DEFAULT_NUM_ATTRS, **options: Any) -> PartsNet:
    """The cascade's part subnets: SNet3-shaped, one per face region, on a frozen FRL's
    boxes (``PartsNet``)."""
    return PartsNet(width, num_attrs, **options)


@register_model
def cascade(width: float = 1.0, num_attrs: int = DEFAULT_NUM_ATTRS, **options: Any
            ) -> AttributeCascade:
    """The whole cascade: part subnets and a whole-image subnet, the region switch and the
    attribute relation layer (``AttributeCascade``; built by ``facedistill cascade``)."""
    return AttributeCascade(width, num_attrs, **options)
