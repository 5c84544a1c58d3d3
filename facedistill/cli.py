"""The ``facedistill`` command line: thin; parses, calls the library, prints.

Errors a user can fix (a bad file, a bad option) print one line ``error: ...`` on stderr and
exit with code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from facedistill import __version__
from facedistill.clikit import (
    EXIT_USER_ERROR,
    _make_progress,
    console,
    err_console,
    progress_bar,
)
from facedistill.clikit import print_json as _print_json
from facedistill.config import SynthConfig, TrainConfig, parse_term_weights
from facedistill.errors import ConfigError, UserError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="facedistill")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML file with option defaults per command ([data.synth], [train], ...); "
                   "options on the command line override it.")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, debug: bool) -> None:
    """Compress face-attribute CNNs and ship them to CPUs, GPUs and Jetson.

    \b
    data synth -> train (teacher) -> select (neurons) -> compress (student)
               -> export (ONNX / TensorRT) -> bench -> predict
    pipeline runs them all, resumably.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    ctx.obj["config"] = config_path
    if config_path is not None:
        from facedistill.config import load_default_map

        ctx.default_map = load_default_map(ctx.command, config_path)


# -- data ----------------------------------------------------------------------------------


@cli.group()
def data() -> None:
    """Datasets: generate the embedded synthetic one, validate any CelebA-format folder."""


_SYNTH = SynthConfig()


@data.command("synth")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default="data/synth",
              show_default=True, help="Output folder (CelebA layout).")
@click.option("--n", type=int, default=_SYNTH.n, show_default=True, help="Number of images.")
@click.option("--size", type=int, default=_SYNTH.size, show_default=True,
              help="Side of the aligned square images, pixels.")
@click.option("--seed", type=int, default=_SYNTH.seed, show_default=True)
@click.option("--wild/--no-wild", default=_SYNTH.wild, show_default=True,
              help="Also write in-the-wild photos (img_celeba/) with bbox and landmark files.")
@click.option("--images-per-identity", type=float, default=_SYNTH.images_per_identity,
              show_default=True, help="Mean number of photos per identity.")
@click.option("--workers", type=int, default=None, help="Processes [default: all cores].")
@click.option("--unlabeled", is_flag=True,
              help="Write the images only, labels withheld: a pool for 'compress --unlabeled' "
                   "(use another --seed than the labelled set's, for other people).")
@click.option("--force", is_flag=True, help="Replace an existing, different dataset at --out.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def data_synth(out: Path, n: int, size: int, seed: int, wild: bool, images_per_identity: float,
               workers: int | None, unlabeled: bool, force: bool, as_json: bool,
               quiet: bool) -> None:
    """Generate the embedded synthetic face-attribute dataset (CelebA's file format)."""
    from facedistill.pipeline.data.synth import generate

    cfg = SynthConfig(n=n, size=size, seed=seed, wild=wild,
                      images_per_identity=images_per_identity)
    with progress_bar("synth", enabled=not quiet and not as_json) as update:
        result = generate(out, cfg, workers=workers, force=force, progress=update,
                          withhold_labels=unlabeled)
    if as_json:
        _print_json({"out": str(out), **result})
        return
    _print_synth_summary(out, result)


def _print_synth_summary(out: Path, result: dict) -> None:
    from rich.table import Table

    cfg = result["config"]
    if result["reused"]:
        console.print(f"[bold]{out}[/] already holds this dataset (same config); reused.")
    else:
        rate = result["images"] / max(result["seconds"], 1e-9)
        console.print(f"wrote [bold]{out}[/]: {result['images']} images in "
                      f"{result['seconds']:.1f} s ({rate:.0f} images/s)")
    table = Table(title=f"synth n={cfg['n']} size={cfg['size']} seed={cfg['seed']} "
                        f"wild={cfg['wild']}")
    table.add_column("split")
    table.add_column("images", justify="right")
    table.add_column("identities", justify="right")
    for name, row in result["splits"].items():
        table.add_row(name, str(row["images"]), str(row["identities"]))
    console.print(table)


@data.command("check")
@click.argument("root", type=click.Path(file_okay=False, path_type=Path))
@click.option("--variant", type=click.Choice(["aligned", "wild"]), default=None,
              help="Which images to check [default: aligned, and wild when img_celeba/ exists].")
@click.option("--images/--no-images", "verify_images", default=True, show_default=True,
              help="Decode every image (finds truncated or corrupt files).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def data_check(root: Path, variant: str | None, verify_images: bool, as_json: bool,
               quiet: bool) -> None:
    """Validate a CelebA-format folder (official txt or CSV layout) and summarise it."""
    from facedistill.pipeline.data.check import check_dataset, format_check

    with progress_bar("check images", enabled=not quiet and not as_json) as update:
        report = check_dataset(root, variant=variant, verify_images=verify_images,
                               progress=update)
    if as_json:
        _print_json(report)
        return
    tables = format_check(report)
    for table in tables if isinstance(tables, list | tuple) else [tables]:
        console.print(table)


# -- models --------------------------------------------------------------------------------


@cli.command("models")
@click.option("--size", type=int, default=64, show_default=True,
              help="Input side (pixels) at which MACs are counted.")
@click.option("--width", type=float, default=1.0, show_default=True,
              help="Width multiplier (scales every conv but the final 1280).")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
def models_cmd(size: int, width: float, as_json: bool) -> None:
    """List the model registry: exact params (with and without the FC40), MACs, the paper's."""
    from rich.table import Table

    from facedistill.pipeline.models import PAPER, list_models, model_info

    order = ["tnet", *sorted(n for n in list_models() if n != "tnet")]  # teacher first
    rows = [model_info(name, width=width, size=size) for name in order]
    if as_json:
        _print_json(rows)
        return
    table = Table(title=f"models at {size}x{size}, width {width:g}")
    for col in ("model", "params", "params w/o FC40", "MACs", "paper params", "paper acc."):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        table.add_row(r["arch"], f"{r['params']:,}", f"{r['params_no_head']:,}",
                      f"{r['macs'] / 1e6:,.1f}M", PAPER[r["arch"]]["params_text"],
                      f"{r['paper_acc']:.2f}")
    console.print(table)


# -- train / eval ---------------------------------------------------------------------------

_TRAIN = TrainConfig()


class _RichReporter:
    """Draws the Trainer's progress: one bar per epoch, one summary line per epoch."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._progress: Any = None
        self._task: Any = None

    def _bar(self, description: str, total: int) -> None:
        self._close()
        if not (self.enabled and err_console.is_terminal):
            return
        self._progress = _make_progress(transient=True)
        self._progress.start()
        self._task = self._progress.add_task(description, total=total)

    def _close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        self._epoch = f"epoch {epoch}/{epochs}"
        self._bar(self._epoch, batches)

    def batch(self, done: int, total: int, loss: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=done,
                                  description=f"{self._epoch} loss {loss:.4f}")

    def validate(self, done: int, total: int) -> None:
        if self._progress is not None and self._progress.tasks[0].total != total:
            self._bar(f"{self._epoch} validate", total)
        if self._progress is not None:
            self._progress.update(self._task, completed=done)

    def epoch_end(self, r: dict[str, Any]) -> None:
        self._close()
        if self.enabled:
            star = " *" if r["best_epoch"] == r["epoch"] else ""
            err_console.print(
                f"epoch {r['epoch']}: loss {r['train_loss']:.4f}  val loss {r['val_loss']:.4f}  "
                f"val mean bal. acc {100 * r['val_mean_balanced']:.2f}%  "
                f"({r['train_images_per_s']:.0f} img/s){star}", markup=False)

    def message(self, text: str) -> None:
        if self.enabled:
            err_console.print(text, markup=False)


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
        click.option("--warmup", type=float, default=t.warmup, show_default=True,
                     help="Warm-up length in epochs; then cosine decay."),
        click.option("--grad-clip", type=float, default=t.grad_clip, show_default=True,
                     help="Max global gradient norm; 0 = off."),
        click.option("--pos-weight", type=click.Choice(["none", "sqrt", "balanced"]),
                     default=t.pos_weight, show_default=True,
                     help="Weight on each attribute's positives in the label loss: balanced = "
                          "(1-p)/p from the training prevalence p, sqrt = its square root."),
        click.option("--ema", type=float, default=t.ema, show_default=True,
                     help="EMA decay of the weights (e.g. 0.999); 0 = off."),
        click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
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
    keys = {f for f in TrainConfig.__dataclass_fields__} - {"arch"}
    return TrainConfig(arch=arch, **{k: v for k, v in kw.items() if k in keys})


@cli.command("train")
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
    reporter = _RichReporter(enabled=not quiet and not as_json)
    result = train(cfg, data, out, resume=resume, force=force, reporter=reporter)
    if result.summary.get("world_size", 1) > 1 and _rank() != 0:
        return
    if as_json:
        _print_json(result.summary)
        return
    best = result.best
    console.print(f"[bold]{out}[/]: best epoch {result.best_epoch}, val mean balanced accuracy "
                  f"{100 * best.get('val_mean_balanced', float('nan')):.2f}% "
                  f"(best.pt, last.pt, metrics.jsonl, run.json)")


def _rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))


@cli.command("eval")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="CelebA-format folder [default: the one the run was trained on].")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test",
              show_default=True, help="Split to score.")
@click.option("--thresholds", "threshold_source", type=click.Choice(["val", "checkpoint"]),
              default="val", show_default=True,
              help="Search per-attribute thresholds on the val split now, or use the stored ones.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--workers", type=int, default=1, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the report as JSON to this file.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def eval_cmd(run: Path, data: Path | None, split: str, threshold_source: str, batch_size: int,
             workers: int, device: str, out_file: Path | None, as_json: bool,
             quiet: bool) -> None:
    """Balanced accuracy per attribute of a run (folder or .pt), thresholds searched on val."""
    from facedistill.io import atomic_write_json
    from facedistill.pipeline.evaluate import evaluate_checkpoint

    with progress_bar("eval", enabled=not quiet and not as_json) as update:
        report = evaluate_checkpoint(run, data=data, split=split, thresholds=threshold_source,
                                     batch_size=batch_size, workers=workers, device=device,
                                     progress=update)
    if out_file is not None:
        atomic_write_json(out_file, report)
    if as_json:
        _print_json(report)
        return
    _print_eval(report)


def _print_eval(report: dict[str, Any]) -> None:
    from rich.table import Table

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f}"

    table = Table(title=f"{report['checkpoint']} on {report['split']} "
                        f"({report['n_test']} images; thresholds from {report['thresholds_from']})")
    if report["single_class"]:
        table.caption = "* only one class in this split: its rate alone is scored"
    for col in ("attribute", "bal. acc.", "TPR", "TNR", "acc@0.5", "threshold", "positives"):
        table.add_column(col, justify="left" if col == "attribute" else "right",
                         no_wrap=col == "attribute")
    for a in report["attributes"]:
        thr = "-" if a["threshold"] is None else f"{a['threshold']:+.3f}"
        name = a["name"] + (" *" if a["single_class"] else "")
        table.add_row(name, pct(a["balanced"]), pct(a["tpr"]), pct(a["tnr"]), pct(a["accuracy"]),
                      thr, f"{a['n_pos']}/{a['n_pos'] + a['n_neg']}")
    table.add_section()
    table.add_row("mean", pct(report["mean_balanced"]), "", "", pct(report["mean_accuracy"]), "",
                  "")
    console.print(table)


@cli.command("select")
@click.option("--teacher", "teachers", multiple=True, required=True,
              type=click.Path(path_type=Path),
              help="Teacher run folder or checkpoint; repeat for an ensemble (neurons concatenated).")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="CelebA-format folder [default: the first teacher's training data].")
@click.option("--k", "k", type=int, default=512, show_default=True, help="Neurons to keep.")
@click.option("--solver", type=click.Choice(["fast", "exact"]), default="fast", show_default=True,
              help="fast: hashed (response) or piecewise-linear (profile) messages, O(N) per "
                   "iteration; exact: dense, O(N^2).")
@click.option("--split", type=click.Choice(["val", "train", "test"]), default="val",
              show_default=True, help="Images whose responses are scored.")
@click.option("--redundancy", type=click.Choice(["response", "profile"]), default="response",
              show_default=True,
              help="response: correlation of the neurons' responses (sharpened by --bits); "
                   "profile: Gaussian kernel on their attribute-accuracy rows (--sigma).")
@click.option("--lam", type=float, default=None,
              help="Weight of redundancy against informativeness [default: 128 for response, "
                   "1 for profile].")
@click.option("--bits", type=int, default=24, show_default=True,
              help="Sharpness of the response kernel: (1-t)^bits + t^bits, t = angle / pi.")
@click.option("--tables", type=int, default=32, show_default=True,
              help="Hash tables the fast solver estimates response messages with.")
@click.option("--sigma", type=float, default=0.1, show_default=True,
              help="Width of the profile kernel on normalised accuracies.")
@click.option("--polarity", type=click.Choice(["positive", "both"]), default="positive",
              show_default=True, help="both: a neuron may also signal an attribute by falling.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="selection.json to write (X.npy and selection.png go beside it) "
                   "[default: TEACHER/selection/selection.json].")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--workers", type=int, default=1, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the selection record as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def select_cmd(teachers: tuple[Path, ...], data: Path | None, k: int, solver: str, split: str,
               redundancy: str, lam: float | None, bits: int, tables: int, sigma: float,
               polarity: str, out: Path | None, batch_size: int, workers: int, device: str,
               as_json: bool, quiet: bool) -> None:
    """Pick the teacher's K most informative, least redundant top-layer neurons (mean field)."""
    from facedistill.pipeline.selection import run_selection

    with progress_bar("responses", enabled=not quiet and not as_json) as update:
        record = run_selection(list(teachers), k, data=data, out=out, split=split,
                               solver=solver, lam=lam, sigma=sigma, polarity=polarity,
                               redundancy=redundancy, bits=bits, tables=tables,
                               batch_size=batch_size, workers=workers, device=device,
                               progress=update)
    if as_json:
        _print_json(record)
        return
    _print_selection(record)


def _print_selection(rec: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"selected {rec['k']} of {rec['candidates']} neurons "
                        f"({rec['solver']}, lam={rec['config']['lam']}, split {rec['data']['split']}, "
                        f"{rec['data']['images']} images)")
    for col in ("teacher", "neurons", "selected", "mean u selected", "mean u rest", "cached"):
        table.add_column(col, justify="left" if col == "teacher" else "right")
    u = rec["u"]
    chosen = set(rec["indices"])
    for t, info in enumerate(rec["teachers"]):
        cols = range(info["offset"], info["offset"] + info["neurons"])
        mine = [u[i] for i in cols if i in chosen]
        rest = [u[i] for i in cols if i not in chosen]
        table.add_row(f"{t}: {info['path']}", str(info["neurons"]), str(len(mine)),
                      f"{sum(mine) / len(mine):.3f}" if mine else "-",
                      f"{sum(rest) / len(rest):.3f}" if rest else "-",
                      "yes" if info["cached"] else "no")
    console.print(table)
    secs = rec["seconds"]
    state = "converged" if rec["converged"] else "NOT converged (max_iter reached)"
    console.print(f"mean accuracy X: selected {100 * rec['mean_x_selected']:.2f}%, "
                  f"all {100 * rec['mean_x_all']:.2f}%; {rec['iterations']} iterations, {state}; "
                  f"responses {secs['collect']:.1f}s, X {secs['accuracy']:.1f}s, "
                  f"solve {secs['solve']:.2f}s")
    red = rec.get("redundancy")
    if red:
        console.print(f"mean |corr| of responses: selected {red['mean_abs_corr_selected']:.3f}, "
                      f"random {red['mean_abs_corr_random']:.3f}, "
                      f"top-{rec['k']} by u {red['mean_abs_corr_top_u']:.3f} "
                      f"({rec['config'].get('redundancy', 'profile')} kernel)")
    console.print(f"wrote {rec['path']}")


def _term_weights(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
                  ) -> dict[str, float] | None:
    try:
        return parse_term_weights(values)
    except ConfigError as exc:
        raise click.BadParameter(exc.message, ctx=ctx, param=param) from None


@cli.command("compress")
@click.option("--student", type=click.Choice(["snet1", "snet2", "snet3", "tnet"]),
              default="snet3", show_default=True, help="Student architecture.")
@click.option("--teacher", "teachers", multiple=True, required=True,
              type=click.Path(path_type=Path),
              help="Teacher run folder or checkpoint; repeat for an ensemble.")
@click.option("--method", type=click.Choice(["selected", "hint", "soft", "labels"]),
              default="selected", show_default=True,
              help="selected: imitate the K selected teacher neurons; hint: all 1280; soft: "
                   "the teacher's soft targets; labels: no teacher (baseline).")
@click.option("--k", "k", type=int, default=512, show_default=True,
              help="Neurons to select (method selected, when no --selection is given).")
@click.option("--selection", type=click.Path(path_type=Path), default=None,
              help="A selection.json from 'facedistill select' [default: run it, cached].")
@click.option("--temperature", type=float, default=1.0, show_default=True,
              help="Softening of the soft targets (1 = the paper's baseline).")
@click.option("--two-stage", type=int, default=0, show_default=True,
              help="Epochs of feature imitation alone before switching to labels; 0 = joint.")
@click.option("--weight", "weights", multiple=True, callback=_term_weights, metavar="TERM=W",
              help="Override one loss term's weight (labels, soft, hint, selected); repeatable, "
                   "e.g. --weight selected=0.3.")
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True,
              help="Split of the student-vs-teacher comparison.")
@click.option("--unlabeled", type=click.Path(path_type=Path), default=None,
              help="Folder of face crops without labels: the teacher also supervises the "
                   "student on them (any folder of images, or 'data synth --unlabeled' output).")
@click.option("--unlabeled-n", type=int, default=None,
              help="Use only the first N images of --unlabeled [default: all].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder [default: runs/STUDENT-METHOD].")
@_train_options
def compress_cmd(student: str, teachers: tuple[Path, ...], method: str, k: int,
                 selection: Path | None, temperature: float, two_stage: int,
                 weights: dict[str, float] | None, split: str, unlabeled: Path | None,
                 unlabeled_n: int | None,
                 out: Path | None, data: Path, resume: bool, force: bool, as_json: bool,
                 quiet: bool, **kw: Any) -> None:
    """Distil a teacher into a student through selected neurons, then compare the two."""
    from facedistill.pipeline.compress import compress, prepare_selection

    cfg = _train_config(student, kw)
    out = out or Path("runs") / f"{student}-{method}"
    if method == "selected" and selection is None:
        with progress_bar("teacher responses", enabled=not quiet and not as_json) as update:
            selection = Path(prepare_selection(list(teachers), data, out, k=k,
                                               variant=cfg.variant, workers=cfg.workers,
                                               device=cfg.device, progress=update))
    reporter = _RichReporter(enabled=not quiet and not as_json)
    result = compress(cfg, list(teachers), data, out, method=method, k=k, selection=selection,
                      temperature=temperature, two_stage=two_stage, weights=weights,
                      split=split, unlabeled=unlabeled, unlabeled_n=unlabeled_n,
                      resume=resume, force=force, reporter=reporter)
    if _rank() != 0:
        return
    if as_json:
        _print_json(result)
        return
    from facedistill.pipeline.compress import compare_markdown

    console.print(compare_markdown(result), markup=False)
    console.print(f"wrote {out}/best.pt, compare.json, compare.md")


# -- verbs that live in their own modules (facedistill/commands/<verb>.py) --------------------

_VERBS = ("export", "bench", "predict", "pipeline")


def _add_verbs() -> None:
    """Each verb module defines ``command`` (a click.Command) and imports torch only inside it."""
    import importlib

    for name in _VERBS:
        cli.add_command(importlib.import_module(f"facedistill.commands.{name}").command, name)


_add_verbs()


# -- entry point -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors with exit code 2 for anything the user can fix."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        code = cli.main(args=args, prog_name="facedistill", standalone_mode=False)
    except UserError as exc:
        if debug:
            raise
        for one in getattr(exc, "errors", None) or [exc]:  # DataErrors: one line per bad file
            err_console.print(f"error: {one.format()}", markup=False, soft_wrap=True)
        sys.exit(EXIT_USER_ERROR)
    except click.exceptions.Abort:
        err_console.print("aborted", markup=False)
        sys.exit(130)
    except click.ClickException as exc:  # usage errors: bad option, missing argument, ...
        if debug:
            raise
        where = f" (see '{exc.ctx.command_path} --help')" if getattr(exc, "ctx", None) else ""
        err_console.print(f"error: {exc.format_message()}{where}", markup=False, soft_wrap=True)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        err_console.print("interrupted", markup=False)
        sys.exit(130)
    if isinstance(code, int) and code:  # e.g. click's own exit codes
        sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
