"""Batched inference over a dataset: logits and/or the 1280-d top hidden layer, in order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

Progress = Callable[[int, int], None]


@dataclass
class Outputs:
    """Outputs of :func:`collect` in dataset order (numpy, float32)."""

    logits: np.ndarray | None  # [N, A]
    features: np.ndarray | None  # [N, F]
    labels: np.ndarray  # [N, A] float32 in {0, 1}
    indices: np.ndarray  # int64 [N]: dataset positions (a shard's subset under DDP)


def _loader(dataset: Dataset, batch_size: int, workers: int, device: torch.device) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                      pin_memory=device.type == "cuda", persistent_workers=False)


@torch.inference_mode()
def collect(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 128,
    workers: int = 0,
    device: str | torch.device = "cpu",
    logits: bool = True,
    features: bool = False,
    shard: tuple[int, int] = (0, 1),
    channels_last: bool = False,
    progress: Progress | None = None,
) -> Outputs:
    """Run ``model`` (a registered model, put in eval mode for the call) over ``dataset`` in
    fp32.

    ``shard=(rank, world)`` runs only items ``rank::world`` (distributed validation; the
    caller gathers). Validation and threshold search run in fp32 on purpose: the thresholds
    stored for export must match the fp32 model the export starts from.
    """
    device = torch.device(device)
    rank, world = shard
    indices = np.arange(rank, len(dataset), world, dtype=np.int64)  # type: ignore[arg-type]
    part = dataset if world == 1 else Subset(dataset, indices.tolist())
    was_training = model.training
    model.eval()
    outs: dict[str, list[torch.Tensor]] = {"logits": [], "features": [], "labels": []}
    done, total = 0, len(indices)
    try:
        for batch in _loader(part, batch_size, workers, device):
            x, y = batch[0], batch[1]
            x = x.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            z, f = model.forward_with_features(x)[:2]  # eval: (logits, features), any model
            if logits:
                outs["logits"].append(z.float().cpu())
            if features:
                outs["features"].append(f.float().cpu())
            outs["labels"].append(y.float())
            done += len(x)
            if progress is not None:
                progress(done, total)
    finally:
        model.train(was_training)

    def cat(name: str, wanted: bool) -> np.ndarray | None:
        if not wanted:
            return None
        return torch.cat(outs[name]).numpy() if outs[name] else np.zeros((0, 0), np.float32)

    return Outputs(cat("logits", logits), cat("features", features),
                   cat("labels", True), indices)  # type: ignore[arg-type]
