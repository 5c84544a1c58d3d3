"""The lock file that `make test` and `make demo` install from agrees with pyproject.toml:
every dependency of the core and of the extras the Makefile installs is pinned, and every pin
lies inside pyproject's range (a stale lock would install what the package does not allow)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

packaging = pytest.importorskip("packaging")
from packaging.requirements import Requirement  # noqa: E402
from packaging.utils import canonicalize_name  # noqa: E402
from packaging.version import Version  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
MAKE_EXTRAS = ("train", "dev")


def _pins() -> dict[str, Version]:
    pins = {}
    for n, line in enumerate(LOCK.read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        name, sep, version = text.partition("==")
        assert sep and version, f"{LOCK}:{n}: not an exact pin: {line!r}"
        key = canonicalize_name(name)
        assert key not in pins, f"{LOCK}:{n}: {name} pinned twice"
        pins[key] = Version(version)
    return pins


def _requirements() -> list[Requirement]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in MAKE_EXTRAS:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return [r for r in reqs if r.marker is None or r.marker.evaluate()]


def test_lock_pins_every_requirement_inside_its_range() -> None:
    pins = _pins()
    assert canonicalize_name("facedistill") not in pins
    for req in _requirements():
        key = canonicalize_name(req.name)
        assert key in pins, f"{req.name} ({req}) is not pinned in {LOCK}: run `make lock`"
        assert req.specifier.contains(pins[key], prereleases=True), (
            f"{LOCK} pins {req.name}=={pins[key]}, outside pyproject's {req}: run `make lock`")


def test_lock_pins_the_cpu_torch_the_makefile_installs() -> None:
    makefile = (ROOT / "Makefile").read_text()
    torch = next(line.split("?=", 1)[1].strip() for line in makefile.splitlines()
                 if line.startswith("TORCH"))
    assert torch == f"torch=={_pins()['torch']}"
    assert "-c $(LOCK)" in makefile
