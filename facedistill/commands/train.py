"""``facedistill train``, and the Trainer options ``compress`` shares."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from facedistill.clikit import EpochReporter, console, print_json
from facedistill.config import TrainConfig

_TRAIN = TrainConfig()


def _train_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The Trainer's options, shared by ``train`` and ``compress``; defaults from TrainConfig."""
    t = _TRAIN
    options = [
        click.option("--data", type=click.Path(file_okay=False, path_type=Path),
                     default="data/synth", show_default=True, help="CelebA-format folder."),
        click.option("--variant", type=click.Choice(["aligned", "wild"]), default=t.variant,
                     show_default=True, help="Aligned crops or in-the-wild photos cut by bbox."),
        click.option("--size", type=int, default=t.size, show_default=True,
                     help="Input side, pixels."),
        click.option("--width", type=float, default=t.width, show_default=True,
                     help="Width multiplier of the convs (not the final 1280)."),
        click.option("--epochs", type=int, default=t.epochs, show_default=True),
        click.option("--batch-size", type=int, default=t.batch_size, show_default=True,
                     help="Per process."),
        click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default=t.optimizer,
                     show_default=True),
        click.option("--lr", type=float, default=t.lr, show_default=True,
                     help="Peak learning rate (after warm-up)."),
        click.option("--weight-decay", type=float, default=t.weight_decay, show_default=True),
        click.option("--warmup-epochs", "warmup", type=float, default=t.warmup, show_default=True,
                     help="Warm-up length in epochs; then cosine decay."),
        click.option("--grad-clip", type=float, default=t.grad_clip, show_default=True,
                     help="Max global gradient norm; 0 = off."),
        click.option("--pos-weight", type=click.Choice(["none", "sqrt", "balanced"]),
                     default=t.pos_weight, show_default=True,
                     help="Weight on each attribute's positives in the label loss: balanced = "
                          "(1-p)/p from the training prevalence p, sqrt = its square root."),
        click.option("--ema", type=float, default=t.ema, show_default=True,
                     help="EMA decay of the weights (e.g. 0.999); 0 = off."),
        click.option("--train-precision", "precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
                     default=t.precision, show_default=True,
                     help="auto: bf16 on GPUs that have it and on CPUs with AMX, fp16 AMP on "
                          "older GPUs, else fp32."),
        click.option("--channels-last", type=click.Choice(["auto", "on", "off"]),
                     default=t.channels_last, show_default=True,
                     help="Memory layout of the model and batches; auto = on."),
        click.option("--device", default=t.device, show_default=True,
                     help="auto, cpu, cuda or cuda:N."),
        click.option("--workers", type=int, default=t.workers, show_default=True,
                     help="DataLoader worker processes."),
        click.option("--seed", type=int, default=t.seed, show_default=True),
        click.option("--deterministic", is_flag=True,
                     help="Deterministic kernels: a resumed run ends bit-identical."),
        click.option("--resume", is_flag=True, help="Continue the run in --out after its "
                     "last completed epoch (a new run when there is none yet)."),
        click.option("--force", is_flag=True, help="Start over in an --out that holds a run."),
        click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON."),
        click.option("--quiet", is_flag=True, help="No progress output."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _train_config(arch: str, kw: dict[str, Any]) -> TrainConfig:
    return TrainConfig.from_record({**kw, "arch": arch})


@click.command("train")
@click.option("--arch", type=click.Choice(["tnet", "snet1", "snet2", "snet3"]),
              default=_TRAIN.arch, show_default=True, help="Model to train from labels.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder [default: runs/ARCH].")
@_train_options
def train_cmd(arch: str, out: Path | None, data: Path, resume: bool, force: bool,
              as_json: bool, quiet: bool, **kw: Any) -> None:
    """Train a model from the attribute labels (teacher, or a student baseline).

    Runs unchanged under torchrun: torchrun --nproc_per_node=N -m facedistill train ...
    """
    from facedistill.pipeline.train import train

    cfg = _train_config(arch, kw)
    out = out or Path("runs") / arch
    reporter = EpochReporter(enabled=not quiet and not as_json)
    result = train(cfg, data, out, resume=resume, force=force, reporter=reporter)
    if result.summary.get("world_size", 1) > 1 and _rank() != 0:
        return
    if as_json:
        print_json(result.summary)
        return
    best = result.best
    console.print(f"[bold]{out}[/]: best epoch {result.best_epoch}, val mean balanced accuracy "
                  f"{100 * best.get('val_mean_balanced', float('nan')):.2f}% "
                  f"(best.pt, last.pt, metrics.jsonl, run.json)")


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


command = train_cmd
