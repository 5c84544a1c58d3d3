"""One Trainer for teachers and students.

What it does, per epoch: a deterministic shuffle (seeded by ``seed`` and the epoch), training
with autocast (bf16 on a CPU that has it, AMP on CUDA), gradient clipping, a warm-up + cosine
learning rate per step, an optional EMA of the weights; then fp32 validation: mean balanced
accuracy with per-attribute thresholds searched on the validation split (Eq 7-9). It writes,
atomically, ``last.pt`` (with everything needed to resume) every epoch, ``best.pt`` when the
validation mean balanced accuracy improves, ``metrics.jsonl`` (one line per epoch) and at the end
``run.json``.

Resuming (``resume=True``) restarts after the last completed epoch. Every random stream is a
function of ``(seed, epoch)`` (shuffle, augmentation in the loader workers or the main process),
so with ``deterministic=True`` a resumed run ends with the same weights as an uninterrupted one.

Distributed: under ``torchrun`` (``WORLD_SIZE > 1``) the model is wrapped in
DistributedDataParallel (gloo on CPU, nccl on CUDA), each rank trains on its DistributedSampler
shard, validation is sharded and gathered, and only rank 0 writes.

What is trained is decided by an *objective*: a module called as ``objective(logits, features,
labels, images) -> (loss, {term: value})``. The default is BCE on the labels; distillation
objectives (``facedistill.pipeline.distill``) add teacher terms. Trainable parameters of the
objective (e.g. a training-only regressor) are optimised with the model, saved in ``last.pt`` for
resuming, and never become part of the deployed model.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from facedistill import __version__, metrics
from facedistill.attributes import ATTRIBUTES
from facedistill.config import TrainConfig
from facedistill.errors import ConfigError, UserError
from facedistill.io import atomic_write_json, atomic_write_text
from facedistill.nn.checkpoint import BEST, LAST, load_checkpoint, save_checkpoint
from facedistill.pipeline.infer import collect

METRICS_FILE, RUN_FILE = "metrics.jsonl", "run.json"
#: validate()'s per-attribute lists: checkpoint keys of their own, not epoch metrics
PER_ATTRIBUTE = ("thresholds", "val_balanced")


# -- environment ------------------------------------------------------------------------------


def cpu_has_bf16() -> bool:
    """True when this CPU has bf16 instructions (AVX512-BF16 or AMX)."""
    cpu = torch.cpu
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in probes)


def cpu_has_amx() -> bool:
    """True when this CPU has AMX tiles, the only CPU bf16 path measured to pay for training
    (``benchmarks/cpu_precision.py``: with AVX512-BF16 alone bf16 autocast is no faster)."""
    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def resolve_channels_last(setting: str) -> bool:
    """``auto`` = on: the faster layout for the students on the CI CPU class (1.06-1.5x per
    training step; TNet ~10% slower, ``benchmarks/cpu_precision.py``) and the usual one for
    autocast on GPUs."""
    return setting != "off"


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but torch sees no CUDA GPU", field="device")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 on a GPU that has it (fp16 on older ones) and on a CPU with AMX; fp32
    elsewhere, AVX512-BF16-only CPUs included (there bf16 autocast was measured no faster than
    fp32 for any of the four models, ``benchmarks/results/cpu_precision.md``)."""
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_amx() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise UserError("fp16 training needs a CUDA device; use bf16 or fp32 on the CPU",
                        field="precision")
    return precision


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def init_distributed(device: str) -> DistInfo:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        use_cuda = device != "cpu" and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return info


def set_determinism(deterministic: bool) -> None:
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of one epoch's random streams (shuffle, augmentation) on one rank."""
    return (seed * 1_000_003 + epoch * 7_919 + rank * 104_729) % (2**63 - 1)


# -- objective --------------------------------------------------------------------------------


class LabelObjective(nn.Module):
    """Binary cross-entropy on the 40 attribute labels (the "1-of-K" baseline), optionally with
    a weight on each attribute's positives (:func:`positive_weights`)."""

    def __init__(self, pos_weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("pos_weight", pos_weight, persistent=False)

    def forward(self, logits: torch.Tensor, features: torch.Tensor, labels: torch.Tensor,
                images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), labels,
                                                              pos_weight=self.pos_weight)
        return loss, {"labels": loss.detach()}


POS_WEIGHT_CAP = 50.0


def positive_weights(labels: np.ndarray, mode: str) -> torch.Tensor | None:
    """Per-attribute weights of the positives for ``TrainConfig.pos_weight`` from the training
    labels ``[N, A]`` in {0, 1}: None for ``none``; an attribute without positives or negatives
    gets 1."""
    if mode == "none":
        return None
    p = np.asarray(labels, dtype=np.float64).mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where((p > 0) & (p < 1), (1.0 - p) / p, 1.0)
    w = np.sqrt(ratio) if mode == "sqrt" else ratio
    return torch.tensor(np.clip(w, 1.0 / POS_WEIGHT_CAP, POS_WEIGHT_CAP), dtype=torch.float32)


class _WithFeatures(nn.Module):
    """What DDP wraps: one forward returning ``(logits, features)``, so gradients sync."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model.forward_with_features(x)


# -- schedule and optimiser -------------------------------------------------------------------


def lr_factor(step: int, total: int, warmup: int, floor: float) -> float:
    """Linear warm-up from ~0 to 1 over ``warmup`` steps, then cosine from 1 down to ``floor``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(cfg: TrainConfig, params: list[tuple[str, nn.Parameter]]
                    ) -> torch.optim.Optimizer:
    """AdamW or SGD; no weight decay on biases and BatchNorm parameters (1-d tensors).

    The fused kernels (one pass over all parameters) where every parameter lies on a CPU or a
    CUDA device: the same update, 3.6x (AdamW) and 4.3x (SGD) faster than the per-tensor loop
    for TNet's 13.8M parameters on a 2-core AVX2 CPU - 5-6% of a TNet training step.
    """
    decay = [p for _, p in params if p.ndim > 1]
    no_decay = [p for _, p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") for _, p in params) or None
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                               fused=fused)
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=fused)


# -- the trainer ------------------------------------------------------------------------------


class Reporter:
    """Progress hooks; the CLI draws bars from them, tests and workers ignore them."""

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None: ...

    def batch(self, done: int, total: int, loss: float) -> None: ...

    def validate(self, done: int, total: int) -> None: ...

    def epoch_end(self, record: dict[str, Any]) -> None: ...

    def message(self, text: str) -> None: ...


@dataclass
class TrainResult:
    out: Path
    best_epoch: int
    best: dict[str, Any]
    last: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


class Trainer:
    """Train ``model`` on ``train_set``, validate on ``val_set``, write the run to ``out``.

    ``data_record`` and ``extra`` go into every checkpoint verbatim (where the data came from;
    e.g. a student's teacher and selected neurons). ``attribute_names`` default to CelebA's 40.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        model: nn.Module,
        train_set: Dataset,
        val_set: Dataset,
        out: str | os.PathLike[str],
        *,
        objective: nn.Module | None = None,
        data_record: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        attribute_names: list[str] | None = None,
        reporter: Reporter | None = None,
    ) -> None:
        self.cfg = cfg
        self.out = Path(out)
        self.dist = init_distributed(cfg.device)
        set_determinism(cfg.deterministic)
        if self.dist.active and cfg.device != "cpu" and torch.cuda.is_available():
            self.device = torch.device("cuda", self.dist.local_rank)
        else:
            self.device = resolve_device(cfg.device)
        self.precision = resolve_precision(cfg.precision, self.device)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        self.channels_last = resolve_channels_last(cfg.channels_last)
        self.model = model.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if objective is None:
            train_labels = getattr(train_set, "labels", None)
            if cfg.pos_weight != "none" and train_labels is None:
                raise ConfigError("needs a dataset with a labels array", field="pos_weight")
            weights = positive_weights(train_labels, cfg.pos_weight) \
                if cfg.pos_weight != "none" else None
            if cfg.arch == "frl":  # its two branches: multi-net learning (or the CAM one alone)
                from facedistill.pipeline.frl import MNLObjective

                objective = MNLObjective(cfg.mnl, weights)
            else:
                objective = LabelObjective(weights)
        self.objective = objective.to(self.device)
        if self.channels_last:  # the teachers of a distillation run in the student's layout
            self.objective = self.objective.to(memory_format=torch.channels_last)
        self.train_set, self.val_set = train_set, val_set
        self.data_record = data_record or {}
        self.extra = extra or {}
        self.attribute_names = list(attribute_names or ATTRIBUTES)
        self.reporter = reporter if (reporter is not None and self.dist.main) else Reporter()
        if len(train_set) < cfg.batch_size * self.dist.world:  # type: ignore[arg-type]
            raise UserError(f"the training split has {len(train_set)} images, fewer than one "  # type: ignore[arg-type]
                            f"batch ({cfg.batch_size} x {self.dist.world} processes)",
                            field="batch_size")

        torch.manual_seed(cfg.seed)
        self.sampler = DistributedSampler(train_set, num_replicas=self.dist.world,
                                          rank=self.dist.rank, shuffle=True, seed=cfg.seed)
        self.loader_rng = torch.Generator()
        self.loader = DataLoader(
            train_set, batch_size=cfg.batch_size, sampler=self.sampler, drop_last=True,
            num_workers=cfg.workers, pin_memory=self.device.type == "cuda",
            generator=self.loader_rng, persistent_workers=False,
        )
        self.steps_per_epoch = len(self.loader)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.warmup_steps = round(cfg.warmup * self.steps_per_epoch)

        net = _WithFeatures(self.model)
        if self.dist.active:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(net, device_ids=ids)
        self.net = net
        params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        params += [(f"objective.{n}", p) for n, p in self.objective.named_parameters()
                   if p.requires_grad]
        self.optimizer = build_optimizer(cfg, params)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: lr_factor(s, self.total_steps, self.warmup_steps, cfg.min_lr),
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        self.ema = None
        if cfg.ema > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema),
                                     use_buffers=True)
        self.epoch = 0  # epochs completed
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.best_score = -math.inf
        self.best_epoch = 0

    # -- checkpoints ----------------------------------------------------------------------
    def _deploy_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def _state(self, module: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype)
                .contiguous().clone() for k, v in module.state_dict().items()}

    def _checkpoint(self, kind: str, val: dict[str, Any]) -> dict[str, Any]:
        ds = self.train_set
        record = getattr(ds, "transform_record", None)
        arch = self.model.config()  # type: ignore[operator]
        ckpt: dict[str, Any] = {
            "kind": kind,
            "arch": arch,
            "model": self._state(self._deploy_model()),
            "attributes": self.attribute_names,
            "preprocess": record["preprocess"] if record else None,
            "transform": record,
            "thresholds": val["thresholds"],
            "threshold_split": "val",
            "val_balanced": val["val_balanced"],
            "seed": self.cfg.seed,
            "config": self.cfg.to_record(),
            "epoch": self.epoch,
            "step": self.step,
            "metrics": {k: v for k, v in val.items() if k not in PER_ATTRIBUTE},
            "data": self.data_record,
            "extra": self.extra,
            "precision": self.precision,
            "world_size": self.dist.world,
        }
        if kind == "last":
            ckpt["resume"] = {
                "model": self._state(self.model),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "objective": self.objective.state_dict(),
                "history": self.history,
                "best_score": self.best_score,
                "best_epoch": self.best_epoch,
            }
        return ckpt

    def _write_metrics(self) -> None:
        lines = "".join(json.dumps(r, allow_nan=False) + "\n" for r in self.history)
        atomic_write_text(self.out / METRICS_FILE, lines)

    def resume(self) -> None:
        """Restore the state of ``out/last.pt``; training goes on after its epoch."""
        ckpt = load_checkpoint(self.out / LAST, prefer=LAST)
        state = ckpt.get("resume")
        if ckpt.get("kind") != "last" or not state:
            raise UserError("this checkpoint holds no resume state", path=ckpt["path"])
        saved = TrainConfig.from_record(ckpt.get("config", {}))
        keys = ("arch", "width", "size", "batch_size", "epochs", "optimizer", "seed", "variant")
        changed = [f"{k} {getattr(saved, k)!r} -> {getattr(self.cfg, k)!r}" for k in keys
                   if getattr(saved, k) != getattr(self.cfg, k)]
        if changed:
            raise UserError("cannot resume with different settings: " + "; ".join(changed),
                            path=ckpt["path"])
        if ckpt.get("world_size", 1) != self.dist.world:
            self.reporter.message(f"note: resuming a {ckpt.get('world_size')}-process run on "
                                  f"{self.dist.world} process(es); data order will differ")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.objective.load_state_dict(state["objective"])
        self.history = list(state["history"])
        self.best_score = float(state["best_score"])
        self.best_epoch = int(state["best_epoch"])
        self.epoch = int(ckpt["epoch"])
        self.step = int(ckpt["step"])
        self.reporter.message(f"resumed {self.out} after epoch {self.epoch}")

    # -- loops ------------------------------------------------------------------------------
    def _autocast(self) -> Any:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _sync_objective_grads(self) -> None:
        """DDP averages the model's gradients; the objective's own trainable parameters (a
        training-only regressor) are averaged here, so every rank keeps the same copy."""
        for p in self.objective.parameters():
            if p.requires_grad:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                dist.all_reduce(p.grad)
                p.grad /= self.dist.world

    def train_epoch(self) -> dict[str, Any]:
        cfg, epoch = self.cfg, self.epoch + 1
        seed = epoch_seed(cfg.seed, epoch, self.dist.rank)
        self.sampler.set_epoch(epoch)
        self.loader_rng.manual_seed(seed)
        torch.manual_seed(seed)  # augmentation when it runs in this process (workers=0)
        self.net.train()
        self.objective.train()
        if hasattr(self.objective, "set_epoch"):  # staged objectives (distill's two-stage)
            self.objective.set_epoch(epoch, cfg.epochs)
        sums: dict[str, float] = {}
        seen, start = 0, time.perf_counter()
        self.reporter.epoch_start(epoch, cfg.epochs, self.steps_per_epoch)
        for i, (x, y) in enumerate(self.loader):
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with self._autocast():
                # a model with a second branch (FRL's classification) returns its logits too
                logits, feats, *aux = self.net(x)
                loss, terms = self.objective(logits, feats, y, x, *aux)
            if not torch.isfinite(loss):
                raise UserError(f"the loss became {loss.item()} at epoch {epoch}, step "
                                f"{self.step + 1}; lower --lr or use --train-precision fp32")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.dist.active:
                self._sync_objective_grads()
            if cfg.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            self.step += 1
            n = len(x)
            seen += n
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach()) * n
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v) * n
            self.reporter.batch(i + 1, self.steps_per_epoch, sums["loss"] / seen)
        seconds = time.perf_counter() - start
        if self.dist.active:  # average the loss terms over ranks
            packed = torch.tensor([seen, *sums.values()], dtype=torch.float64)
            dist.all_reduce(packed)
            seen = int(packed[0])
            sums = dict(zip(sums, packed[1:].tolist(), strict=True))
        return {"train_" + k: v / seen for k, v in sums.items()} | {
            "train_seconds": round(seconds, 3),
            "train_images_per_s": round(seen / max(seconds, 1e-9), 2),
        }

    def validate(self) -> dict[str, Any]:
        """fp32 mean balanced accuracy on the validation split, thresholds searched on it."""
        model = self._deploy_model()
        out = collect(model, self.val_set, batch_size=max(self.cfg.batch_size, 128),
                      workers=self.cfg.workers, device=self.device,
                      shard=(self.dist.rank, self.dist.world),
                      channels_last=self.channels_last, progress=self.reporter.validate)
        logits, labels = out.logits, out.labels
        if self.dist.active:
            parts: list[Any] = [None] * self.dist.world
            dist.all_gather_object(parts, (out.indices, logits, labels))
            order = np.argsort(np.concatenate([p[0] for p in parts]))
            logits = np.concatenate([p[1] for p in parts])[order]
            labels = np.concatenate([p[2] for p in parts])[order]
        assert logits is not None
        search = metrics.search_thresholds(logits, labels, fallback=0.0)
        plain = metrics.binary_rates(logits, labels, 0.0)
        t = torch.from_numpy(logits)
        bce = nn.functional.binary_cross_entropy_with_logits(t, torch.from_numpy(labels))
        return {
            "val_loss": float(bce),
            "val_mean_balanced": float(np.mean(search.balanced)),
            "val_mean_accuracy": float(np.mean(plain.accuracy)),
            "val_mean_balanced_at_0": float(np.mean(plain.balanced)),
            "thresholds": [float(v) for v in search.thresholds],
            # per attribute, at its threshold (in-sample); what the runtime's reliability
            # floor reads; None where a column has no rows to rate
            "val_balanced": [float(v) if math.isfinite(v) else None for v in search.balanced],
        }

    def fit(self, *, resume: bool = False) -> TrainResult:
        cfg = self.cfg
        if resume:
            self.resume()
        if self.epoch >= cfg.epochs:
            self.reporter.message(f"{self.out} already finished {self.epoch} epochs")
        started = time.perf_counter()
        val: dict[str, Any] = {}
        try:
            while self.epoch < cfg.epochs:
                record = self.train_epoch()
                self.epoch += 1
                val = self.validate()
                record = {"epoch": self.epoch, "step": self.step,
                          "lr": self.optimizer.param_groups[0]["lr"], **record,
                          **{k: v for k, v in val.items() if k not in PER_ATTRIBUTE}}
                improved = val["val_mean_balanced"] > self.best_score
                if improved:
                    self.best_score, self.best_epoch = val["val_mean_balanced"], self.epoch
                record["best_epoch"] = self.best_epoch
                self.history.append(record)
                if self.dist.main:
                    if improved:
                        save_checkpoint(self.out / BEST, self._checkpoint("best", val))
                    save_checkpoint(self.out / LAST, self._checkpoint("last", val))
                    self._write_metrics()
                self.reporter.epoch_end(record)
                if self.dist.active:
                    dist.barrier()
        finally:
            if self.dist.active and dist.is_initialized():
                dist.destroy_process_group()
        summary = self._summary(time.perf_counter() - started)
        if self.dist.main:
            atomic_write_json(self.out / RUN_FILE, summary)
        best = next((r for r in self.history if r["epoch"] == self.best_epoch), {})
        return TrainResult(self.out, self.best_epoch, best,
                           self.history[-1] if self.history else {}, self.history, summary)

    def _summary(self, seconds: float) -> dict[str, Any]:
        from facedistill.nn.models import count_params

        best = next((r for r in self.history if r["epoch"] == self.best_epoch), {})
        return {
            "version": __version__,
            "out": str(self.out),
            "arch": self.model.config(),  # type: ignore[operator]
            "params": count_params(self.model),
            "config": self.cfg.to_record(),
            "device": str(self.device),
            "precision": self.precision,
            "channels_last": self.channels_last,
            "world_size": self.dist.world,
            "epochs": self.epoch,
            "best_epoch": self.best_epoch,
            "best": best,
            "last": self.history[-1] if self.history else {},
            "seconds_this_session": round(seconds, 2),
            "data": self.data_record,
        }


# -- building a run from a dataset folder -----------------------------------------------------


def data_record(index: Any) -> dict[str, Any]:
    """Where the data came from: enough to find it again and to notice it changed."""
    from facedistill.io import sha256_file

    attr_file = index.files.get("attributes")
    return {
        "root": str(Path(index.root).resolve()),
        "variant": index.variant,
        "splits": index.split_sizes(),
        "attributes_sha256": sha256_file(attr_file) if attr_file else None,
    }


RUN_FILES = (LAST, BEST, METRICS_FILE, RUN_FILE)
PREVIOUS = ".previous-run"  # where --force parks the run it replaces until the new one is done


def prepare_run(out: Path, *, resume: bool, force: bool) -> tuple[bool, bool]:
    """Refuse to overwrite an existing run unless asked. Returns ``(resume, replace)``: whether
    there is a run to resume (``resume`` with no ``last.pt`` yet starts a new run, so ``train
    --resume`` can be re-run until done, e.g. by ``make demo``), and whether ``force`` is to
    replace an existing run - which :func:`_replacing` does only once everything is validated.
    """
    existing = [p for p in (out / LAST, out / BEST) if p.exists()]
    if resume and (out / LAST).exists():
        return True, False
    if resume and existing:
        raise UserError(f"there is a {BEST} but no {LAST} to resume from; pass --force to "
                        "start over", path=out)
    if existing and not force:
        raise UserError("this folder already holds a run; pass --resume to continue it or "
                        "--force to start over", path=out)
    return False, bool(existing)


@contextmanager
def _replacing(out: Path, replace: bool) -> Iterator[None]:
    """Park the old run's files in ``out/.previous-run`` while the new run trains; put them
    back if the new run fails before it has a checkpoint of its own, drop them once it is done.
    A run killed outright leaves them parked: the next ``--force`` replaces them. Under torchrun
    only rank 0 moves files (it is the one that writes the run)."""
    if not replace or int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    parked = out / PREVIOUS
    if parked.exists():
        shutil.rmtree(parked)
    parked.mkdir()
    for name in RUN_FILES:
        if (out / name).exists():
            os.replace(out / name, parked / name)
    try:
        yield
    except BaseException:
        if not (out / BEST).exists() and not (out / LAST).exists():
            for name in RUN_FILES:
                (out / name).unlink(missing_ok=True)
                if (parked / name).exists():
                    os.replace(parked / name, out / name)
            shutil.rmtree(parked, ignore_errors=True)
        raise
    shutil.rmtree(parked, ignore_errors=True)


def train(
    cfg: TrainConfig,
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    resume: bool = False,
    force: bool = False,
    reporter: Reporter | None = None,
    objective: nn.Module | None = None,
    model: nn.Module | None = None,
    extra: dict[str, Any] | None = None,
    index: Any = None,
    unlabeled: str | os.PathLike[str] | None = None,
    unlabeled_n: int | None = None,
) -> TrainResult:
    """Train ``cfg.arch`` (or ``model``) on the CelebA-format folder ``data`` into ``out``.

    ``unlabeled``: a folder of face crops without labels (the first ``unlabeled_n`` of them)
    that joins the training split, seen through the same training transform; only an
    ``objective`` with teacher terms learns anything from it."""
    from facedistill.data.celeba import CelebAIndex
    from facedistill.nn.models import build_model
    from facedistill.pipeline.data.dataset import CelebA

    out = Path(out)
    resume, replace = prepare_run(out, resume=resume, force=force)
    if index is None:
        index = CelebAIndex.load(data, variant=cfg.variant)
    sizes = index.split_sizes()
    for split in ("train", "val"):
        if sizes[split] == 0:
            raise UserError(f"the {split} split is empty", path=index.files.get("partition"))
    train_set = CelebA(index, "train", variant=cfg.variant, size=cfg.size, train=True,
                       margin=cfg.margin, box_jitter=cfg.box_jitter, frame=cfg.frame)
    val_set = CelebA(index, "val", variant=cfg.variant, size=cfg.size, train=False,
                     margin=cfg.margin, frame=cfg.frame)
    if unlabeled is not None:
        from facedistill.pipeline.data.unlabeled import MixedTrainSet, UnlabeledImages

        if objective is None:
            raise ConfigError("unlabeled images need a distillation objective (a teacher)",
                              field="unlabeled")
        pool = UnlabeledImages(unlabeled, train_set.transform, index.attrs.shape[1],
                               limit=unlabeled_n)
        train_set = MixedTrainSet(train_set, pool)
    if model is None:
        torch.manual_seed(cfg.seed)  # the initial weights depend on the seed only
        if cfg.arch == "parts":  # part subnets on a trained FRL's regions
            from facedistill.pipeline.frl import parts_model

            model = parts_model(cfg, index)
        else:
            model = build_model(cfg.arch, width=cfg.width)
    min_size = getattr(model, "min_input_size", 1)
    if cfg.size < min_size:
        raise UserError(f"{cfg.arch} needs inputs of at least {min_size}x{min_size} pixels, "
                        f"not {cfg.size}", field="size")
    # everything is validated: only now does --force move the old run aside
    with _replacing(out, replace):
        trainer = Trainer(cfg, model, train_set, val_set, out, objective=objective,
                          data_record=data_record(index), extra=extra, reporter=reporter)
        return trainer.fit(resume=resume)


