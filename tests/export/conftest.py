"""Fixtures of the export tests: one full export of the tiny trained run, untrained
checkpoints of the matrix's architectures, all made once per session."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from facedistill.export.report import ExportReport

MATRIX_ARCHS = (("snet3", 0.25), ("tnet", 0.25))


@pytest.fixture(scope="session")
def tiny_export(tiny_teacher: Path, tmp_path_factory: pytest.TempPathFactory
                ) -> tuple[ExportReport, Path]:
    """``export_model`` of the tiny teacher run: fp32/fp16/int8 under both INT8 recipes (cpu,
    tensorrt), gate off (the val split has 47 images, so INT8's delta is noisy); returns
    (the typed report, out_dir)."""
    from facedistill.export import export_model

    out = tmp_path_factory.mktemp("export") / "tiny"
    report = export_model(tiny_teacher, out, calib_n=64, no_gate=True, trt_profile=(1, 4, 8),
                          int8_recipe="cpu,tensorrt")
    return report, out


@pytest.fixture(scope="session")
def untrained_checkpoints(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory
                          ) -> dict[str, Path]:
    """Checkpoints of freshly initialised models (32 px input, width 0.25), saved with the
    real checkpoint writer: the export matrix needs many architectures, not trained ones."""
    import torch

    from facedistill.attributes import ATTRIBUTES
    from facedistill.nn.checkpoint import save_checkpoint
    from facedistill.nn.models import build_model
    from facedistill.runtime.preprocess import Preprocess

    root = tmp_path_factory.mktemp("untrained")
    out = {}
    for arch, width in MATRIX_ARCHS:
        torch.manual_seed(0)
        model = build_model(arch, width=width).eval()
        # random BN statistics so that folding BN into the convolutions is exercised
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        path = root / f"{arch}.pt"
        save_checkpoint(path, {
            "kind": "best", "arch": model.config(), "model": model.state_dict(),
            "attributes": list(ATTRIBUTES),
            "preprocess": Preprocess(size=(32, 32)).to_record(),
            "thresholds": [0.1 * (j % 7 - 3) for j in range(len(ATTRIBUTES))],
            "data": {"root": str(tiny_synth), "variant": "aligned"},
        })
        out[arch] = path
    return out
