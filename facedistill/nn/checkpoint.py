"""Checkpoints: one plain dict, written atomically, read back with ``weights_only=True``.

A checkpoint holds only tensors, numbers, strings, lists and dicts, so ``torch.load(path,
weights_only=True)`` reads it and nothing in it can run code. Keys (format
``facedistill.checkpoint/v1``):

=================  ==========================================================================
``format``         the format name above
``version``        the facedistill version that wrote it
``kind``           ``best`` (the deploy artifact) or ``last`` (also holds the resume state)
``arch``           ``{"arch", "width", "num_attrs"}``: ``build_model(**arch)`` rebuilds it
``model``          the weights to deploy (the EMA's when EMA is on), fp32, on the CPU
``attributes``     the attribute names, in output order
``preprocess``     the eval preprocessing record (size, normalisation, ...) the runtime replays
``transform``      the train transform record (preprocess + augmentation)
``thresholds``     per-attribute decision thresholds on the *logits* (positive iff logit >=
                   threshold), searched on ``threshold_split``
``val_balanced``   per attribute, the balanced accuracy on ``threshold_split`` at its
                   threshold (None where undefined); exported into the model's metadata, where
                   the runtime flags attributes under its reliability floor. Checkpoints written
                   before it lack it (optional)
``seed``           the run's seed; ``config`` the whole TrainConfig record
``epoch``          epochs completed; ``metrics`` that epoch's validation metrics
``data``           where the training data came from (root, variant, attribute file sha256)
``extra``          anything the caller adds (students: the teacher and the selected neurons)
``resume``         (``last`` only) optimizer, scheduler, scaler, EMA, objective, history
=================  ==========================================================================
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from facedistill import __version__
from facedistill.errors import UserError
from facedistill.io import atomic_path

FORMAT = "facedistill.checkpoint/v1"
REQUIRED = ("format", "arch", "model", "attributes", "preprocess", "thresholds")
BEST, LAST = "best.pt", "last.pt"


class CheckpointError(UserError):
    """A checkpoint file is missing, corrupt or not one of ours."""


def save_checkpoint(path: str | os.PathLike[str], ckpt: dict[str, Any]) -> Path:
    """Write ``ckpt`` to ``path`` atomically (a crash leaves the previous file intact)."""
    body = {"format": FORMAT, "version": __version__, **ckpt}
    with atomic_path(path) as tmp:
        torch.save(body, tmp)
    return Path(path)


def resolve_checkpoint(path: str | os.PathLike[str], prefer: str = BEST) -> Path:
    """A ``.pt`` file as given, or a run folder's ``best.pt`` (``last.pt`` when no best)."""
    p = Path(path)
    if p.is_dir():
        for name in (prefer, BEST, LAST):
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"no {BEST} or {LAST} in this run folder", path=p)
    if not p.exists():
        raise CheckpointError("no such checkpoint file or run folder", path=p)
    return p


def load_checkpoint(path: str | os.PathLike[str], prefer: str = BEST) -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``) onto the CPU and check its keys."""
    p = resolve_checkpoint(path, prefer)
    if not zipfile.is_zipfile(p):
        raise CheckpointError("not a PyTorch checkpoint (truncated or corrupt?)", path=p)
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(f"refused to load: it holds Python objects{what}, not only "
                              "tensors and plain data (weights_only=True)", path=p) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint (truncated or corrupt?): {reason}",
                              path=p) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"not a facedistill checkpoint (format {got!r}, expected "
                              f"{FORMAT!r})", path=p)
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint lacks {', '.join(missing)}", path=p)
    ckpt["path"] = str(p)
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any]) -> torch.nn.Module:
    """Rebuild the model of ``ckpt`` and load its weights (eval mode, CPU, fp32)."""
    from facedistill.nn.models import build_model

    model = build_model(**ckpt["arch"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"weights do not fit {ckpt['arch']}: {first}",
                              path=ckpt.get("path")) from None
    return model.eval()
