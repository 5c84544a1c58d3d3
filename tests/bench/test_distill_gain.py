"""benchmarks/distill_gain.py end to end on the tiny dataset: cells, controls, resume, goal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "distill_gain.py"), *args],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)


def test_distill_gain_runs_every_cell_once_and_reads_the_goal(
        tiny_synth: Path, tiny_teacher: Path, tmp_path: Path) -> None:
    out = tmp_path / "gain"
    args = ("--teacher", str(tiny_teacher), "--data", str(tiny_synth), "--students", "snet3",
            "--width", "0.25", "--epochs", "1", "--batch-size", "32", "--workers", "0",
            "--k", "64", "--seeds", "0,1", "--methods", "labels,random-K,top-K",
            "--out", str(out), "--json-out", str(tmp_path / "g.json"),
            "--md-out", str(tmp_path / "g.md"), "--png-out", str(tmp_path / "g.png"))
    first = run(*args)
    assert first.returncode == 0, first.stderr
    result = json.loads((tmp_path / "g.json").read_text())
    assert len(result["cells"]) == 6
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == {"labels", "random-K", "top-K"} and rows["labels"]["seeds"] == 2
    assert rows["labels"]["gain_test"] == 0.0
    for r in rows.values():
        cells = [c["test"] for c in result["cells"] if c["method"] == r["method"]]
        assert abs(r["test_mean"] - sum(cells) / 2) < 1e-12 and r["test_std"] >= 0
    # the controls are selection files the students were really trained through
    control = json.loads((out / "selection-top.json").read_text())
    sel = json.loads((out / "selection" / "selection.json").read_text())
    assert control["k"] == 64 and control["teachers"] == sel["teachers"]
    u = sel["u"]
    assert min(u[i] for i in control["indices"]) >= sorted(u, reverse=True)[63] - 1e-12
    ckpt = json.loads((out / "snet3" / "top-K" / "seed1" / "compare.json").read_text())
    assert ckpt["distill"]["selection"]["indices"] == control["indices"]
    goal = result["goal"]
    assert goal["evaluated"] and goal["best_on_val"] in {"random-K", "top-K"}
    assert "selected_minus_random" not in goal  # no 'selected' row here
    assert (tmp_path / "g.png").stat().st_size > 1000 and "| snet3 |" in first.stdout
    # a second run reuses every finished cell (no training: same numbers, same files)
    stamp = (out / "snet3" / "labels" / "seed0" / "cell.json").stat().st_mtime_ns
    again = run(*args)
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "g.json").read_text())["rows"] == result["rows"]
    assert (out / "snet3" / "labels" / "seed0" / "cell.json").stat().st_mtime_ns == stamp
