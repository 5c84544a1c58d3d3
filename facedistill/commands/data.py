"""``facedistill data``: generate the embedded synthetic dataset, check a CelebA-format folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import click

from facedistill.clikit import console, print_json, progress_bar
from facedistill.config import SynthConfig, config_command, opt


@click.group("data")
def data() -> None:
    """Datasets: generate the embedded synthetic one, validate any CelebA-format folder."""


@dataclass(frozen=True)
class SynthRun:
    """Where ``data synth`` writes, with how many processes, and how it prints."""

    out: Path = opt(Path("data/synth"), "Output folder (CelebA layout).", path="dir")
    workers: int | None = opt(None, "Processes [default: all cores].")
    unlabeled: bool = opt(False, "Write the images only, labels withheld: a pool for 'compress "
                                 "--unlabeled' (use another --seed than the labelled set's, "
                                 "for other people).")
    force: bool = opt(False, "Replace an existing, different dataset at --out.")
    json: bool = opt(False, "Print the summary as JSON.")
    quiet: bool = opt(False, "No progress bar.")


@config_command("synth", SynthConfig, SynthRun, group=data)
def data_synth(cfg: SynthConfig, run: SynthRun) -> None:
    """Generate the embedded synthetic face-attribute dataset (CelebA's file format)."""
    from facedistill.data.synth import generate

    with progress_bar("synth", enabled=not run.quiet and not run.json) as update:
        result = generate(run.out, cfg, workers=run.workers, force=run.force, progress=update,
                          withhold_labels=run.unlabeled)
    if run.json:
        print_json({"out": str(run.out), **result})
        return
    _print_synth_summary(run.out, result)


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


@dataclass(frozen=True)
class CheckConfig:
    """What ``data check`` checks, and how it prints."""

    root: Path = opt(argument=True, path="dir")
    variant: Literal["aligned", "wild"] | None = opt(
        None, "Which images to check [default: aligned, and wild when img_celeba/ exists].")
    images: bool = opt(True, "Decode every image (finds truncated or corrupt files).",
                       secondary="--no-images")
    json: bool = opt(False, "Print the report as JSON.")
    quiet: bool = opt(False, "No progress bar.")


@config_command("check", CheckConfig, group=data)
def data_check(cfg: CheckConfig) -> None:
    """Validate a CelebA-format folder (official txt or CSV layout) and summarise it."""
    from facedistill.data.check import check_dataset, format_check

    with progress_bar("check images", enabled=not cfg.quiet and not cfg.json) as update:
        report = check_dataset(cfg.root, variant=cfg.variant, verify_images=cfg.images,
                               progress=update)
    if cfg.json:
        print_json(report)
        return
    tables = format_check(report)
    for table in tables if isinstance(tables, list | tuple) else [tables]:
        console.print(table)


command = data
