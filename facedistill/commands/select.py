"""``facedistill select``: the teacher neurons a student imitates (mean field on an MRF)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from facedistill.clikit import console, print_json, progress_bar
from facedistill.config import SelectConfig, config_command, opt

if TYPE_CHECKING:
    from facedistill.selection.file import SelectionRecord


@dataclass(frozen=True)
class SelectRun:
    """What ``select`` reads and writes, and how it prints."""

    teacher: tuple[Path, ...] = opt(
        (), "Teacher run folder or checkpoint; repeat for an ensemble (neurons concatenated).",
        required=True, key=False)
    data: Path | None = opt(None, "CelebA-format folder [default: the first teacher's training "
                                  "data].", path="dir")
    out: Path | None = opt(None, "selection.json to write (X.npy and selection.png go beside "
                                 "it) [default: TEACHER/selection/selection.json].")
    json: bool = opt(False, "Print the selection record as JSON.")
    quiet: bool = opt(False, "No progress bar.")


@config_command("select", SelectConfig, SelectRun)
def select_cmd(cfg: SelectConfig, run: SelectRun) -> None:
    """Pick the teacher's K most informative, least redundant top-layer neurons (mean field)."""
    from facedistill.pipeline.selection import run_selection

    with progress_bar("responses", enabled=not run.quiet and not run.json) as update:
        record = run_selection(list(run.teacher), cfg, data=run.data, out=run.out,
                               progress=update)
    if run.json:
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
