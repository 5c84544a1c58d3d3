"""Every command in the README works as written.

The README's shell and Python blocks run in order, in a scratch folder laid out like a fresh
clone after `make install`: the Makefile, pyproject.toml and the lock file, `.venv` (this
test's interpreter's environment, which `make` is told not to rebuild) and `configs/demo.toml`
- replaced by `tests/readme/demo.toml`, the same tables and keys at a size that runs in about a
minute. `pip install` lines are resolved offline against this environment (`--dry-run
--no-index`); `make test` is the command running this test, so it is not started again. A
command written inline in the README's prose (`facedistill ...`) runs too.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TINY = Path(__file__).parent / "readme" / "demo.toml"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"(?<!`)`((?:facedistill|make|pip|python|torchrun) [^`]*)`(?!`)")


def blocks(text: str) -> list[tuple[str, str]]:
    """The README's fenced blocks as (language, body), in order."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def inline_commands(text: str) -> list[str]:
    """Commands written inline in the prose (outside fenced blocks)."""
    return INLINE.findall(FENCE.sub("", text))


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))


def test_readme_blocks_are_shell_or_python_and_name_real_targets() -> None:
    text = README.read_text()
    langs = [lang for lang, _ in blocks(text)]
    assert langs and set(langs) <= {"bash", "python"}, langs
    targets = make_targets()
    used = {w.split()[1] for _, body in blocks(text) for w in body.splitlines()
            if w.startswith("make ")}
    used |= {c.split()[1] for c in inline_commands(text) if c.startswith("make ")}
    assert used and used <= targets, used - targets
    # the prose's inline commands are ones this file runs (facedistill) or a make target
    assert all(c.split()[0] in ("facedistill", "make") for c in inline_commands(text))


def test_tiny_config_mirrors_the_demo_config() -> None:
    """The README test runs the demo's commands against the same tables and keys."""
    demo = tomllib.loads((ROOT / "configs" / "demo.toml").read_text())
    tiny = tomllib.loads(TINY.read_text())

    def tables(cfg: dict, prefix: str = "") -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for name, value in cfg.items():
            sub = {k: v for k, v in value.items() if isinstance(v, dict)}
            out[prefix + name] = {k for k, v in value.items() if not isinstance(v, dict)}
            out.update(tables(sub, f"{prefix}{name}."))
        return out

    got, want = tables(tiny), tables(demo)
    assert set(got) == set(want)
    for name, keys in want.items():
        assert keys <= got[name], (name, keys - got[name])
    assert tiny["pipeline"]["out"] == demo["pipeline"]["out"]
    assert tiny["data"]["synth"]["out"] == demo["data"]["synth"]["out"]


def _sandbox(tmp: Path) -> Path:
    box = tmp / "clone"
    (box / "requirements").mkdir(parents=True)
    (box / "configs").mkdir()
    for rel in ("Makefile", "pyproject.toml", "requirements/lock.txt"):
        shutil.copy2(ROOT / rel, box / rel)
    shutil.copy(TINY, box / "configs" / "demo.toml")
    (box / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    return box


def _env() -> dict[str, str]:
    """The user's shell: this environment's bin is not on PATH until the README activates it."""
    env = dict(os.environ)
    venv_bin = str(Path(sys.prefix) / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p and p != venv_bin)
    env.pop("VIRTUAL_ENV", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, (f"{shlex.join(args)[:300]}\nexit {proc.returncode}\n"
                                  f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _bash_block(body: str, box: Path) -> str:
    lines = [ln for ln in body.splitlines() if ln.strip()]
    if all(ln.startswith("pip install") for ln in lines):
        for ln in lines:  # resolved offline against this environment: the extras exist and fit
            spec = shlex.split(ln.split("#")[0])[2:]
            _run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index",
                  "--no-build-isolation", "--quiet", *spec], ROOT)
        return ""
    if lines == ["make test"]:
        assert "test" in make_targets()  # the command that runs this test
        return ""
    # `make` must not rebuild .venv, which is this test's own environment
    script = 'make() { command make -o .venv/.installed "$@"; }\n' + body
    return _run(["bash", "-e", "-o", "pipefail", "-c", script], box).stdout


@pytest.mark.slow
def test_every_readme_command_runs_as_written(tmp_path: Path) -> None:
    text = README.read_text()
    box = _sandbox(tmp_path)
    outputs = []
    for lang, body in blocks(text):
        if lang == "python":
            outputs.append(_run([str(box / ".venv" / "bin" / "python"), "-c", body], box).stdout)
        else:
            outputs.append(_bash_block(body, box))
    for cmd in inline_commands(text):
        if cmd.startswith("facedistill "):
            _run([str(box / ".venv" / "bin" / "facedistill"), *shlex.split(cmd)[1:]], box)

    # what the quickstart promises is there: the report, and the file `predict` names
    report = (box / "runs" / "demo" / "report.html").read_text()
    assert "class='verdict'" in report and "data:image/png;base64," in report
    joined = "\n".join(outputs)
    assert "threshold (prob.)" in joined  # predict's table
    assert re.search(r"\[\('\w+', 0\.\d+\)", joined)  # the Python block's positives
    # the step-by-step verbs wrote what the next one reads
    assert (box / "runs" / "tnet" / "best.pt").exists()
    assert (box / "runs" / "tnet" / "selection" / "selection.json").exists()
    export = box / "runs" / "snet3-selected" / "export"
    assert {p.name for p in export.glob("*.onnx")} >= {"snet3.fp32.onnx", "snet3.int8.onnx"}
