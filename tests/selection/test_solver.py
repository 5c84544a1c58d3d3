"""Neuron selection: Eq 7-9 accuracy matrix, mean-field solvers, the select command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facedistill.errors import UserError
from facedistill.pipeline import selection as PS
from facedistill.selection import solver as S
from facedistill.selection.file import read_selection


def brute_force_accuracy(r: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Eq 7-9 by a plain loop: every distinct value (and one above the max) as threshold."""
    n, a = r.shape[1], y.shape[1]
    out = np.empty((n, a))
    for i in range(n):
        cands = np.append(np.unique(r[:, i]), np.inf)
        for j in range(a):
            pos, neg = y[:, j] == 1, y[:, j] == 0
            if not pos.any() or not neg.any():
                out[i, j] = 0.5
                continue
            out[i, j] = max(((r[pos, i] >= e).mean() + (r[neg, i] < e).mean()) / 2
                            for e in cands)
    return out


def random_x(rng: np.random.Generator, n: int, a: int = 40) -> np.ndarray:
    """Accuracy matrices shaped like a trained teacher's: mostly near chance, some high."""
    return 0.5 + 0.5 * rng.beta(0.8, 4.0, size=(n, a))


# --------------------------------------------------------------------------- X


def test_attribute_accuracy_matches_a_brute_force_loop_with_ties_and_edge_cases() -> None:
    rng = np.random.default_rng(0)
    m = 120
    r = rng.normal(size=(m, 6)).round(1)  # many ties
    r[:, 2] = 3.0  # constant response: no threshold separates anything
    r[:, 3] = np.repeat([0.0, 1.0], m // 2)  # two values only
    y = (rng.random((m, 5)) < 0.35).astype(np.uint8)
    y[:, 3] = 1  # single class: all positive
    y[:, 4] = 0  # single class: all negative
    x, thr = S.attribute_accuracy(r, y)
    assert x.shape == thr.shape == (6, 5)
    np.testing.assert_allclose(x, brute_force_accuracy(r, y), rtol=0, atol=1e-12)
    assert np.all(x[2] == 0.5) and np.all(x[:, 3:] == 0.5)
    # the stored thresholds reproduce the accuracy
    for i in range(6):
        for j in range(3):
            pos, neg = y[:, j] == 1, y[:, j] == 0
            bal = ((r[pos, i] >= thr[i, j]).mean() + (r[neg, i] < thr[i, j]).mean()) / 2
            assert bal == pytest.approx(x[i, j], abs=1e-12)


def test_attribute_accuracy_both_polarities_catch_a_falling_neuron() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random((200, 1)) < 0.5).astype(np.uint8)
    r = np.where(y == 1, -1.0, 1.0) + 0.1 * rng.normal(size=(200, 1))  # falls with the label
    assert S.attribute_accuracy(r, y)[0][0, 0] == pytest.approx(0.5, abs=0.03)
    assert S.attribute_accuracy(r, y, polarity="both")[0][0, 0] == 1.0


def test_attribute_accuracy_errors_are_clear() -> None:
    r, y = np.zeros((10, 3)), np.zeros((10, 2))
    with pytest.raises(UserError, match="10 images but labels have 9"):
        S.attribute_accuracy(r, y[:9])
    with pytest.raises(UserError, match=r"labels must be \[M, A\]"):
        S.attribute_accuracy(r, y[:, 0])
    bad = r.copy()
    bad[4, 1] = np.nan
    with pytest.raises(UserError, match="column 1, row 4: nan is not a finite number"):
        S.attribute_accuracy(bad, y)
    bad[4, 1] = np.inf
    with pytest.raises(UserError, match="row 4: inf"):
        S.attribute_accuracy(bad, y)
    with pytest.raises(UserError, match="not 0 or 1"):
        S.attribute_accuracy(r, y + 2)


# --------------------------------------------------------------------------- mean field


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(5, 60), lam=st.floats(0.0, 20.0),
       b=st.floats(-0.5, 1.0))
def test_sequential_updates_never_increase_the_free_energy(seed: int, n: int, lam: float,
                                                          b: float) -> None:
    x = random_x(np.random.default_rng(seed), n, a=8)
    k = max(1, n // 3)
    sel = S.mean_field_select(x, k, solver="exact", schedule="sequential", b=b, lam=lam,
                              max_iter=30)
    e = np.asarray(sel.energies)
    assert len(e) >= 2
    # the kernel is float32, so F carries ~1e-7 relative rounding; real increases are far larger
    assert np.all(np.diff(e) <= 1e-6 * np.maximum(1.0, np.abs(e[1:])))
    assert e[-1] < e[0] or np.allclose(e, e[0])


def test_free_energy_matches_its_definition() -> None:
    rng = np.random.default_rng(2)
    x = random_x(rng, 30, a=5)
    q = rng.random(30)
    k, lam, sigma, b = 10, 2.0, 0.1, 0.3
    xh = S.normalise(x)
    u = xh.mean(1)
    psi = np.zeros((30, 30))
    for i in range(30):
        for j in range(30):
            if i != j:
                psi[i, j] = lam / k * np.mean(np.exp(-(xh[i] - xh[j]) ** 2 / (2 * sigma**2)))
    pair = sum(q[i] * q[j] * psi[i, j] for i in range(30) for j in range(i + 1, 30))
    ent = np.sum(q * np.log(q) + (1 - q) * np.log(1 - q))
    want = np.sum(q * (b - u)) + pair + ent
    m = S.messages(x, q, k=k, lam=lam, sigma=sigma, solver="exact")
    np.testing.assert_allclose(m, psi @ q, rtol=1e-5)
    assert S.free_energy(q, u, b, m) == pytest.approx(want, rel=1e-6)


def test_parallel_iterations_hold_the_target_size_and_converge() -> None:
    x = random_x(np.random.default_rng(3), 400)
    found = {}
    for solver in ("exact", "fast"):
        sel = found[solver] = S.mean_field_select(x, 100, solver=solver)
        assert sel.converged and sel.iterations < 200
        assert sel.q.sum() == pytest.approx(100, rel=1e-6)
        assert sel.indices.shape == (100,) and len(set(sel.indices.tolist())) == 100
        assert np.all(np.diff(sel.q[sel.indices]) <= 0)  # sorted by q
    # damped updates settle down (the fast solver's energies jump where the grid is refined)
    assert np.all(np.diff(found["exact"].energies[1:]) <= 1e-6)
    assert found["fast"].energies[-1] == pytest.approx(found["exact"].energies[-1], rel=0.01)


def _overlap(a: S.Selection, b: S.Selection) -> float:
    return len(set(a.indices.tolist()) & set(b.indices.tolist())) / a.k


@pytest.mark.parametrize("lam", [1.0, 5.0])
def test_fast_matches_exact_on_random_x(lam: float) -> None:
    x = random_x(np.random.default_rng(4), 1280)
    exact = S.mean_field_select(x, 512, solver="exact", lam=lam)
    fast = S.mean_field_select(x, 512, solver="fast", lam=lam)
    m_exact = S.messages(x, exact.q, k=512, lam=lam, solver="exact")
    m_fast = S.messages(x, exact.q, k=512, lam=lam, solver="fast")
    assert np.abs(m_fast - m_exact).max() <= 0.02 * np.abs(m_exact).max()
    assert _overlap(exact, fast) >= 0.95


def test_fast_matches_exact_on_a_trained_teacher(tiny_teacher: Path) -> None:
    resp = PS.collect_responses([tiny_teacher], split="val", workers=0)
    x, _ = S.attribute_accuracy(resp.features, resp.labels)
    k = x.shape[0] // 3
    exact = S.mean_field_select(x, k, solver="exact")
    fast = S.mean_field_select(x, k, solver="fast")
    m_exact = S.messages(x, exact.q, k=k, solver="exact")
    m_fast = S.messages(x, exact.q, k=k, solver="fast")
    assert np.abs(m_fast - m_exact).max() <= 0.02 * np.abs(m_exact).max()
    assert _overlap(exact, fast) >= 0.95
    # the selected neurons are the informative ones
    assert x[fast.indices].mean() > x.mean()


@pytest.mark.parametrize("solver", ["exact", "fast"])
def test_planted_duplicates_are_not_both_selected_at_large_lam(solver: str) -> None:
    rng = np.random.default_rng(5)
    x = 0.5 + 0.5 * rng.random((300, 40))
    u = S.informativeness(S.normalise(x))
    for rank in (2, 5, 8):
        dup = x.copy()
        dup[299] = dup[np.argsort(-u)[rank]]
        src = int(np.argsort(-u)[rank])
        both = S.mean_field_select(dup, 30, solver=solver, lam=0.0)  # no redundancy term
        assert {src, 299} <= set(both.indices.tolist())
        for lam in (10.0, 30.0):
            sel = S.mean_field_select(dup, 30, solver=solver, lam=lam)
            assert not {src, 299} <= set(sel.indices.tolist()), (rank, lam)
        # mean field alone gives the pair identical q: the greedy decode splits them
        assert sel.q[src] == pytest.approx(sel.q[299])


@pytest.mark.parametrize("solver", ["exact", "fast"])
def test_dead_neurons_come_after_every_informative_one(solver: str) -> None:
    rng = np.random.default_rng(6)
    x = random_x(rng, 200)
    x[::7] = 0.5  # constant responses: chance on every attribute
    dead = np.zeros(200, bool)
    dead[::7] = True
    informative = int((~dead).sum())
    for lam in (0.0, 1.0, 50.0):
        sel = S.mean_field_select(x, 150, solver=solver, lam=lam)
        assert not dead[sel.indices].any()
    sel = S.mean_field_select(x, informative + 5, solver=solver, lam=50.0)
    assert dead[sel.indices].sum() == 5 and np.all(dead[sel.indices[-5:]])


def test_k_equal_to_n_selects_everything_and_bad_arguments_fail() -> None:
    x = random_x(np.random.default_rng(7), 20, a=4)
    sel = S.mean_field_select(x, 20)
    assert sorted(sel.indices.tolist()) == list(range(20))
    with pytest.raises(UserError, match="k=21 is more than the 20 candidate neurons"):
        S.mean_field_select(x, 21)
    for k in (0, -3):
        with pytest.raises(UserError, match="k must be at least 1"):
            S.mean_field_select(x, k)
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(UserError, match=r"X\[3, 2\] is nan"):
        S.mean_field_select(bad, 5)
    with pytest.raises(UserError, match="solver"):
        S.mean_field_select(x, 5, solver="slow")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="sigma"):
        S.mean_field_select(x, 5, sigma=0.0)
    with pytest.raises(UserError, match="weights"):
        S.mean_field_select(x, 5, weights=np.ones(3))


def test_attribute_weights_steer_the_choice() -> None:
    x = np.full((40, 4), 0.5)
    x[:20, 0] = 0.9  # neurons 0-19 know attribute 0
    x[20:, 1] = 0.9  # neurons 20-39 know attribute 1
    x += np.random.default_rng(8).random((40, 4)) * 0.01
    only0 = S.mean_field_select(x, 10, weights=[1, 0, 0, 0], lam=0.0)
    only1 = S.mean_field_select(x, 10, weights=[0, 1, 0, 0], lam=0.0)
    assert np.all(only0.indices < 20) and np.all(only1.indices >= 20)


def test_the_exact_solver_without_room_for_the_kernel_gives_the_same_answer() -> None:
    x = random_x(np.random.default_rng(9), 300)
    kept = S.mean_field_select(x, 60, solver="exact")
    streamed = S.mean_field_select(x, 60, solver="exact", max_kernel_bytes=0)
    np.testing.assert_allclose(streamed.q, kept.q, rtol=1e-6)
    assert streamed.indices.tolist() == kept.indices.tolist()


# --------------------------------------------------------------------------- command


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "facedistill", *args], capture_output=True,
                          text=True, timeout=300)


def test_select_command_writes_outputs_and_reuses_responses(tiny_teacher: Path,
                                                            tmp_path: Path) -> None:
    out = tmp_path / "sel" / "selection.json"
    args = ("select", "--teacher", str(tiny_teacher), "--k", "100", "--out", str(out), "--json",
            "--workers", "0")
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    rec = json.loads(first.stdout)
    assert rec["teachers"][0]["cached"] is False
    on_disk = read_selection(out)
    assert list(on_disk.indices) == rec["indices"] and len(rec["indices"]) == 100
    assert on_disk.path == out and on_disk.to_json() == {k: v for k, v in rec.items()
                                                         if k != "path"}
    x = np.load(out.parent / "X.npy")
    n = rec["candidates"]
    assert x.shape == (n, 40) and np.all((x >= 0.5) & (x <= 1.0))
    assert (out.parent / "selection.png").read_bytes()[:4] == b"\x89PNG"
    assert len(rec["thresholds"]) == 100 and len(rec["u"]) == n
    assert [s["neuron"] for s in rec["selected"]] == rec["indices"]  # one teacher: same ids
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    rec2 = json.loads(again.stdout)
    assert rec2["teachers"][0]["cached"] is True
    assert rec2["indices"] == rec["indices"]


def test_select_an_ensemble_names_teacher_and_neuron(tiny_teacher: Path, tmp_path: Path
                                                     ) -> None:
    rec = PS.run_selection([tiny_teacher, tiny_teacher / "last.pt"], out=tmp_path, k=64,
                           workers=0, plot=False)
    width = rec.teachers[0]["neurons"]
    assert rec.candidates == 2 * width and rec.teachers[1]["offset"] == width
    for s in rec.selected:
        assert s["index"] == s["teacher"] * width + s["neuron"]


def test_select_command_errors_are_one_line(tiny_teacher: Path, tmp_path: Path) -> None:
    proc = run_cli("select", "--teacher", str(tiny_teacher), "--k", "100000",
                   "--out", str(tmp_path / "s.json"), "--workers", "0")
    assert proc.returncode == 2
    assert "must be between 1 and the" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("select", "--teacher", str(tmp_path / "nope"), "--out", str(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "other"}')
    with pytest.raises(UserError, match="not a facedistill.selection/v1 file"):
        read_selection(bad)


def test_a_selection_record_round_trips_and_reads_older_files(tmp_path: Path) -> None:
    """The typed record is the file: to_json -> from_json gives it back; a file of an older
    version, without the later fields (redundancy, files, energies), still reads."""
    from facedistill.selection.file import FORMAT, SelectionRecord

    rec = SelectionRecord(k=2, candidates=5, indices=(4, 1), solver="fast",
                          config={"lam": 0.5}, u=(0.1, 0.2, 0.3, 0.4, 0.5),
                          seconds={"solve": 0.01})
    back = read_selection(rec.write(tmp_path / "selection.json").path)
    assert back == rec and back.path == tmp_path / "selection.json"
    assert json.loads((tmp_path / "selection.json").read_text())["format"] == FORMAT
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"format": FORMAT, "k": 1, "candidates": 3, "indices": [2],
                               "solver": "exact", "u": [0.0, 0.1, 0.9]}))
    got = read_selection(old)
    assert got.indices == (2,) and got.redundancy is None and got.u[2] == 0.9
    for bad in ({"format": FORMAT, "k": 2, "candidates": 3, "indices": [1, 1]},
                {"format": FORMAT, "k": 1, "candidates": 3, "indices": [3]}):
        old.write_text(json.dumps(bad))
        with pytest.raises(UserError, match="missing, repeated or out of range"):
            read_selection(old)
