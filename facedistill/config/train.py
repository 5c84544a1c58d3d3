"""The configurations of ``train``, ``compress`` and ``select``: what the Trainer, the
distillation and the neuron selection take (the one source of their defaults)."""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import click

from facedistill.config.fields import check_choices, check_ranges, opt
from facedistill.errors import ConfigError

Arch = Literal["tnet", "snet1", "snet2", "snet3"]
#: the classification models (teacher first), which distil into each other
ARCHS: tuple[str, ...] = typing.get_args(Arch)
#: what ``train`` trains: those and the face-region localization net (the registry's models;
#: tests check them against facedistill.nn.models)
TrainArch = Literal["tnet", "snet1", "snet2", "snet3", "frl", "parts"]
TRAIN_ARCHS: tuple[str, ...] = typing.get_args(TrainArch)


@dataclass(frozen=True)
class TrainOptions:
    """How a model is trained (everything but which model): the Trainer's options, shared by
    ``train`` and ``compress``.

    ``precision`` (``--train-precision``): ``auto`` picks bf16 autocast on a CUDA GPU that has
    it (fp16 + GradScaler on older GPUs) and on a CPU with AMX, else fp32: on CPUs with
    AVX512-BF16 alone bf16 autocast was measured no faster than fp32
    (``benchmarks/cpu_precision.py``). ``channels_last``: ``auto`` = on (1.06-1.5x faster
    student training steps on the 2-core CI CPU, TNet ~10% slower; the usual layout for autocast
    on GPUs). ``ema``: when on, validation, thresholds and the deployed weights are the EMA's.
    ``warmup`` and ``epochs`` are in epochs. ``pos_weight``: weight of each attribute's positives
    in the label loss, from the training split's prevalence p: ``none`` (1, plain BCE), ``sqrt``
    (``sqrt((1-p)/p)``) or ``balanced`` (``(1-p)/p``); capped at 50.
    """

    width: float = opt(1.0, "Width multiplier of the convs (not the final 1280).")
    size: int = opt(64, "Input side, pixels.")
    variant: Literal["aligned", "wild"] = opt(
        "aligned", "Aligned crops or in-the-wild photos cut by bbox.")
    margin: float = opt(0.2, "Crop margin around the face box (variant wild), a fraction of "
                             "its size.")
    frame: Literal["face", "photo"] = opt(
        "face", "Variant wild: what the net sees, the face box's crop (a detector's box) or the "
                "whole photo padded to a square (no detector; the FRL net finds the face).")
    box_jitter: float = opt(0.0, "Variant wild: loosen each training face box at random, its "
                                 "centre moved and its size scaled by up to this fraction (as a "
                                 "loose detector's boxes); 0 = off.")
    epochs: int = opt(10)
    batch_size: int = opt(64, "Per process.")
    optimizer: Literal["adamw", "sgd"] = opt("adamw")
    lr: float = opt(2e-3, "Peak learning rate (after warm-up).")
    weight_decay: float = opt(0.05)
    momentum: float = opt(0.9, "SGD momentum.")
    warmup: float = opt(1.0, "Warm-up length in epochs; then cosine decay.",
                        name="warmup_epochs")
    min_lr: float = opt(0.01, "The cosine ends at lr * min_lr.")
    grad_clip: float = opt(5.0, "Max global gradient norm; 0 = off.")
    pos_weight: Literal["none", "sqrt", "balanced"] = opt(
        "none", "Weight on each attribute's positives in the label loss: balanced = (1-p)/p "
                "from the training prevalence p, sqrt = its square root.")
    ema: float = opt(0.0, "EMA decay of the weights (e.g. 0.999); 0 = off.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = opt(
        "auto", "auto: bf16 on GPUs that have it and on CPUs with AMX, fp16 AMP on older GPUs, "
                "else fp32.", name="train_precision")
    channels_last: Literal["auto", "on", "off"] = opt(
        "auto", "Memory layout of the model and batches; auto = on.")
    device: str = opt("auto", "auto, cpu, cuda or cuda:N.")
    workers: int = opt(1, "DataLoader worker processes.")
    seed: int = opt(0)
    deterministic: bool = opt(False, "Deterministic kernels: a resumed run ends bit-identical.")

    def __post_init__(self) -> None:
        check_choices(self)
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"must be one of auto, cpu, cuda, cuda:N, not {self.device!r}",
                              field="device")
        check_ranges(self, positive=("width", "size", "epochs", "batch_size", "lr"),
                     at_least=dict.fromkeys(("weight_decay", "momentum", "warmup", "min_lr",
                                             "grad_clip", "workers", "box_jitter"), 0))
        if self.box_jitter >= 0.5:
            raise ConfigError(f"must be < 0.5 (half the box), not {self.box_jitter!r}",
                              field="box_jitter")
        if self.box_jitter > 0 and self.variant != "wild":
            raise ConfigError("needs --variant wild (aligned crops have no box)",
                              field="box_jitter")
        if self.frame == "photo" and self.variant != "wild":
            raise ConfigError("needs --variant wild (an aligned crop is no photo)", field="frame")
        if self.frame == "photo" and self.box_jitter > 0:
            raise ConfigError("a whole photo has no face box to loosen", field="box_jitter")
        if not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"EMA decay must be in [0, 1), not {self.ema!r}", field="ema")

    def for_arch(self, arch: str) -> TrainConfig:
        """These options for model ``arch``."""
        return TrainConfig(arch=arch, **{f.name: getattr(self, f.name)
                                         for f in fields(TrainOptions)})


@dataclass(frozen=True)
class TrainConfig(TrainOptions):
    """Everything that decides how a model is trained; stored in every checkpoint."""

    arch: TrainArch = opt("tnet", "Model to train from labels (frl: the face-region "
                                  "localization net, trained with --mnl).")
    mnl: Literal["off", "joint", "mutual"] = opt(
        "off", "FRL's multi-net learning: off = the localization branch alone; joint = with the "
               "classification branch on the shared trunk; mutual = also each branch fitting the "
               "other's probabilities.")

    frl: str | None = opt(None, "arch parts: the trained FRL run (train --arch frl) whose boxes "
                                "cut the regions the part subnets see.", metavar="RUN")
    part_size: int = opt(32, "arch parts: side of each region's crop, pixels.")
    part_boxes: Literal["frl", "fixed"] = opt(
        "frl", "arch parts: each image's boxes from the FRL, or the FRL's mean box per region "
               "for every image (the control).")
    box_rule: Literal["minmax", "signed", "abs", "contrast"] = opt(
        "minmax", "arch parts: how the FRL's maps become boxes (benchmarks/frl_table1.py "
                  "chooses it on val).")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self, at_least={"part_size": 8})
        if self.arch == "parts" and not self.frl:
            raise ConfigError("arch parts needs the FRL run whose boxes it uses (--frl RUN)",
                              field="frl")
        if self.frl and self.arch != "parts":
            raise ConfigError(f"an FRL run feeds the part subnets (--arch parts), not "
                              f"{self.arch}", field="frl")
        if self.mnl != "off" and self.arch != "frl":
            raise ConfigError(f"multi-net learning is FRL's (--arch frl), not {self.arch}'s",
                              field="mnl")

    def to_record(self) -> dict[str, Any]:
        """The record stored in checkpoints (and hashed by the pipeline); ``mnl``,
        ``box_jitter``, ``frame`` and the part subnets' settings only where on, so that a
        record is what it was before they existed."""
        record = asdict(self)
        for name, off in (("mnl", "off"), ("box_jitter", 0.0), ("frame", "face"), ("frl", None),
                          ("part_size", 32), ("box_rule", "minmax"), ("part_boxes", "frl")):
            if record[name] == off:
                del record[name]
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in known})


def parse_term_weights(items: tuple[str, ...] | list[str]) -> dict[str, float] | None:
    """``["selected=0.3", ...]`` (``--weight``, the config's ``weight``) -> ``{"selected":
    0.3}``; ``None`` when empty. Terms and values are checked by the objective."""
    out: dict[str, float] = {}
    for item in items:
        term, sep, value = str(item).partition("=")
        try:
            if not sep:
                raise ValueError
            out[term.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"expected TERM=WEIGHT, e.g. selected=0.3, not {item!r}",
                              field="weight") from None
    return out or None


@dataclass(frozen=True)
class DistillConfig:
    """What a student learns from its teachers (``compress``'s own options)."""

    method: Literal["selected", "hint", "soft", "labels"] = opt(
        "selected", "selected: imitate the K selected teacher neurons; hint: all 1280; soft: "
                    "the teacher's soft targets; labels: no teacher (baseline).")
    k: int = opt(512, "Neurons to select (method selected, when no --selection is given).")
    temperature: float = opt(1.0, "Softening of the soft targets (1 = the paper's baseline).")
    two_stage: int = opt(0, "Epochs of feature imitation alone before switching to labels; "
                            "0 = joint.")
    weight: tuple[str, ...] = opt(
        (), "Override one loss term's weight (labels, soft, hint, selected); repeatable, e.g. "
            "--weight selected=0.3.", metavar="TERM=W")
    split: Literal["test", "val"] = opt("test", "Split of the student-vs-teacher comparison.")
    unlabeled: Path | None = opt(
        None, "Folder of face crops without labels: the teacher also supervises the student on "
              "them (any folder of images, or 'data synth --unlabeled' output).")
    unlabeled_n: int | None = opt(None, "Use only the first N images of --unlabeled "
                                        "[default: all].")

    def __post_init__(self) -> None:
        check_choices(self)
        check_ranges(self, at_least={"k": 1, "two_stage": 0, "unlabeled_n": 1})
        self.weights  # noqa: B018 - a bad TERM=W is an error now, naming the option

    @property
    def weights(self) -> dict[str, float] | None:
        """The loss-term weight overrides, ``{"selected": 0.3}``, or None."""
        return parse_term_weights(self.weight)

    def key_record(self) -> dict[str, Any]:
        """The pipeline's stage key of a student: the parsed weights (its shape before the
        configs were typed, so existing run folders keep their students)."""
        return {"method": self.method, "k": self.k, "temperature": self.temperature,
                "two_stage": self.two_stage, "split": self.split,
                "unlabeled": None if self.unlabeled is None else str(self.unlabeled),
                "unlabeled_n": self.unlabeled_n, "weights": self.weights}


@dataclass(frozen=True)
class SelectConfig:
    """How the teacher neurons a student imitates are selected (mean field on an MRF)."""

    k: int = opt(512, "Neurons to keep.")
    solver: Literal["fast", "exact"] = opt(
        "fast", "fast: hashed (response) or piecewise-linear (profile) messages, O(N) per "
                "iteration; exact: dense, O(N^2).")
    split: Literal["val", "train", "test"] = opt("val", "Images whose responses are scored.")
    redundancy: Literal["response", "profile"] = opt(
        "response", "response: correlation of the neurons' responses (sharpened by --bits); "
                    "profile: Gaussian kernel on their attribute-accuracy rows (--sigma).")
    lam: float | None = opt(None, "Weight of redundancy against informativeness [default: 128 "
                                  "for response, 1 for profile].")
    bits: int = opt(24, "Sharpness of the response kernel's near-copy term: (1-t)^bits + "
                        "t^bits, t = angle / pi.")
    shared: float = opt(0.016, "Weight of the response kernel's shared-variance term, corr^2 "
                               "(0: near-copies only).")
    tables: int = opt(32, "Hash tables the fast solver estimates response messages with.")
    sigma: float = opt(0.1, "Width of the profile kernel on normalised accuracies.")
    polarity: Literal["positive", "both"] = opt(
        "positive", "both: a neuron may also signal an attribute by falling.")
    batch_size: int = opt(256, type=click.IntRange(min=1), key=False)
    workers: int = opt(1, "DataLoader worker processes.", key=False)
    device: str = opt("auto", "auto, cpu, cuda or cuda:N.", key=False)

    def __post_init__(self) -> None:
        check_choices(self)
        check_ranges(self, at_least={"k": 1, "batch_size": 1, "tables": 1, "bits": 1,
                                     "shared": 0})


@dataclass(frozen=True)
class EvalConfig:
    """How a checkpoint is scored (``eval``, and every evaluation the library makes)."""

    split: Literal["test", "val", "train"] = opt("test", "Split to score.")
    thresholds: Literal["val", "checkpoint"] = opt(
        "val", "Search per-attribute thresholds on the val split now, or use the stored ones.")
    variant: Literal["run", "aligned", "wild"] = opt(
        "run", "Images to score: the run's own variant, aligned crops, or face-box crops of the "
               "wild photos (an aligned model on detector boxes: the cost of misalignment).")
    batch_size: int = opt(128, type=click.IntRange(min=1))
    workers: int = opt(1, "DataLoader worker processes.")
    device: str = opt("auto", "auto, cpu, cuda or cuda:N.")

    def __post_init__(self) -> None:
        check_choices(self)
        check_ranges(self, at_least={"batch_size": 1, "workers": 0})
