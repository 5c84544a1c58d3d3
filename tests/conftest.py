"""Shared fixtures: a small generated dataset in CelebA's format, made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """480 synthetic 32x32 faces (train/val/test by identity), CelebA txt layout."""
    from facedistill.pipeline.data.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("data") / "tiny"
    generate(out, SynthConfig(n=480, size=32, seed=3, images_per_identity=8), workers=1)
    return out
