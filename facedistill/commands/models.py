"""``facedistill models``: the model registry with exact params and MACs."""

from __future__ import annotations

from dataclasses import dataclass

from facedistill.clikit import console, print_json
from facedistill.config import ARCHS, config_command, opt


@dataclass(frozen=True)
class ModelsConfig:
    size: int = opt(64, "Input side (pixels) at which MACs are counted.")
    width: float = opt(1.0, "Width multiplier (scales every conv but the final 1280).")
    json: bool = opt(False, "Print the table as JSON.")


@config_command("models", ModelsConfig)
def models_cmd(cfg: ModelsConfig) -> None:
    """List the model registry: exact params (with and without the FC40), MACs, the paper's."""
    from rich.table import Table

    from facedistill.nn.models import PAPER, list_models, model_info

    order = [*ARCHS, *sorted(set(list_models()) - set(ARCHS))]  # teacher, students, frl
    size, width = cfg.size, cfg.width
    rows = [model_info(name, width=width, size=size) for name in order]
    if cfg.json:
        print_json(rows)
        return
    table = Table(title=f"models at {size}x{size}, width {width:g}")
    for col in ("model", "params", "params w/o FC40", "MACs", "paper params", "paper acc."):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        paper = PAPER.get(r["arch"], {})
        table.add_row(r["arch"], f"{r['params']:,}", f"{r['params_no_head']:,}",
                      f"{r['macs'] / 1e6:,.1f}M", paper.get("params_text", "-"),
                      "-" if r["paper_acc"] is None else f"{r['paper_acc']:.2f}")
    console.print(table)


command = models_cmd
