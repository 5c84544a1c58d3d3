"""``facedistill compress``: distil a teacher (or an ensemble) into a student."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from facedistill.clikit import EpochReporter, console, print_json, progress_bar
from facedistill.commands.train import _rank, _train_config, _train_options
from facedistill.config import parse_term_weights, table_options
from facedistill.errors import ConfigError

# what a `selected` compress without --selection takes of `select`'s options ([select] table);
# k, the data, the device and the workers are compress's own
_SELECT_OPTIONS = ("split", "solver", "lam", "sigma", "polarity", "redundancy", "bits", "tables",
                   "batch_size")


def _term_weights(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
                  ) -> dict[str, float] | None:
    try:
        return parse_term_weights(values)
    except ConfigError as exc:
        raise click.BadParameter(exc.message, ctx=ctx, param=param) from None


@click.command("compress")
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
              help="A selection.json from 'facedistill select' [default: run it with the config's "
                   "[select] options, cached].")
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
        # selected here: with the config's [select] options (the same as `facedistill select`)
        root = click.get_current_context().find_root()
        picked = table_options(root.command, root.default_map or {}, "select")  # type: ignore[arg-type]
        options = {name: picked[name] for name in _SELECT_OPTIONS}
        with progress_bar("teacher responses", enabled=not quiet and not as_json) as update:
            selection = Path(prepare_selection(list(teachers), data, out, k=k,
                                               variant=cfg.variant, workers=cfg.workers,
                                               device=cfg.device, progress=update,
                                               options=options, staged=True,
                                               resume=resume, force=force))
    reporter = EpochReporter(enabled=not quiet and not as_json)
    result = compress(cfg, list(teachers), data, out, method=method, k=k, selection=selection,
                      temperature=temperature, two_stage=two_stage, weights=weights,
                      split=split, unlabeled=unlabeled, unlabeled_n=unlabeled_n,
                      resume=resume, force=force, reporter=reporter)
    if _rank() != 0:
        return
    if as_json:
        print_json(result)
        return
    from facedistill.pipeline.compress import compare_markdown

    console.print(compare_markdown(result), markup=False)
    console.print(f"wrote {out}/best.pt, compare.json, compare.md")


command = compress_cmd
