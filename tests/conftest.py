"""Shared fixtures: a small generated dataset in CelebA's format, made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """480 synthetic 32x32 faces (train/val/test by identity), CelebA txt layout."""
    from facedistill.data.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("data") / "tiny"
    generate(out, SynthConfig(n=480, size=32, seed=3, images_per_identity=8), workers=1)
    return out


@pytest.fixture(scope="session")
def tiny_teacher(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small network trained for 2 epochs on ``tiny_synth``: a stand-in teacher run."""
    from facedistill.config import TrainConfig
    from facedistill.pipeline.train import train

    out = tmp_path_factory.mktemp("runs") / "teacher"
    cfg = TrainConfig(arch="snet3", width=0.5, size=32, epochs=2, batch_size=32, workers=0,
                      lr=3e-3, warmup=0.5, seed=1)
    train(cfg, tiny_synth, out)
    return out


@pytest.fixture(scope="session")
def wild(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """240 synthetic wild photos at 32 px (face boxes, landmarks), made once per session;
    tests only read it."""
    from facedistill.config import SynthConfig
    from facedistill.data.synth import generate

    out = tmp_path_factory.mktemp("data") / "wild"
    generate(out, SynthConfig(n=240, size=32, seed=5, wild=True, images_per_identity=8),
             workers=1)
    return out


@pytest.fixture
def tmpfs(tmp_path: Path):  # type: ignore[no-untyped-def]
    """``tmpfs(size)``: a real tmpfs of ``size`` (e.g. ``"2m"``) mounted under tmp_path (needs
    root and CAP_SYS_ADMIN; the test is skipped elsewhere), unmounted afterwards."""
    import os
    import subprocess

    mounted: list[Path] = []

    def mount(size: str) -> Path:
        mnt = tmp_path / f"tmpfs{len(mounted)}"
        mnt.mkdir()
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(mnt)
        return mnt

    try:
        yield mount
    finally:
        for mnt in mounted:  # lazy: a failed writer may hold its file open until collected
            subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def small_disk(tmpfs) -> Path:  # type: ignore[no-untyped-def]
    """A real 1 MiB tmpfs (needs root and CAP_SYS_ADMIN; skipped elsewhere)."""
    return tmpfs("1m")
