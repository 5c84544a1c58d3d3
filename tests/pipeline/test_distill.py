"""Distillation objectives: each term against hand-computed values and gradients, the selected
term's regressor, frozen teachers, two-stage training, bad options and a short training run."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from facedistill.errors import ConfigError, UserError
from facedistill.nn.models import build_model
from facedistill.pipeline.distill import METHODS, DistillObjective, build_objective


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """These tensors are tiny: on a busy machine a second thread only adds contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sig(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def bce(z: float, p: float) -> float:
    """Binary cross-entropy of logit ``z`` against target probability ``p``."""
    return -(p * math.log(sig(z)) + (1.0 - p) * math.log(1.0 - sig(z)))


class FixedTeacher(nn.Module):
    """A stand-in teacher that answers fixed logits and features whatever the images (scaled
    by a parameter, so frozen-ness can be checked) and records the input shapes it saw."""

    def __init__(self, logits: list[list[float]], feats: list[list[float]]) -> None:
        super().__init__()
        self.register_buffer("fixed_logits", torch.tensor(logits))
        self.register_buffer("fixed_feats", torch.tensor(feats))
        self.scale = nn.Parameter(torch.ones(()))
        self.feature_dim = len(feats[0])
        self.seen: list[tuple[int, ...]] = []
        self.inputs: list[torch.Tensor] = []

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.seen.append(tuple(x.shape))
        self.inputs.append(x)
        return self.fixed_logits * self.scale, self.fixed_feats * self.scale


def leaf(values: list[list[float]]) -> torch.Tensor:
    return torch.tensor(values, requires_grad=True)


def images(batch: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def tiny(name: str = "snet3", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name, width=0.25)


# -- the terms on hand-computed cases ---------------------------------------------------------

S = [[1.0, -2.0, 0.5], [-0.3, 0.8, 2.0]]  # student logits, B=2, A=3
TL = [[0.5, 1.5, -1.0], [2.0, -0.7, 0.1]]  # teacher logits
Y = [[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]  # labels
F3 = [[0.2, -1.0, 3.0], [1.5, 0.0, -0.5]]  # student features, D=3
G3 = [[0.0, 2.0, 1.0], [1.0, 1.0, 1.0]]  # teacher features, D=3


def test_labels_term_value_and_gradient_with_pos_weight() -> None:
    w = [2.0, 1.0, 0.5]
    obj = DistillObjective([], weights={"labels": 1}, student_dim=3, pos_weight=torch.tensor(w))
    s = leaf(S)
    total, terms = obj(s, torch.zeros(2, 3), torch.tensor(Y), images(2))
    expected = np.mean([[-(w[a] * Y[b][a] * math.log(sig(S[b][a]))
                           + (1 - Y[b][a]) * math.log(1 - sig(S[b][a]))) for a in range(3)]
                        for b in range(2)])
    assert set(terms) == {"labels"}
    assert terms["labels"].item() == pytest.approx(expected, rel=1e-6)
    assert total.item() == pytest.approx(expected, rel=1e-6)
    total.backward()
    grad = [[((1 - Y[b][a]) * sig(S[b][a]) - w[a] * Y[b][a] * (1 - sig(S[b][a]))) / 6
             for a in range(3)] for b in range(2)]
    np.testing.assert_allclose(s.grad.numpy(), grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("temp", [1.0, 4.0])
def test_soft_term_value_gradient_and_temperature_scaling(temp: float) -> None:
    teacher = FixedTeacher(TL, G3)
    obj = DistillObjective([teacher], weights={"soft": 1}, temperature=temp, student_dim=3)
    s = leaf(S)
    total, terms = obj(s, torch.zeros(2, 3), torch.tensor(Y), images(2))
    mean_bce = np.mean([[bce(S[b][a] / temp, sig(TL[b][a] / temp)) for a in range(3)]
                        for b in range(2)])
    assert terms["soft"].item() == pytest.approx(temp**2 * mean_bce, rel=1e-6)
    assert total.item() == pytest.approx(temp**2 * mean_bce, rel=1e-6)
    total.backward()
    grad = [[temp * (sig(S[b][a] / temp) - sig(TL[b][a] / temp)) / 6 for a in range(3)]
            for b in range(2)]
    np.testing.assert_allclose(s.grad.numpy(), grad, rtol=1e-5, atol=1e-7)


def test_soft_term_numbers_at_t1_and_t4() -> None:
    """One sample, one attribute: the T^2 factor and the softened target, written out."""
    s, t = 2.0, -1.0

    def value(temp: float) -> float:
        obj = DistillObjective([FixedTeacher([[t]], [[0.0]])], weights={"soft": 1},
                               temperature=temp, student_dim=1)
        return obj(torch.tensor([[s]]), torch.zeros(1, 1), torch.zeros(1, 1), images(1))[0].item()

    p1, q1 = 1 / (1 + math.exp(1.0)), 1 / (1 + math.exp(-2.0))  # sigmoid(-1), sigmoid(2)
    p4, q4 = 1 / (1 + math.exp(0.25)), 1 / (1 + math.exp(-0.5))  # sigmoid(-1/4), sigmoid(2/4)
    assert value(1.0) == pytest.approx(-(p1 * math.log(q1) + (1 - p1) * math.log(1 - q1)),
                                       rel=1e-6)
    assert value(4.0) == pytest.approx(16 * -(p4 * math.log(q4) + (1 - p4) * math.log(1 - q4)),
                                       rel=1e-6)


def test_soft_term_of_an_ensemble_uses_the_mean_teacher_logit() -> None:
    other = [[-1.5, 0.5, 3.0], [0.0, 0.3, -0.9]]
    obj = DistillObjective([FixedTeacher(TL, G3), FixedTeacher(other, G3)], weights={"soft": 1},
                           temperature=2.0, student_dim=3)
    _, terms = obj(torch.tensor(S), torch.zeros(2, 3), torch.tensor(Y), images(2))
    mean_t = [[(TL[b][a] + other[b][a]) / 2 for a in range(3)] for b in range(2)]
    expected = 4 * np.mean([[bce(S[b][a] / 2, sig(mean_t[b][a] / 2)) for a in range(3)]
                            for b in range(2)])
    assert terms["soft"].item() == pytest.approx(expected, rel=1e-6)


def test_hint_term_of_an_ensemble_maps_to_all_teachers_neurons_not_their_mean() -> None:
    g2 = [[2.0, 0.0, -1.0], [3.0, 1.0, 0.0]]
    obj = DistillObjective([FixedTeacher(TL, G3), FixedTeacher(TL, g2)], weights={"hint": 1},
                           student_dim=3)
    reg = obj.hint_regressor
    assert reg is not None and (reg.in_features, reg.out_features) == (3, 6)
    with torch.no_grad():  # a known map: identity onto teacher 0's block, 2x onto teacher 1's
        reg.weight.copy_(torch.cat([torch.eye(3), 2 * torch.eye(3)]))
        reg.bias.zero_()
    f = leaf(F3)
    total, terms = obj(torch.tensor(S), f, torch.tensor(Y), images(2))
    pred = [[F3[b][d] for d in range(3)] + [2 * F3[b][d] for d in range(3)] for b in range(2)]
    target = [G3[b] + g2[b] for b in range(2)]
    expected = sum((pred[b][i] - target[b][i]) ** 2 for b in range(2) for i in range(6)) / 12
    assert terms["hint"].item() == pytest.approx(expected, rel=1e-6)
    total.backward()
    grad = [[2 * (pred[b][d] - target[b][d]) / 12 + 2 * 2 * (pred[b][3 + d] - target[b][3 + d])
             / 12 for d in range(3)] for b in range(2)]
    np.testing.assert_allclose(f.grad.numpy(), grad, rtol=1e-6)
    # one teacher: index-aligned, no map
    single = DistillObjective([FixedTeacher(TL, G3)], weights={"hint": 1}, student_dim=3)
    assert single.hint_regressor is None and list(single.parameters()) == []


G4 = [[0.5, -1.0, 2.0, 4.0], [1.0, 0.0, -2.0, 0.5]]  # a 4-neuron teacher


def test_selected_term_with_one_teacher_and_k_equal_to_the_student_width_is_index_aligned(
) -> None:
    idx = [3, 0, 2]  # K = 3 = student_dim: student feature i imitates teacher neuron idx[i]
    obj = DistillObjective([FixedTeacher(TL, G4)], weights={"selected": 1}, selected=idx,
                           student_dim=3)
    assert obj.regressor is None and list(obj.parameters()) == []
    f = leaf(F3)
    total, terms = obj(torch.tensor(S), f, torch.tensor(Y), images(2))
    target = [[G4[b][j] for j in idx] for b in range(2)]
    expected = sum((F3[b][i] - target[b][i]) ** 2 for b in range(2) for i in range(3)) / 6
    assert terms["selected"].item() == pytest.approx(expected, rel=1e-6)
    total.backward()
    grad = [[2 * (F3[b][i] - target[b][i]) / 6 for i in range(3)] for b in range(2)]
    np.testing.assert_allclose(f.grad.numpy(), grad, rtol=1e-6)


def test_selected_term_with_fewer_neurons_goes_through_a_regressor() -> None:
    idx = [2, 0]  # K = 2 != student_dim 3
    obj = DistillObjective([FixedTeacher(TL, G4)], weights={"selected": 1}, selected=idx,
                           student_dim=3)
    assert isinstance(obj.regressor, nn.Linear)
    assert (obj.regressor.in_features, obj.regressor.out_features) == (3, 2)
    with torch.no_grad():
        obj.regressor.weight.copy_(torch.tensor([[1.0, 0.5, -1.0], [0.0, 2.0, 0.25]]))
        obj.regressor.bias.copy_(torch.tensor([0.1, -0.2]))
    w = obj.regressor.weight.detach().numpy().astype(np.float64)
    bias = obj.regressor.bias.detach().numpy().astype(np.float64)
    f = leaf(F3)
    total, terms = obj(torch.tensor(S), f, torch.tensor(Y), images(2))
    fn = np.array(F3)
    pred = fn @ w.T + bias
    target = np.array([[G4[b][j] for j in idx] for b in range(2)])
    assert terms["selected"].item() == pytest.approx(((pred - target) ** 2).mean(), rel=1e-6)
    total.backward()
    r = 2 * (pred - target) / 4  # d loss / d pred, B*K = 4
    np.testing.assert_allclose(obj.regressor.weight.grad.numpy(), r.T @ fn, rtol=1e-5)
    np.testing.assert_allclose(obj.regressor.bias.grad.numpy(), r.sum(0), rtol=1e-5)
    np.testing.assert_allclose(f.grad.numpy(), r @ w, rtol=1e-5)


def test_total_is_the_weighted_sum_of_detached_terms() -> None:
    obj = DistillObjective([FixedTeacher(TL, G3)], student_dim=3, temperature=2.0,
                           weights={"labels": 0.5, "soft": 3.0, "hint": 0.25})
    s, f = leaf(S), leaf(F3)
    total, terms = obj(s, f, torch.tensor(Y), images(2))
    assert set(terms) == {"labels", "soft", "hint"}
    assert all(not v.requires_grad and v.dtype == torch.float32 for v in terms.values())
    weighted = 0.5 * terms["labels"] + 3.0 * terms["soft"] + 0.25 * terms["hint"]
    assert total.item() == pytest.approx(weighted.item(), rel=1e-6)
    assert total.requires_grad


def test_a_term_weighted_zero_is_not_computed() -> None:
    teacher = FixedTeacher(TL, G3)
    obj = DistillObjective([teacher], weights={"labels": 1, "hint": 0}, student_dim=3)
    total, terms = obj(torch.tensor(S), torch.tensor(F3), torch.tensor(Y), images(2))
    assert set(terms) == {"labels"} and teacher.seen == []  # the teacher was not even run
    assert total.item() == pytest.approx(terms["labels"].item())


def test_loss_math_is_float32_under_bf16_autocast() -> None:
    obj = DistillObjective([FixedTeacher(TL, G4)], student_dim=3, selected=[1, 3],
                           weights={"labels": 1, "soft": 1, "selected": 1})
    s = torch.tensor(S, dtype=torch.bfloat16)
    f = torch.tensor(F3, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, terms = obj(s, f, torch.tensor(Y), images(2))
        ref, _ = obj(s.float(), f.float(), torch.tensor(Y), images(2))
    assert total.dtype == torch.float32 and all(v.dtype == torch.float32 for v in terms.values())
    # same numbers as with float32 inputs of the same (bf16-representable) values
    assert total.item() == pytest.approx(ref.item(), rel=1e-6)


# -- the selected term's regressor and frozen teachers on real models ----------------------------


@pytest.mark.parametrize(("n_teachers", "k", "regressor"),
                         [(1, 1280, False), (1, 512, True), (2, 1280, True)])
def test_selected_regressor_trains_with_the_objective_and_stays_out_of_the_student(
        n_teachers: int, k: int, regressor: bool) -> None:
    teachers = [tiny("snet3", seed=10 + t) for t in range(n_teachers)]
    student = tiny("snet3", seed=1)
    student.train()
    idx = torch.randperm(1280 * n_teachers, generator=torch.Generator().manual_seed(0))[:k]
    obj = DistillObjective(teachers, weights={"labels": 1, "selected": 1}, selected=idx.tolist())
    obj.train()
    params = dict(obj.named_parameters())
    if regressor:
        assert isinstance(obj.regressor, nn.Linear)
        assert (obj.regressor.in_features, obj.regressor.out_features) == (1280, k)
        assert set(params) == {"regressor.weight", "regressor.bias"}
    else:
        assert obj.regressor is None and params == {}
    assert set(obj.state_dict()) == set(params)  # no teacher weights, no buffers
    student_ids = {id(p) for p in student.state_dict().values()}
    assert not any(id(p) in student_ids for p in obj.parameters())
    assert not any(k.startswith("regressor") for k in student.state_dict())

    frozen = [{n: p.detach().clone() for n, p in t.state_dict().items()} for t in teachers]
    before = {n: p.detach().clone() for n, p in params.items()}
    opt = torch.optim.SGD([*student.parameters(), *obj.parameters()], lr=0.1)
    x = images(4)
    labels = (torch.rand(4, 40, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    logits, feats = student.forward_with_features(x)
    loss, terms = obj(logits, feats, labels, x)
    assert set(terms) == {"labels", "selected"}
    opt.zero_grad()
    loss.backward()
    for p in params.values():
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert student.head.weight.grad is not None and student.head.weight.grad.abs().sum() > 0
    assert all(p.grad is None for t in teachers for p in t.parameters())
    opt.step()
    for t, state in zip(teachers, frozen, strict=True):
        assert not t.training
        for n, v in t.state_dict().items():
            assert torch.equal(v, state[n]), n  # weights and BN statistics unchanged
    for n, p in params.items():
        assert not torch.equal(p, before[n])


def test_teachers_are_frozen_kept_in_eval_mode_and_follow_moves() -> None:
    teacher = tiny("snet3", seed=5)
    teacher.train()
    obj = DistillObjective([teacher], weights={"hint": 1})
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert obj.train() is obj and obj.training and not teacher.training
    assert list(obj.parameters()) == [] and obj.state_dict() == {}
    assert obj.teachers == (teacher,)

    assert obj.to("cpu") is obj
    x = images(2)
    _, terms = obj(torch.zeros(2, 40), torch.zeros(2, 1280), torch.zeros(2, 40), x)
    g = teacher.features(x)
    assert terms["hint"].item() == pytest.approx(float((g**2).mean()), rel=1e-5)
    obj.double()  # a dtype move shows the teachers are reached although not submodules
    assert all(p.dtype == torch.float64 for p in teacher.parameters())
    obj.float()
    assert all(p.dtype == torch.float32 for p in teacher.parameters())


def test_teacher_inputs_are_resized_to_their_size() -> None:
    small, big = FixedTeacher(TL, G3), FixedTeacher(TL, G3)
    obj = DistillObjective([small, big], weights={"hint": 1}, student_dim=3,
                           teacher_sizes=[32, 48])
    obj(torch.tensor(S), torch.tensor(F3), torch.tensor(Y), images(2, size=32))
    assert small.seen == [(2, 3, 32, 32)] and big.seen == [(2, 3, 48, 48)]

    teacher = tiny("snet3", seed=7)
    obj = DistillObjective([teacher], weights={"hint": 1}, teacher_sizes=[64])
    x = images(2, size=32)
    f = torch.zeros(2, 1280)
    _, terms = obj(torch.zeros(2, 40), f, torch.zeros(2, 40), x)
    resized = nn.functional.interpolate(x, size=(64, 64), mode="bilinear", antialias=True,
                                        align_corners=False)
    with torch.no_grad():
        on_big, on_small = teacher.features(resized), teacher.features(x)
    assert terms["hint"].item() == pytest.approx(float((on_big**2).mean()), rel=1e-5)
    assert terms["hint"].item() != pytest.approx(float((on_small**2).mean()), rel=1e-3)


def test_teacher_resizing_is_antialiased_bilinear() -> None:
    teacher = FixedTeacher([[0.0]], [[0.0]])
    obj = DistillObjective([teacher], weights={"hint": 1}, student_dim=1, teacher_sizes=[8])
    # columns +1 +1 -1 -1 shifted by one: plain bilinear at 1/4 samples between two +1 columns
    # and returns 1 everywhere; the antialiased filter averages the stripes away
    col = torch.arange(32) % 4
    stripes = torch.where((col == 1) | (col == 2), 1.0, -1.0).expand(1, 3, 32, 32)
    obj(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1, 1), stripes)
    seen = teacher.inputs[-1]
    assert seen.shape == (1, 3, 8, 8)
    assert seen[..., 1:-1].abs().max().item() < 1e-6  # inside: the mean of the stripes, 0
    assert seen.abs().max().item() < 0.1  # the borders: slightly uneven weights
    # a flat image stays flat, whatever the size
    obj = DistillObjective([teacher], weights={"hint": 1}, student_dim=1, teacher_sizes=[48])
    flat = torch.tensor([0.5, -1.0, 2.0]).view(1, 3, 1, 1).expand(1, 3, 32, 32)
    obj(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1, 1), flat)
    seen = teacher.inputs[-1]
    assert seen.shape == (1, 3, 48, 48)
    for c, v in enumerate([0.5, -1.0, 2.0]):
        assert torch.allclose(seen[0, c], torch.full((48, 48), v), atol=1e-6)


# -- two-stage training --------------------------------------------------------------------------


def test_two_stage_trains_features_first_then_labels() -> None:
    teacher = FixedTeacher(TL, G3)
    obj = DistillObjective([teacher], student_dim=3, two_stage=2,
                           weights={"labels": 1, "soft": 2, "hint": 0.5})
    batch = (torch.tensor(S), torch.tensor(F3), torch.tensor(Y), images(2))
    joint = DistillObjective([teacher], student_dim=3,
                             weights={"labels": 1, "soft": 2, "hint": 0.5})
    _, ref = joint(*batch)
    for epoch in (1, 2):
        obj.set_epoch(epoch, 5)
        total, terms = obj(*batch)
        assert obj.stage == 1 and set(terms) == {"hint"}
        assert total.item() == pytest.approx(0.5 * ref["hint"].item(), rel=1e-6)
    for epoch in (3, 5):
        obj.set_epoch(epoch, 5)
        total, terms = obj(*batch)
        assert obj.stage == 2 and set(terms) == {"labels", "soft"}
        assert total.item() == pytest.approx(ref["labels"].item() + 2 * ref["soft"].item(),
                                             rel=1e-6)
    obj.set_epoch(1, 5)  # back to the first stage (a resumed run starts anywhere)
    assert set(obj(*batch)[1]) == {"hint"}
    # without two_stage every epoch uses all terms
    joint.set_epoch(1, 5)
    assert set(joint(*batch)[1]) == {"labels", "soft", "hint"}
    joint.set_epoch(5, 5)
    assert set(joint(*batch)[1]) == {"labels", "soft", "hint"}

    with pytest.raises(ConfigError, match="two_stage=2 leaves no epoch"):
        obj.set_epoch(1, 2)
    obj.set_epoch(1, 3)  # 2 feature epochs + 1 label epoch is fine


def test_two_stage_needs_a_term_for_each_stage() -> None:
    teacher = FixedTeacher(TL, G3)
    with pytest.raises(ConfigError, match="hint or selected term"):
        DistillObjective([teacher], student_dim=3, weights={"labels": 1, "soft": 1}, two_stage=1)
    with pytest.raises(ConfigError, match="labels or soft term"):
        DistillObjective([teacher], student_dim=3, weights={"hint": 1}, two_stage=1)
    with pytest.raises(ConfigError, match="two_stage"):
        DistillObjective([teacher], student_dim=3, weights={"hint": 1, "labels": 1},
                         two_stage=-1)


# -- bad options ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"weights": {"labels": 1, "kd": 1}}, "unknown loss term 'kd'"),
    ({"weights": {"labels": 1, "hint": -0.5}}, "weight of term 'hint' must be a finite number >= 0"),
    ({"weights": {"labels": 1, "hint": float("nan")}}, "weight of term 'hint'"),
    ({"weights": {"labels": 0, "hint": 0}}, "every loss term has weight 0"),
    ({"weights": {}}, "every loss term has weight 0"),
    ({"weights": {"selected": 1}}, "needs the selected neuron indices"),
    ({"weights": {"selected": 1}, "selected": []}, "empty"),
    ({"weights": {"selected": 1}, "selected": [0, 4]}, "index 4 is out of range"),
    ({"weights": {"selected": 1}, "selected": [-1, 2]}, "index -1 is out of range"),
    ({"weights": {"selected": 1}, "selected": [1, 2, 1]}, "index 1 appears more than once"),
    ({"weights": {"selected": 1}, "selected": [0.5, 2]}, "must be integers"),
    ({"weights": {"soft": 1}, "temperature": 0.0}, "temperature must be a finite number > 0"),
    ({"weights": {"soft": 1}, "temperature": -2.0}, "temperature must be a finite number > 0"),
    ({"weights": {"soft": 1}, "temperature": float("inf")}, "temperature"),
    ({"weights": {"hint": 1}, "teacher_sizes": [32, 64]}, "teacher_sizes has 2 entries"),
    ({"weights": {"hint": 1}, "teacher_sizes": [0]}, "positive integers"),
])
def test_bad_options_raise_clear_errors(kwargs: dict, message: str) -> None:
    teacher = FixedTeacher(TL, G4)  # 4 neurons: valid indices 0..3
    kwargs = {"student_dim": 4, **kwargs}
    with pytest.raises(ConfigError, match=message) as info:
        DistillObjective([teacher], **kwargs)
    assert "\n" not in str(info.value)


def test_teacher_terms_need_teachers_of_the_right_shape() -> None:
    with pytest.raises(ConfigError, match="need at least one teacher"):
        DistillObjective([], weights={"labels": 1, "soft": 1})
    with pytest.raises(ConfigError, match="hint term needs teachers with 3-d features"):
        DistillObjective([FixedTeacher(TL, G4)], weights={"hint": 1}, student_dim=3)
    obj = DistillObjective([FixedTeacher([[0.0, 1.0]], G3[:1])], weights={"soft": 1},
                           student_dim=3)
    with pytest.raises(UserError, match="teacher predicts 2 attributes, the student 3"):
        obj(torch.tensor(S[:1]), torch.tensor(F3[:1]), torch.tensor(Y[:1]), images(1))


def test_build_objective_uses_the_method_weights_and_overrides() -> None:
    assert METHODS == {"labels": {"labels": 1}, "soft": {"labels": 1, "soft": 1},
                       "hint": {"labels": 1, "hint": 1}, "selected": {"labels": 1, "selected": 1}}
    teacher = tiny("snet3", seed=3)
    assert build_objective("labels", []).weights == {"labels": 1.0}
    obj = build_objective("soft", [teacher], temperature=4.0)
    assert obj.weights == {"labels": 1.0, "soft": 1.0} and obj.temperature == 4.0
    obj = build_objective("hint", [teacher], weights={"hint": 0.5}, two_stage=2)
    assert obj.weights == {"labels": 1.0, "hint": 0.5} and obj.two_stage == 2
    obj = build_objective("selected", [teacher], selected=list(range(0, 1280, 5)),
                          weights={"labels": 0})
    assert obj.active_terms == ("selected",) and obj.regressor is not None
    assert obj.regressor.out_features == 256
    with pytest.raises(ConfigError, match="unknown method 'kd'"):
        build_objective("kd", [teacher])
    with pytest.raises(ConfigError, match="unknown loss term 'hnt'"):
        build_objective("hint", [teacher], weights={"hnt": 1})


# -- a short training run -----------------------------------------------------------------------


def test_hint_training_pulls_the_student_towards_the_teacher() -> None:
    teacher = tiny("snet3", seed=21)
    student = tiny("snet3", seed=22)
    student.train()
    obj = build_objective("hint", [teacher], weights={"labels": 0})
    obj.train()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(16, 3, 32, 32, generator=gen)
    labels = torch.zeros(16, 40)
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    history = []
    for _ in range(20):
        logits, feats = student.forward_with_features(x)
        loss, terms = obj(logits, feats, labels, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(terms["hint"].item())
    assert history[-1] < 0.3 * history[0], history


def test_the_trainer_runs_the_teachers_in_the_students_memory_layout(tmp_path) -> None:
    """channels_last students get channels_last teachers: a teacher left in NCHW converts
    every batch and runs its convolutions 1.4-1.8x slower (measured on this 2-core CPU)."""
    from torch.utils.data import TensorDataset

    from facedistill.config import TrainConfig
    from facedistill.pipeline.train import Trainer

    data = TensorDataset(torch.rand(8, 3, 32, 32), torch.zeros(8, 40))
    for layout, expected in (("on", torch.channels_last), ("off", torch.contiguous_format)):
        obj = build_objective("hint", [tiny("snet3", seed=5)])
        cfg = TrainConfig(arch="snet3", width=0.25, size=32, batch_size=4, workers=0,
                          precision="fp32", channels_last=layout, epochs=1)
        trainer = Trainer(cfg, tiny("snet3", seed=6), data, data, tmp_path / layout,
                          objective=obj)
        convs = [m.weight for m in trainer.objective.teachers[0].modules()
                 if isinstance(m, nn.Conv2d) and m.weight.shape[-1] > 1]
        assert convs and all(w.is_contiguous(memory_format=expected) for w in convs)


# -- the teacher-output cache ----------------------------------------------------------------

class CountingTeacher(nn.Module):
    """A real (tiny) network that counts its forward passes."""

    def __init__(self, seed: int = 3) -> None:
        super().__init__()
        self.net = tiny("snet3", seed=seed).eval()
        self.feature_dim = self.net.feature_dim
        self.calls = 0

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        return self.net.forward_with_features(x)


def test_cached_teacher_outputs_are_the_computed_ones_and_keyed_by_exact_batch() -> None:
    from facedistill.pipeline.distill import TeacherCache

    cache = TeacherCache(1 << 30)
    teacher = CountingTeacher()
    obj = build_objective("hint", [teacher], teacher_keys=["sha-a"])
    obj.cache = cache
    x = images(4)
    first = obj._run_teachers(x)
    again = obj._run_teachers(x.clone())  # same bytes, another tensor: a hit
    assert teacher.calls == 1 and cache.stats()["hits"] == 1 and cache.stats()["misses"] == 1
    for a, b in zip(first, again, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    nudged = x.clone()
    nudged[0, 0, 0, 0] += 1e-6  # one value off: a miss, and the teacher's own answer
    obj._run_teachers(nudged)
    assert teacher.calls == 2
    obj._run_teachers(x.contiguous(memory_format=torch.channels_last))  # another layout
    assert teacher.calls == 3
    other = build_objective("hint", [teacher], teacher_keys=["sha-b"])  # other weights
    other.cache = cache
    other._run_teachers(x)
    assert teacher.calls == 4
    uncached = build_objective("hint", [teacher])  # no keys: never cached
    assert uncached.cache is None
    uncached._run_teachers(x)
    assert teacher.calls == 5


def test_the_cache_holds_at_most_its_budget_least_recently_used_out_first() -> None:
    from facedistill.pipeline.distill import TeacherCache

    entry = torch.zeros(10), torch.zeros(15)  # 100 bytes
    cache = TeacherCache(250)
    for key in (b"a", b"b"):
        cache.put(key, *entry)
    assert cache.get(b"a") is not None  # a is now the most recent
    cache.put(b"c", *entry)  # 300 > 250: b goes
    assert cache.get(b"b") is None and cache.get(b"a") is not None
    assert cache.bytes == 200 and cache.stats()["entries"] == 2
    off = TeacherCache(0)
    off.put(b"a", *entry)
    assert off.get(b"a") is None and off.bytes == 0
    with pytest.raises(ConfigError, match="teacher_keys has 2 entries"):
        build_objective("hint", [CountingTeacher()], teacher_keys=["x", "y"])


def test_a_student_trained_from_cached_teacher_outputs_is_the_same_student(tmp_path) -> None:
    """Two runs of one seed see byte-identical batches: the second runs no teacher forward
    and ends with the same weights as a run without any cache."""
    from torch.utils.data import TensorDataset

    from facedistill.config import TrainConfig
    from facedistill.pipeline.distill import TeacherCache
    from facedistill.pipeline.train import Trainer

    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(16, 3, 32, 32, generator=g),
                         (torch.rand(16, 40, generator=g) > 0.5).float())
    cache = TeacherCache(1 << 30)
    cfg = TrainConfig(arch="snet3", width=0.25, size=32, batch_size=4, workers=0,
                      precision="fp32", epochs=2, deterministic=True)
    weights, calls = [], []
    for run, keys in (("uncached", None), ("fill", ["t"]), ("hit", ["t"])):
        teacher = CountingTeacher()
        obj = build_objective("selected", [teacher], selected=list(range(0, 1280, 5)),
                              teacher_keys=keys)
        if keys:
            obj.cache = cache
        trainer = Trainer(cfg, tiny("snet3", seed=6), data, data, tmp_path / run, objective=obj)
        trainer.fit()
        weights.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
        calls.append(teacher.calls)
    assert calls == [8, 8, 0]  # 2 epochs x 4 batches; the third run computed nothing
    assert cache.stats()["hits"] == 8
    for k in weights[0]:
        torch.testing.assert_close(weights[2][k], weights[0][k], rtol=0, atol=0)


def test_a_bad_cache_budget_is_a_one_line_error_naming_the_variable(monkeypatch) -> None:
    from facedistill.pipeline.distill import _cache_budget

    monkeypatch.setenv("FACEDISTILL_TEACHER_CACHE_MB", "lots")
    with pytest.raises(ConfigError, match="FACEDISTILL_TEACHER_CACHE_MB must be a number"):
        _cache_budget()
    monkeypatch.setenv("FACEDISTILL_TEACHER_CACHE_MB", "1.5")
    assert _cache_budget() == int(1.5 * 2**20)
    monkeypatch.setenv("FACEDISTILL_TEACHER_CACHE_MB", "-3")
    assert _cache_budget() == 0
