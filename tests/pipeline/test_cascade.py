"""The cascade's combination layers on planted scores: the region switch picks, per
attribute, the subnet that is better on val; the relation layer learns a planted relation and
stays at identity under a strong decay."""

from __future__ import annotations

import numpy as np
import pytest

from facedistill.pipeline.cascade import fit_relations, region_switch, relation_layer

NAMES = [f"a{i}" for i in range(8)]


def _split(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = rng.integers(0, 2, (n, 8)).astype(np.float32)
    good = (2 * y - 1) * 3 + rng.normal(size=(n, 8))  # informative logits
    noise = rng.normal(size=(n, 8))  # chance
    return y, good, noise


def test_the_switch_takes_the_better_subnet_per_attribute() -> None:
    rng = np.random.default_rng(0)
    (vy, vg, vn), (ty, tg, tn) = _split(rng, 400), _split(rng, 400)
    left = np.arange(8) < 4  # the part knows a0-a3, the whole a4-a7
    part = (np.where(left, vg, vn), vy, np.where(left, tg, tn), ty)
    whole = (np.where(left, vn, vg), vy, np.where(left, tn, tg), ty)
    got = region_switch(part, whole, NAMES)
    assert got.use_part.tolist() == left.tolist()
    assert got.report["mean_balanced"] > 0.9  # every attribute from its informed subnet
    record = got.to_record(NAMES)
    assert record["parts_chosen"] == 4 and record["attributes"]["a0"]["use_part"] is True
    with pytest.raises(ValueError, match="same images"):
        region_switch(part, (whole[0], 1 - whole[1], whole[2], whole[3]), NAMES)


def test_relations_learn_a_planted_relation_and_decay_holds_identity() -> None:
    rng = np.random.default_rng(1)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y, good, noise = _split(rng, n)
        y[:, 7] = y[:, 0]  # a7 is a0 ...
        z = good.copy()
        z[:, 7] = noise[:, 7]  # ... but its own score knows nothing
        return z, y

    (z_tr, y_tr), (z_v, y_v), (z_t, y_t) = split(800), split(400), split(400)
    w, b = fit_relations(z_tr, y_tr, decay=1e-3)
    assert w[7, 0] > 0.5 and abs(w[0, 7]) < 0.2  # a7 reads a0's score
    stiff, _ = fit_relations(z_tr, y_tr, decay=1e3)
    np.testing.assert_allclose(stiff, np.eye(8), atol=1e-2)
    report = relation_layer((z_tr, y_tr), (z_v, y_v, z_t, y_t), NAMES)
    a7 = report["attributes"][7]
    assert a7["balanced"] > 0.9 and report["decay"] in (1e-3, 1e-2, 1e-1)
    assert set(report["val_by_decay"]) == {"0.001", "0.01", "0.1"}


def test_the_soft_switch_leans_to_the_informed_subnet() -> None:
    from facedistill.pipeline.cascade import fit_soft_switch

    rng = np.random.default_rng(2)
    y, good, noise = _split(rng, 800)
    left = np.arange(8) < 4
    m = fit_soft_switch((np.where(left, good, noise), y), np.where(left, noise, good))
    assert (m[left] > 0.8).all() and (m[~left] < 0.2).all()
    assert ((m > 0) & (m < 1)).all()  # a weight, never a hard 0/1
