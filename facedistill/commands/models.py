"""``facedistill models``: the model registry with exact params and MACs."""

from __future__ import annotations

import click

from facedistill.clikit import console, print_json


@click.command("models")
@click.option("--size", type=int, default=64, show_default=True,
              help="Input side (pixels) at which MACs are counted.")
@click.option("--width", type=float, default=1.0, show_default=True,
              help="Width multiplier (scales every conv but the final 1280).")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
def models_cmd(size: int, width: float, as_json: bool) -> None:
    """List the model registry: exact params (with and without the FC40), MACs, the paper's."""
    from rich.table import Table

    from facedistill.nn.models import PAPER, list_models, model_info

    order = ["tnet", *sorted(n for n in list_models() if n != "tnet")]  # teacher first
    rows = [model_info(name, width=width, size=size) for name in order]
    if as_json:
        print_json(rows)
        return
    table = Table(title=f"models at {size}x{size}, width {width:g}")
    for col in ("model", "params", "params w/o FC40", "MACs", "paper params", "paper acc."):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        table.add_row(r["arch"], f"{r['params']:,}", f"{r['params_no_head']:,}",
                      f"{r['macs'] / 1e6:,.1f}M", PAPER[r["arch"]]["params_text"],
                      f"{r['paper_acc']:.2f}")
    console.print(table)


command = models_cmd
