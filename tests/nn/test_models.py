"""The model registry and the four architectures of Table 3 (timm-style: every test that can
loops over every registered model)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from facedistill.config import ARCHS
from facedistill.errors import UserError
from facedistill.nn.models import (
    PAPER,
    build_model,
    count_macs,
    count_params,
    list_models,
    model_info,
    register_model,
)

ALL = sorted(ARCHS)  # the paper's four; the FRL net has tests of its own (test_frl.py)
SMALL = ["snet2", "snet3"]

# Table 3 written out independently of the module: (kernel, out_channels) per conv,
# in forward order, grouped by block.
TABLE3: dict[str, list[list[tuple[int, int]]]] = {
    "tnet": [
        [(3, 32)] * 2,
        [(3, 64)] * 2,
        [(3, 128)] * 3,
        [(3, 256)] * 3,
        [(3, 512)] * 3,
        [(3, 1280)],
    ],
    "snet1": [[(3, 32)], [(3, 64)], [(3, 128)], [(3, 256)], [(3, 512)], [(3, 1280)]],
    "snet2": [[(3, 32)], [(3, 64)], [(3, 128)], [(3, 256)], [(3, 512)], [(1, 1280)]],
    "snet3": [[(3, 16)], [(3, 32)], [(3, 64)], [(3, 128)], [(1, 1280)]],
}
POOLED_BLOCKS = {"tnet": 5, "snet1": 5, "snet2": 5, "snet3": 4}

EXACT_PARAMS = {"tnet": 13_764_616, "snet1": 7_521_608, "snet2": 2_278_728, "snet3": 315_320}


def test_registry_lists_the_four_models_frl_parts_and_the_cascade() -> None:
    assert ALL == ["snet1", "snet2", "snet3", "tnet"]
    assert list_models() == sorted([*ALL, "frl", "parts", "cascade"])
    assert set(PAPER) == set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_exact_param_counts(name: str) -> None:
    model = build_model(name)
    assert count_params(model) == EXACT_PARAMS[name]
    # the head is Linear(1280, 40) with a bias
    assert count_params(model, include_head=False) == EXACT_PARAMS[name] - (1280 * 40 + 40)


def test_snet3_without_head_matches_the_paper() -> None:
    assert count_params(build_model("snet3"), include_head=False) == 264_080


@pytest.mark.parametrize("name", ALL)
def test_layers_follow_table3(name: str) -> None:
    model = build_model(name)
    blocks = list(model.trunk.named_children())
    assert [b for b, _ in blocks] == [f"block{i + 1}" for i in range(len(TABLE3[name]))]
    c_in = 3
    for (_, block), expected in zip(blocks, TABLE3[name], strict=True):
        convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
        assert [(c.kernel_size[0], c.out_channels) for c in convs] == expected
        for conv in convs:
            assert conv.in_channels == c_in and conv.bias is None
            assert conv.padding == (conv.kernel_size[0] // 2,) * 2
            c_in = conv.out_channels
        assert sum(isinstance(m, nn.BatchNorm2d) for m in block.modules()) == len(expected)
        assert sum(isinstance(m, nn.ReLU) for m in block.modules()) == len(expected)
    pools = [m for m in model.trunk.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == POOLED_BLOCKS[name]
    assert isinstance(model.head, nn.Linear) and model.head.bias is not None
    assert (model.head.in_features, model.head.out_features) == (1280, 40)
    assert model.feature_dim == 1280 and model.arch == name and model.width == 1.0
    # layers are addressable by path
    assert isinstance(model.get_submodule("trunk.block1.conv1.conv"), nn.Conv2d)


def _forward_backward(name: str, size: int) -> None:
    torch.manual_seed(0)
    model = build_model(name)
    model.train()
    x = torch.randn(2, 3, size, size)
    logits = model(x)
    assert logits.shape == (2, 40)
    assert torch.isfinite(logits).all()
    nn.functional.binary_cross_entropy_with_logits(logits, torch.rand(2, 40)).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", ALL)
def test_forward_backward_32(name: str) -> None:
    _forward_backward(name, 32)


@pytest.mark.parametrize("name", SMALL)
def test_forward_backward_64(name: str) -> None:
    _forward_backward(name, 64)


def test_non_square_input() -> None:
    model = build_model("snet3", num_attrs=7).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 48, 40)).shape == (1, 7)


@pytest.mark.parametrize("name", ALL)
def test_features_and_forward_with_features(name: str) -> None:
    torch.manual_seed(1)
    model = build_model(name).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, feats = model.forward_with_features(x)
        assert feats.shape == (2, 1280)
        assert torch.equal(feats, model.features(x))
        assert torch.equal(logits, model(x))
        assert torch.allclose(logits, model.head(feats))
    assert (feats >= 0).all()  # GAP of ReLU outputs


@pytest.mark.parametrize("name", ALL)
def test_width_half(name: str) -> None:
    full = build_model(name)
    half = build_model(name, width=0.5)
    assert count_params(half) < count_params(full)
    assert half.width == 0.5 and half.feature_dim == 1280
    convs = [m for m in half.trunk.modules() if isinstance(m, nn.Conv2d)]
    expected = [c for block in TABLE3[name] for _, c in block]
    assert [c.out_channels for c in convs] == [c // 2 for c in expected[:-1]] + [1280]
    with torch.no_grad():
        assert half.eval().features(torch.randn(1, 3, 32, 32)).shape == (1, 1280)


def test_width_rounding_rule() -> None:
    # max(1, int(round(c * width))): 16 * 0.3 = 4.8 -> 5; tiny widths keep at least 1 channel
    convs = [m for m in build_model("snet3", width=0.3).modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [5, 10, 19, 38, 1280]
    convs = [m for m in build_model("snet3", width=0.001).modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [1, 1, 1, 1, 1280]


def _snet3_macs_by_hand(size: int, num_attrs: int = 40) -> int:
    """SNet3 from its layer list: (k, cin, cout) at the resolution it runs at."""
    layers = [(3, 3, 16), (3, 16, 32), (3, 32, 64), (3, 64, 128)]
    total, hw = 0, size
    for k, cin, cout in layers:
        total += cout * cin * k * k * hw * hw
        hw //= 2  # 2x2 max-pool after each of blocks 1-4
    total += 1280 * 128 * 1 * 1 * hw * hw  # block5: 1x1 conv, no pool
    return total + 1280 * num_attrs


def test_macs_by_hand_snet3() -> None:
    model = build_model("snet3")
    assert _snet3_macs_by_hand(32) == 4_687_872  # written out once
    assert count_macs(model, 32) == _snet3_macs_by_hand(32)
    assert count_macs(model, 64) == _snet3_macs_by_hand(64)
    assert count_macs(build_model("snet3", num_attrs=3), 32) == _snet3_macs_by_hand(32, 3)


@pytest.mark.parametrize("name", ALL)
def test_macs_scale_with_input_area(name: str) -> None:
    model = build_model(name)
    model.train()
    m32, m64 = count_macs(model, 32), count_macs(model, 64)
    assert 3.8 < m64 / m32 <= 4.0
    assert model.training  # mode restored
    # the hook pass must not touch BatchNorm statistics
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert int(bn.num_batches_tracked) == 0


def test_model_info() -> None:
    info = model_info("snet3", size=32)
    assert info == {
        "arch": "snet3",
        "width": 1.0,
        "params": 315_320,
        "params_no_head": 264_080,
        "live_params": 315_320,
        "macs": 4_687_872,
        "input_size": 32,
        "paper_params": 270_000,
        "paper_acc": 90.60,
        "feature_dim": 1280,
    }
    assert model_info("snet2", width=0.5)["params"] < EXACT_PARAMS["snet2"]


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(UserError) as exc:
        build_model("resnet50")
    for name in ALL:
        assert name in str(exc.value)
    with pytest.raises(UserError):
        model_info("nope")


@pytest.mark.parametrize("width", [0, -1.0, float("nan"), float("inf"), "0.5", True])
def test_bad_width(width: object) -> None:
    with pytest.raises(UserError) as exc:
        build_model("snet3", width=width)  # type: ignore[arg-type]
    assert exc.value.field == "width"


def test_bad_num_attrs_and_size() -> None:
    with pytest.raises(UserError) as exc:
        build_model("snet3", num_attrs=0)
    assert exc.value.field == "num_attrs"
    with pytest.raises(UserError) as exc:
        count_macs(build_model("snet2"), 16)  # five pools need at least 32
    assert exc.value.field == "size"


def test_register_twice_is_an_error() -> None:
    def snet3() -> nn.Module:  # same name as a registered model
        return nn.Identity()

    before = list_models()
    with pytest.raises(ValueError):
        register_model(snet3)
    assert list_models() == before


@pytest.mark.parametrize("name", ALL)
def test_config_round_trip(name: str) -> None:
    model = build_model(name, width=0.5, num_attrs=5)
    config = model.config()
    assert config == {"arch": name, "width": 0.5, "num_attrs": 5}
    rebuilt = build_model(**config)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), rebuilt.eval()(x))
    # the positional / name= spellings build the same thing
    assert build_model(name, 0.5, 5).config() == config
    with pytest.raises(UserError):
        build_model(name, arch="snet1" if name != "snet1" else "snet2")


def test_init() -> None:
    model = build_model("snet3")
    bn = model.get_submodule("trunk.block1.conv1.bn")
    assert torch.equal(bn.weight, torch.ones_like(bn.weight))
    assert torch.equal(bn.bias, torch.zeros_like(bn.bias))
    assert torch.equal(model.head.bias, torch.zeros(40))
    assert model.head.weight.std().item() == pytest.approx(0.01, rel=0.1)
    conv = model.get_submodule("trunk.block5.conv1.conv")  # fan_out = 1280
    assert conv.weight.std().item() == pytest.approx((2 / 1280) ** 0.5, rel=0.1)


def test_live_params_drop_kernel_taps_that_only_meet_padding() -> None:
    from facedistill.nn.models import count_live_params

    tnet, snet1, snet2, snet3 = (build_model(n) for n in ("tnet", "snet1", "snet2", "snet3"))
    # at 64 px every tap of every kernel sees real pixels
    for m in (tnet, snet1, snet2, snet3):
        assert count_live_params(m, 64) == count_params(m)
    # at 32 px conv6 (3x3) sees a 1x1 map: only its centre tap is live
    conv6 = [c for c in tnet.modules() if isinstance(c, torch.nn.Conv2d)][-1]
    assert conv6.kernel_size == (3, 3)
    assert count_params(tnet) - count_live_params(tnet, 32) == \
        8 * conv6.out_channels * conv6.in_channels
    # SNet1 is then no bigger than SNet2 (which has a 1x1 conv6), as the review measured
    assert count_live_params(snet1, 32) == count_live_params(snet2, 32) == count_params(snet2)
    assert 26 < count_live_params(tnet, 32) / count_params(snet3) < 28
    # by hand, per axis: 3 taps, pad 1 on a 2-pixel row keeps all 3; on 1 pixel, the centre
    from facedistill.nn.models import _live_taps

    assert _live_taps(3, 1, 1, 1, 2, 2) == 3 and _live_taps(3, 1, 1, 1, 1, 1) == 1
    assert _live_taps(3, 2, 1, 1, 2, 1) == 2  # stride 2, one output on 2 pixels: taps 1 and 2


# -- TapConv2d: the fast training paths on tiny maps are the same convolution -------------------

def _conv_pair(cin: int, cout: int, k: int) -> tuple[nn.Module, nn.Conv2d]:
    from facedistill.nn.models import TapConv2d

    torch.manual_seed(0)
    fast = TapConv2d(cin, cout, k, padding=k // 2, bias=True)
    plain = nn.Conv2d(cin, cout, k, padding=k // 2, bias=True)
    plain.load_state_dict(fast.state_dict())  # same keys, same parameters
    return fast, plain


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("cin", "hw", "path"), [(8, (1, 1), "centre"), (256, (2, 2), "dense"),
                                                 (64, (1, 2), "dense"), (64, (1, 4), "dense"),
                                                 (8, (2, 2), "plain"), (256, (3, 3), "plain")])
def test_tap_conv_matches_conv2d_in_value_and_gradient(cin: int, hw: tuple[int, int],
                                                       path: str, channels_last: bool) -> None:
    fast, plain = _conv_pair(cin, 12, 3)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    fast = fast.to(memory_format=fmt)
    x = torch.randn(4, cin, *hw).contiguous(memory_format=fmt).requires_grad_()
    assert fast.path(x) == path
    y_fast = fast(x)
    x2 = x.detach().clone().requires_grad_()
    y_plain = plain(x2)
    torch.testing.assert_close(y_fast, y_plain, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(y_plain)
    y_fast.backward(g)
    y_plain.backward(g)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.weight.grad, plain.weight.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast.bias.grad, plain.bias.grad, rtol=1e-5, atol=1e-5)
    # the gradient lies in the weight's layout (no copy for the optimizer's AccumulateGrad)
    assert fast.weight.grad.stride() == fast.weight.stride()
    if hw[0] == 1:  # taps that only meet padding (rows above and below) get exactly zero
        off = fast.weight.grad.clone()
        off[:, :, 1, :] = 0
        assert off.abs().max().item() == 0.0
    if hw == (1, 1):
        assert fast.weight.grad[:, :, 1, [0, 2]].abs().max().item() == 0.0


@pytest.mark.parametrize(("cin", "hw"), [(8, (1, 1)), (256, (2, 2))])
def test_tap_conv_trains_under_bf16_autocast(cin: int, hw: tuple[int, int]) -> None:
    """What `precision = auto` does on an AMX CPU: the input arrives in bf16 from the layer
    before, the weight stays float32; the gradients come back in their tensors' dtypes and
    agree with nn.Conv2d's under the same autocast (bf16 rounding)."""
    fast, plain = _conv_pair(cin, 12, 3)
    x = torch.randn(4, cin, *hw).to(torch.bfloat16).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fast.path(x) != "plain"
        y_fast, y_plain = fast(x), plain(x2)
    assert y_fast.dtype == y_plain.dtype == torch.bfloat16
    g = torch.randn_like(y_plain)
    y_fast.backward(g)
    y_plain.backward(g)
    assert x.grad.dtype == torch.bfloat16 and fast.weight.grad.dtype == torch.float32
    torch.testing.assert_close(y_fast.float(), y_plain.float(), rtol=0.05, atol=0.05)
    torch.testing.assert_close(x.grad.float(), x2.grad.float(), rtol=0.05, atol=0.05)
    torch.testing.assert_close(fast.weight.grad, plain.weight.grad, rtol=0.05, atol=0.1)


def test_tap_conv_takes_the_plain_kernel_outside_training() -> None:
    fast, _ = _conv_pair(256, 12, 3)
    x = torch.randn(2, 256, 2, 2)
    assert fast.path(x) == "dense"
    with torch.no_grad():
        assert fast.path(x) == "plain"
    assert fast.eval().path(x) == "plain"
    strided = type(fast)(256, 12, 3, padding=1, stride=2)  # not a "same" conv: plain
    assert strided.train().path(x) == "plain"


def test_tap_conv_exports_the_full_kernel(tmp_path: Path) -> None:
    """Export traces eval mode: the ONNX graph holds conv6 as the ordinary 3x3 Conv."""
    import onnx

    from facedistill.export.onnx import _torch_export

    model = build_model("snet1", width=0.25).eval()  # conv6 (3x3) sees a 1x1 map at 32 px
    proto = _torch_export(model, torch.randn(2, 3, 32, 32), 18, tmp_path / "m.onnx")
    shapes = {i.name: tuple(i.dims) for i in proto.graph.initializer}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert len(convs) == 6
    assert shapes[convs[-1].input[1]] == (1280, 128, 3, 3)
    assert all(len(shapes[c.input[1]]) == 4 and shapes[c.input[1]][2:] == (3, 3) for c in convs)
    assert not any(n.op_type in ("Slice", "MatMul") for n in proto.graph.node)
    onnx.checker.check_model(proto)
    x = torch.randn(2, 8, 1, 1)
    fast, plain = _conv_pair(8, 4, 3)
    with torch.no_grad():  # no grad in train mode: the plain kernel too
        torch.testing.assert_close(fast(x), plain(x))


def test_a_whole_training_step_is_the_same_on_every_path() -> None:
    from facedistill.nn.models import TapConv2d

    x = torch.randn(16, 3, 32, 32)
    target = torch.randn(16, 40)
    grads = []
    for centre, dense in ((False, None), (True, 64)):
        torch.manual_seed(0)
        model = build_model("snet1")  # conv6 on a 1x1 map, block5 (256 in) on a 2x2 map
        for m in model.modules():
            if isinstance(m, TapConv2d):
                m.centre, m.dense_min_channels = centre, dense
        ((model(x) - target) ** 2).mean().backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads, strict=True):  # float32 sums in another order: equal to ~1e-6 of the gradient
        assert (a - b).norm() <= 1e-4 * b.norm() + 1e-12


def test_params_without_heads_leave_out_every_subnets_fc() -> None:
    """``include_head=False`` drops the attribute FCs of composite models too: FRL's two
    branch heads, each part subnet's, the cascade's subnets' (the relation layer stays)."""
    frl = build_model("frl", width=0.25)
    heads = sum(p.numel() for m in (frl.head, frl.cls_head) for p in m.parameters())
    assert count_params(frl, include_head=False) == count_params(frl) - heads
    cascade = build_model("cascade", width=0.25)
    fcs = [cascade.whole.head, *(net.head for net in cascade.parts.parts.values())]
    dropped = sum(p.numel() for m in fcs for p in m.parameters())
    assert count_params(cascade, include_head=False) == count_params(cascade) - dropped
    from facedistill.nn.regions import GROUPS

    assert dropped == 1280 * 40 + 40 + sum(1281 * len(m) for m in GROUPS.values())
