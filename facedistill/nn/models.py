"""The teacher (TNet) and the three students (SNet1/2/3) of the cascade paper, and a registry.

Architectures follow Table 3 of the cascade paper:

======  ===============  ==========  ==========  ===================
layer   TNet             SNet1       SNet2       SNet3
======  ===============  ==========  ==========  ===================
block1  3x3x32 (2)       3x3x32      3x3x32      3x3x16
block2  3x3x64 (2)       3x3x64      3x3x64      3x3x32
block3  3x3x128 (3)      3x3x128     3x3x128     3x3x64
block4  3x3x256 (3)      3x3x256     3x3x256     3x3x128
block5  3x3x512 (3)      3x3x512     3x3x512     1x1x1280 (no pool)
block6  3x3x1280         3x3x1280    1x1x1280    -
head    GAP, FC          GAP, FC     GAP, FC     GAP, FC
======  ===============  ==========  ==========  ===================

``3x3x32 (2)`` means two 3x3 convolutions with 32 output channels. Every convolution is
``Conv2d(k, padding=k // 2, bias=False) -> BatchNorm2d -> ReLU``; blocks 1-5 end in a 2x2 max-pool
(``ceil_mode=False``) except SNet3's block5; block6 (the paper's "conv6") has no pool. The head is
global average pooling (GAP) followed by ``Linear(1280, num_attrs)`` with a bias.

All four trunks end in 1280 channels, so the 1280-d GAP vector (:meth:`CascadeNet.features`, the
"top hidden layer") of a student lines up neuron-for-neuron with the teacher's: it is what hints
and neuron selection work on.

Parameter counts (width 1, 40 attributes; :data:`PAPER` keeps the published figures)::

    TNet  13,764,616   paper 19M
    SNet1  7,521,608   paper 6M
    SNet2  2,278,728   paper 2M
    SNet3    315,320   paper 0.27M (264,080 without the FC layer)

SNet2 and SNet3 (without its FC) match the paper; **SNet1 and TNet do not**, and no single
reading of the table reproduces the printed numbers (a 1024-wide conv6 would give SNet1 ~6.3M;
TNet reaches ~19.1M only with an extra 4096-wide hidden FC layer). The models are built exactly
as the table is written and are not padded to hit the printed figures; reports show our exact
counts beside the paper's.

Width multiplier: ``width`` scales every convolution's output channels except the final 1280
(the last convolution of the trunk, which the feature vector and the head depend on). A scaled
width is ``max(1, int(round(c * width)))`` (Python's ``round``, half to even) with no rounding to
a multiple of 8, so ``width=1`` reproduces the table exactly.

Input size is free (GAP makes the head size-independent) down to :attr:`CascadeNet.min_input_size`
(``2 ** number_of_pools``: 32 for TNet/SNet1/SNet2, 16 for SNet3).

Layers are addressable by path, e.g. ``trunk.block3.conv2.conv`` (the second conv of block 3),
``trunk.block6`` (conv6), ``head`` (the classifier); see :meth:`torch.nn.Module.get_submodule`.

Public API: :func:`register_model`, :func:`list_models`, :func:`build_model`, :func:`model_info`,
:func:`count_params`, :func:`count_macs`, :class:`CascadeNet`, :data:`PAPER`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Real
from typing import Any

import torch
from torch import nn

from facedistill.errors import UserError

__all__ = [
    "ARCHITECTURES",
    "FEATURE_DIM",
    "PAPER",
    "BlockSpec",
    "TapConv2d",
    "CascadeNet",
    "ConvBNReLU",
    "build_model",
    "count_live_params",
    "count_macs",
    "count_params",
    "list_models",
    "model_info",
    "register_model",
    "scale_width",
]

FEATURE_DIM = 1280
"""Channels of every trunk's last convolution = length of the GAP feature vector."""

DEFAULT_NUM_ATTRS = 40
DEFAULT_SIZE = 64


@dataclass(frozen=True)
class BlockSpec:
    """One row of Table 3 for one model: ``repeats`` convs of ``kernel`` x ``kernel`` x ``channels``,
    followed by a 2x2 max-pool when ``pool``."""

    kernel: int
    channels: int
    repeats: int = 1
    pool: bool = True


ARCHITECTURES: dict[str, tuple[BlockSpec, ...]] = {
    "tnet": (
        BlockSpec(3, 32, 2),
        BlockSpec(3, 64, 2),
        BlockSpec(3, 128, 3),
        BlockSpec(3, 256, 3),
        BlockSpec(3, 512, 3),
        BlockSpec(3, FEATURE_DIM, 1, pool=False),
    ),
    "snet1": (
        BlockSpec(3, 32),
        BlockSpec(3, 64),
        BlockSpec(3, 128),
        BlockSpec(3, 256),
        BlockSpec(3, 512),
        BlockSpec(3, FEATURE_DIM, pool=False),
    ),
    "snet2": (
        BlockSpec(3, 32),
        BlockSpec(3, 64),
        BlockSpec(3, 128),
        BlockSpec(3, 256),
        BlockSpec(3, 512),
        BlockSpec(1, FEATURE_DIM, pool=False),
    ),
    "snet3": (
        BlockSpec(3, 16),
        BlockSpec(3, 32),
        BlockSpec(3, 64),
        BlockSpec(3, 128),
        BlockSpec(1, FEATURE_DIM, pool=False),
    ),
    # the face-region localization (FRL) net of the cascade paper: TNet's blocks without their
    # last two pools, so that the class activation maps (CAM) of the GAP head are input / 8
    # wide (8x8 at 64 px, 12x12 at 96 px); see FRLNet
    "frl": (
        BlockSpec(3, 32, 2),
        BlockSpec(3, 64, 2),
        BlockSpec(3, 128, 3),
        BlockSpec(3, 256, 3, pool=False),
        BlockSpec(3, 512, 3, pool=False),
        BlockSpec(3, FEATURE_DIM, 1, pool=False),
    ),
}
"""Table 3 of the paper, block by block (``block1`` first), and the FRL net's trunk."""

PAPER: dict[str, dict[str, Any]] = {
    "tnet": {"params": 19_000_000, "params_text": "19M", "mean_acc": 91.07},
    "snet1": {"params": 6_000_000, "params_text": "6M", "mean_acc": 91.02},
    "snet2": {"params": 2_000_000, "params_text": "2M", "mean_acc": 90.89},
    "snet3": {"params": 270_000, "params_text": "0.27M", "mean_acc": 90.60},
}
"""The paper's published parameter counts and mean accuracy (%) on uCelebA, for reports."""


# --------------------------------------------------------------------------------------------
# building blocks


def scale_width(channels: int, width: float) -> int:
    """Channels of a conv scaled by the width multiplier: ``max(1, int(round(channels * width)))``."""
    return max(1, int(round(channels * width)))


class _SmallMapConv(torch.autograd.Function):
    """A stride-1, zero-padded ``k x k`` convolution (no bias) on a map of ``P = H * W`` pixels
    as one dense layer ``[B, P * C] -> [B, P * O]``.

    Output pixel ``p`` sees input pixel ``q`` through exactly one tap (the centre plus their
    offset, when that lies inside the kernel), so the layer's matrix is made of ``P x P`` blocks,
    each a tap's ``[O, C]`` slice of the weight or zero. That is ``P^2 C O`` multiply-adds per
    image where the unfolded convolution does ``k^2 P C O``: 2.25x fewer on a 2x2 map with a
    3x3 kernel, 9x fewer on a 1x1 map (where the matrix is the centre tap, a view). Channels-last
    inputs and weights (the Trainer's layout) are read without a copy; the weight's gradient is
    a fresh tensor in the weight's layout, exactly zero on the taps that meet only padding.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        o, k = weight.shape[0], weight.shape[-1]
        pad, pixels = k // 2, [(i, j) for i in range(h) for j in range(w)]
        blocks = [(p, q, pad + qi - pi, pad + qj - pj)
                  for p, (pi, pj) in enumerate(pixels) for q, (qi, qj) in enumerate(pixels)
                  if 0 <= pad + qi - pi < k and 0 <= pad + qj - pj < k]
        n = len(pixels)
        if n == 1:
            mat = weight[:, :, pad, pad]  # [O, C]
        else:
            mat = weight.new_zeros(n, o, n, c)
            for p, q, ty, tx in blocks:
                mat[p, :, q, :] = weight[:, :, ty, tx]
            mat = mat.view(n * o, n * c)
        xf = x.permute(0, 2, 3, 1).reshape(b, n * c)
        ctx.save_for_backward(xf, mat)
        channels_last = (weight.is_contiguous(memory_format=torch.channels_last)
                         and not weight.is_contiguous())
        ctx.layout = (x.shape, weight.shape, channels_last, blocks)
        return (xf @ mat.t()).view(b, h, w, o).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        xf, mat = ctx.saved_tensors
        (b, c, h, w), wshape, channels_last, blocks = ctx.layout
        n, o = h * w, wshape[0]
        # under autocast the forward multiplied in the lower precision (grad's dtype) while
        # the weight stayed float32; backward runs outside autocast, so cast here: products in
        # grad's dtype, each gradient in its input's dtype
        gf = grad.permute(0, 2, 3, 1).reshape(b, n * o)
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = (gf @ mat.to(gf.dtype)).to(xf.dtype).view(b, h, w, c).permute(0, 3, 1, 2)
        if ctx.needs_input_grad[1]:
            gmat = (gf.t() @ xf.to(gf.dtype)).to(mat.dtype).view(n, o, n, c)  # [P, O, P, C]
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            gw = torch.empty(wshape, dtype=mat.dtype, device=xf.device,
                             memory_format=fmt).zero_()
            for p, q, ty, tx in blocks:
                gw[:, :, ty, tx] += gmat[p, :, q, :]
        return gx, gw


class TapConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters, state dict and results) that trains faster where the
    feature map is tiny, as block5 and conv6 of TNet and SNet1 are at the demo's 32 px (2x2 and
    1x1) and conv6 at 64 px (2x2). oneDNN's backward for a 3x3 kernel on such maps runs at 4-17
    GFLOP/s on a 2-core AVX2 CPU against ~50 elsewhere (``benchmarks/small_map_conv.py``).

    In a training step, on a map of at most ``dense_max_pixels`` pixels, the layer runs as the
    dense layer it is (:class:`_SmallMapConv`): every output pixel meets every input pixel
    through one tap, so there is one matrix product with none of the multiplications by zero
    padding that an unfolded convolution does. A 1x1 map (its centre tap only) takes this path
    on any device when ``centre`` is set; larger maps on a CPU with at least
    ``dense_min_channels`` input channels. Inference (eval mode or no grad) and tracing for
    export always take the plain kernel, so an exported graph holds the ordinary ``k x k`` Conv.
    Set ``centre = False`` or ``dense_min_channels = None`` on an instance (or the class) to
    switch a path off.
    """

    centre: bool = True
    dense_min_channels: int | None = 64
    dense_max_pixels: int = 4

    def path(self, input: torch.Tensor) -> str:
        """Which kernel a forward on ``input`` takes: ``"centre"``, ``"dense"`` or ``"plain"``."""
        if not (self.training and torch.is_grad_enabled() and not torch.jit.is_tracing()
                and self._same_padded() and input.dim() == 4):
            return "plain"
        h, w = input.shape[-2:]
        if self.centre and h == w == 1:
            return "centre"
        if (self.dense_min_channels is not None and input.device.type == "cpu"
                and h * w <= self.dense_max_pixels
                and self.in_channels >= self.dense_min_channels):
            return "dense"
        return "plain"

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor,
                      bias: torch.Tensor | None) -> torch.Tensor:
        if self.path(input) == "plain":
            return super()._conv_forward(input, weight, bias)
        out = _SmallMapConv.apply(input, weight)
        return out if bias is None else out + bias.to(out.dtype).view(1, -1, 1, 1)

    def _same_padded(self) -> bool:
        """Stride 1, no dilation or groups, an odd square kernel with zero padding ``k // 2``."""
        k = self.kernel_size[0]
        return (self.kernel_size == (k, k) and k % 2 == 1 and self.padding == (k // 2, k // 2)
                and self.stride == (1, 1) and self.dilation == (1, 1) and self.groups == 1
                and self.padding_mode == "zeros")


class ConvBNReLU(nn.Sequential):
    """``Conv2d(k, padding=k // 2, bias=False) -> BatchNorm2d -> ReLU``; children ``conv``,
    ``bn``, ``relu``."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int) -> None:
        super().__init__(
            OrderedDict(
                conv=TapConv2d(in_channels, out_channels, kernel, padding=kernel // 2,
                               bias=False),
                bn=nn.BatchNorm2d(out_channels),
                relu=nn.ReLU(),  # not in place: hooks on `bn` see pre-ReLU values
            )
        )


def _make_block(in_channels: int, out_channels: int, spec: BlockSpec) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i in range(spec.repeats):
        layers[f"conv{i + 1}"] = ConvBNReLU(
            in_channels if i == 0 else out_channels, out_channels, spec.kernel
        )
    if spec.pool:
        layers["pool"] = nn.MaxPool2d(2, 2)
    return nn.Sequential(layers)


class CascadeNet(nn.Module):
    """A plain VGG-style CNN of the cascade paper: ``trunk`` (named blocks) -> GAP -> ``head``.

    Attributes: ``arch`` (registry name), ``width``, ``num_attrs``, ``feature_dim`` (1280),
    ``min_input_size`` (smallest square input the pools accept).
    """

    def __init__(
        self,
        arch: str,
        blocks: tuple[BlockSpec, ...],
        width: float = 1.0,
        num_attrs: int = DEFAULT_NUM_ATTRS,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.arch = arch
        self.width = float(width)
        self.num_attrs = int(num_attrs)
        self.feature_dim = blocks[-1].channels
        self.min_input_size = 2 ** sum(b.pool for b in blocks)

        trunk: OrderedDict[str, nn.Module] = OrderedDict()
        c_in = in_channels
        for i, spec in enumerate(blocks):
            last = i == len(blocks) - 1
            c_out = spec.channels if last else scale_width(spec.channels, width)
            trunk[f"block{i + 1}"] = _make_block(c_in, c_out, spec)
            c_in = c_out
        self.trunk = nn.Sequential(trunk)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(self.feature_dim, self.num_attrs)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal convs (fan_out, relu), BN weight 1 / bias 0, FC normal(0, 0.01) / 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The GAP vector of the last feature map: ``[B, 3, H, W] -> [B, 1280]``."""
        return torch.flatten(self.gap(self.trunk(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attribute logits: ``[B, 3, H, W] -> [B, num_attrs]``."""
        return self.head(self.features(x))

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, features)`` with the trunk run once."""
        f = self.features(x)
        return self.head(f), f

    def config(self) -> dict[str, Any]:
        """What :func:`build_model` needs to rebuild this model: ``build_model(**config)``."""
        return {"arch": self.arch, "width": self.width, "num_attrs": self.num_attrs}

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, width={self.width:g}, num_attrs={self.num_attrs}"


# --------------------------------------------------------------------------------------------
# registry

ModelFactory = Callable[..., nn.Module]
_REGISTRY: dict[str, ModelFactory] = {}


def register_model(fn: ModelFactory) -> ModelFactory:
    """Decorator: register ``fn(width=1.0, num_attrs=40) -> nn.Module`` under ``fn.__name__``.

    Registering a name twice is a programming error (``ValueError``).
    """
    name = fn.__name__
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = fn
    return fn


def list_models() -> list[str]:
    """Names of the registered models, sorted."""
    return sorted(_REGISTRY)


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise UserError(
            f"unknown model {name!r}; known models: {', '.join(list_models())}", field="arch"
        )
    return name


def _check_width(width: Any) -> float:
    if (
        isinstance(width, bool)
        or not isinstance(width, Real)
        or not math.isfinite(width)
        or width <= 0
    ):
        raise UserError(f"width must be a positive number, got {width!r}", field="width")
    return float(width)


def _check_num_attrs(num_attrs: Any) -> int:
    if isinstance(num_attrs, bool) or not isinstance(num_attrs, int) or num_attrs < 1:
        raise UserError(
            f"num_attrs must be a positive integer, got {num_attrs!r}", field="num_attrs"
        )
    return num_attrs


def build_model(
    name: str | None = None,
    width: float = 1.0,
    num_attrs: int = DEFAULT_NUM_ATTRS,
    *,
    arch: str | None = None,
    **options: Any,
) -> nn.Module:
    """Build a registered model.

    The model may be named positionally / as ``name`` or as ``arch`` (the key that
    :meth:`CascadeNet.config` writes), so ``build_model(**model.config())`` rebuilds a model;
    ``options`` go to models that have more settings (``parts``: ``frl_width``, ...).
    An unknown name, ``width <= 0`` or ``num_attrs < 1`` raises :class:`UserError`.
    """
    if name is not None and arch is not None and name != arch:
        raise UserError(f"conflicting model names {name!r} and {arch!r}", field="arch")
    chosen = _check_name(name if name is not None else arch)
    try:
        return _REGISTRY[chosen](width=_check_width(width), num_attrs=_check_num_attrs(num_attrs),
                                 **options)
    except TypeError as exc:
        if not options:
            raise
        raise UserError(f"{chosen} does not take {', '.join(sorted(options))} ({exc})",
                        field="arch") from None


@register_model
def tnet(width: float = 1.0, num_attrs: int = DEFAULT_NUM_ATTRS) -> CascadeNet:
    """The teacher: 13 3x3 convs in 5 pooled blocks, 3x3x1280 conv6 (13.76M params)."""
    return CascadeNet("tnet", ARCHITECTURES["tnet"], width, num_attrs)


@register_model
def snet1(width: float = 1.0, num_attrs: int = DEFAULT_NUM_ATTRS) -> CascadeNet:
    """Student 1: one 3x3 conv per block, 3x3x1280 conv6 (7.52M params)."""
    return CascadeNet("snet1", ARCHITECTURES["snet1"], width, num_attrs)


@register_model
def snet2(width: float = 1.0, num_attrs: int = DEFAULT_NUM_ATTRS) -> CascadeNet:
    """Student 2: one 3x3 conv per block, 1x1x1280 conv6 (2.28M params)."""
    return CascadeNet("snet2", ARCHITECTURES["snet2"], width, num_attrs)


@register_model
def snet3(width: float = 1.0, num_attrs: int = DEFAULT_NUM_ATTRS) -> CascadeNet:
    """Student 3: four narrow pooled 3x3 blocks, then a 1x1x1280 conv (0.32M params)."""
    return CascadeNet("snet3", ARCHITECTURES["snet3"], width, num_attrs)


@register_model
def frl(width: float = 1.0, num_attrs: int = DEFAULT_NUM_ATTRS) -> FRLNet:
    """The face-region localization net (cascade paper): TNet's trunk with CAM-sized maps, a
    localization (GAP -> FC) and a classification branch (``FRLNet``)."""
    return FRLNet(width, num_attrs)


class FRLNet(CascadeNet):
    """Face-region localization by class activation maps, with multi-net learning (MNL).

    The trunk is TNet's without its last two pools (:data:`ARCHITECTURES` ``frl``; every
    block, the last too, scaled by ``width``: the maps need not be 1280 deep to localize).
    Two branches share it:

    * localization (``head``): GAP -> FC, so ``CAM_k(x, y) = sum_c W[k, c] F_c(x, y) + b_k``
      is attribute k's evidence at each place of the last map F (:meth:`cam`); what
      :meth:`forward` returns and the export ships;
    * classification (``cls_head``): GAP -> FC -> ReLU -> FC, trained jointly (MNL) and read
      with :meth:`classify`.

    While training, :meth:`forward_with_features` also returns the classification logits, so
    that the MNL objective (:class:`facedistill.pipeline.frl.MNLObjective`) sees both branches
    from one pass through the trunk.
    """

    def __init__(self, width: float = 1.0, num_attrs: int = DEFAULT_NUM_ATTRS) -> None:
        blocks = tuple(BlockSpec(b.kernel, scale_width(b.channels, width), b.repeats, b.pool)
                       for b in ARCHITECTURES["frl"])
        super().__init__("frl", blocks, 1.0, num_attrs)
        self.width = float(width)
        hidden = scale_width(512, width)
        self.cls_head = nn.Sequential(OrderedDict(
            fc1=nn.Linear(self.feature_dim, hidden), relu=nn.ReLU(),
            fc2=nn.Linear(hidden, self.num_attrs)))
        self.reset_parameters()

    @property
    def stride(self) -> int:
        """Input pixels per CAM cell."""
        return self.min_input_size

    def forward_with_features(self, x: torch.Tensor) -> Any:
        """``(localization logits, features)``; in training also the classification logits."""
        f = self.features(x)
        if self.training:
            return self.head(f), f, self.cls_head(f)
        return self.head(f), f

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The classification branch's logits."""
        return self.cls_head(self.features(x))

    def cam(self, x: torch.Tensor) -> torch.Tensor:
        """Class activation maps ``[B, num_attrs, H / 8, W / 8]`` of the localization branch
        (their spatial mean is :meth:`forward`)."""
        return self.branches(x)[2]

    def branches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(localization logits, classification logits, CAMs)`` from one trunk pass."""
        maps = self.trunk(x)
        f = torch.flatten(self.gap(maps), 1)
        cams = torch.einsum("kc,bchw->bkhw", self.head.weight, maps) \
            + self.head.bias[None, :, None, None]
        return self.head(f), self.cls_head(f), cams


# --------------------------------------------------------------------------------------------
# counting


def count_params(model: nn.Module, include_head: bool = True) -> int:
    """Number of parameters; ``include_head=False`` leaves out the FC layers that score the
    attributes: every submodule named ``head`` or ``cls_head`` (a composite model's subnets'
    heads too, and FRL's classification branch head)."""
    skip: set[int] = set()
    if not include_head:
        skip = {id(p) for name, m in model.named_modules()
                if name.rsplit(".", 1)[-1] in ("head", "cls_head") for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def _live_taps(kernel: int, stride: int, pad: int, dilation: int, n_in: int, n_out: int
               ) -> int:
    """How many of a kernel's taps along one axis ever read a real (not padding) input."""
    return sum(any(0 <= o * stride - pad + t * dilation < n_in for o in range(n_out))
               for t in range(kernel))


def count_live_params(model: nn.Module, size: int = DEFAULT_SIZE) -> int:
    """Parameters that can receive a gradient at ``size x size`` inputs: a convolution tap that
    only ever meets zero padding (a 3x3 kernel on a 1x1 map keeps its centre tap alone) is left
    out, everything else counts as in :func:`count_params`. The honest size of a network
    trained at a small input size: e.g. TNet's and SNet1's 3x3 conv6 at 32x32 inputs."""
    _check_size(model, size)
    dead = 0

    def conv_hook(m: nn.Module, inp: Any, out: torch.Tensor) -> None:
        nonlocal dead
        assert isinstance(m, nn.Conv2d)
        if isinstance(m.padding, str):  # "same"/"valid": count the whole kernel
            return
        live = 1
        for axis in (0, 1):
            live *= _live_taps(m.kernel_size[axis], m.stride[axis], m.padding[axis],
                               m.dilation[axis], inp[0].shape[2 + axis], out.shape[2 + axis])
        per_tap = m.out_channels * (m.in_channels // m.groups)
        dead += per_tap * (math.prod(m.kernel_size) - live)

    _run_hooked(model, size, {nn.Conv2d: conv_hook})
    return count_params(model) - dead


def _check_size(model: nn.Module, size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise UserError(f"size must be a positive integer, got {size!r}", field="size")
    min_size = getattr(model, "min_input_size", 1)
    if size < min_size:
        raise UserError(
            f"input size {size} is too small for this model (minimum {min_size})", field="size"
        )


def _run_hooked(model: nn.Module, size: int, hooks: dict[type, Callable[..., None]]) -> None:
    """One eval-mode, no-grad forward pass of a zeros image with forward ``hooks`` per
    module type; the hooks are removed and the training mode restored afterwards."""
    handles = []
    for m in model.modules():
        for kind, hook in hooks.items():
            if isinstance(m, kind):
                handles.append(m.register_forward_hook(hook))
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size, device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


def count_macs(model: nn.Module, size: int = DEFAULT_SIZE) -> int:
    """Multiply-accumulates of one ``3 x size x size`` image.

    Counted on a real forward pass of a zeros tensor (eval mode, no grad) with forward hooks:
    a convolution costs ``Cout * Cin / groups * prod(kernel) * Hout * Wout``, a linear layer
    ``in * out``; BatchNorm, ReLU, pooling and the bias adds are not counted.
    """
    _check_size(model, size)
    total = 0

    def conv_hook(m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d)
        per_output = (m.in_channels // m.groups) * math.prod(m.kernel_size)
        total += (out.numel() // out.shape[0]) * per_output

    def linear_hook(m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(m, nn.Linear)
        total += (out.numel() // out.shape[0]) * m.in_features

    _run_hooked(model, size, {nn.Conv1d | nn.Conv2d | nn.Conv3d: conv_hook,
                              nn.Linear: linear_hook})
    return total


def model_info(name: str, width: float = 1.0, size: int = DEFAULT_SIZE) -> dict[str, Any]:
    """Size and cost of a registered model (40 attributes) beside the paper's figures.

    Keys: ``arch``, ``width``, ``params``, ``params_no_head``, ``live_params``
    (:func:`count_live_params` at ``size``), ``macs`` (one image at ``size x size``), ``input_size``, ``paper_params``, ``paper_acc`` (``None`` for a model the
    paper does not have), ``feature_dim``.
    """
    model = build_model(name, width=width)
    paper = PAPER.get(name, {})
    return {
        "arch": name,
        "width": float(width),
        "params": count_params(model),
        "params_no_head": count_params(model, include_head=False),
        "live_params": count_live_params(model, size),
        "macs": count_macs(model, size),
        "input_size": size,
        "paper_params": paper.get("params"),
        "paper_acc": paper.get("mean_acc"),
        "feature_dim": getattr(model, "feature_dim", None),
    }


# the models defined beside this module register themselves on import
from facedistill.nn import parts as _parts  # noqa: E402, F401
