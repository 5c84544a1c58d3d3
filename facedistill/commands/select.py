"""``facedistill select``: the teacher neurons a student imitates (mean field on an MRF)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from facedistill.clikit import console, print_json, progress_bar

if TYPE_CHECKING:
    from facedistill.selection.file import SelectionRecord


@click.command("select")
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
        print_json({**record.to_json(), "path": str(record.path)})
        return
    _print_selection(record)


def _print_selection(rec: SelectionRecord) -> None:
    from rich.table import Table

    table = Table(title=f"selected {rec.k} of {rec.candidates} neurons "
                        f"({rec.solver}, lam={rec.config['lam']}, split {rec.data['split']}, "
                        f"{rec.data['images']} images)")
    for col in ("teacher", "neurons", "selected", "mean u selected", "mean u rest", "cached"):
        table.add_column(col, justify="left" if col == "teacher" else "right")
    u = rec.u
    chosen = set(rec.indices)
    for t, info in enumerate(rec.teachers):
        cols = range(info["offset"], info["offset"] + info["neurons"])
        mine = [u[i] for i in cols if i in chosen]
        rest = [u[i] for i in cols if i not in chosen]
        table.add_row(f"{t}: {info['path']}", str(info["neurons"]), str(len(mine)),
                      f"{sum(mine) / len(mine):.3f}" if mine else "-",
                      f"{sum(rest) / len(rest):.3f}" if rest else "-",
                      "yes" if info["cached"] else "no")
    console.print(table)
    secs = rec.seconds
    state = "converged" if rec.converged else "NOT converged (max_iter reached)"
    console.print(f"mean accuracy X: selected {100 * rec.mean_x_selected:.2f}%, "
                  f"all {100 * rec.mean_x_all:.2f}%; {rec.iterations} iterations, {state}; "
                  f"responses {secs['collect']:.1f}s, X {secs['accuracy']:.1f}s, "
                  f"solve {secs['solve']:.2f}s")
    red = rec.redundancy
    if red:
        console.print(f"mean |corr| of responses: selected {red['mean_abs_corr_selected']:.3f}, "
                      f"random {red['mean_abs_corr_random']:.3f}, "
                      f"top-{rec.k} by u {red['mean_abs_corr_top_u']:.3f} "
                      f"({rec.config.get('redundancy', 'profile')} kernel)")
    console.print(f"wrote {rec.path}")


command = select_cmd
