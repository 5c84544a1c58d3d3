"""``facedistill data``: generate the embedded synthetic dataset, check a CelebA-format folder."""

from __future__ import annotations

from pathlib import Path

import click

from facedistill.clikit import console, print_json, progress_bar
from facedistill.config import SynthConfig

_SYNTH = SynthConfig()


@click.group("data")
def data() -> None:
    """Datasets: generate the embedded synthetic one, validate any CelebA-format folder."""


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
    from facedistill.data.synth import generate

    cfg = SynthConfig(n=n, size=size, seed=seed, wild=wild,
                      images_per_identity=images_per_identity)
    with progress_bar("synth", enabled=not quiet and not as_json) as update:
        result = generate(out, cfg, workers=workers, force=force, progress=update,
                          withhold_labels=unlabeled)
    if as_json:
        print_json({"out": str(out), **result})
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
    from facedistill.data.check import check_dataset, format_check

    with progress_bar("check images", enabled=not quiet and not as_json) as update:
        report = check_dataset(root, variant=variant, verify_images=verify_images,
                               progress=update)
    if as_json:
        print_json(report)
        return
    tables = format_check(report)
    for table in tables if isinstance(tables, list | tuple) else [tables]:
        console.print(table)


command = data
