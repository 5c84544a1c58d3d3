"""``facedistill cascade``: put a whole-image run and a part-subnets run together into the
cascade (region switch, attribute relations) as one model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import click

from facedistill.clikit import console, print_json
from facedistill.config import EvalConfig, config_command, opt


@dataclass(frozen=True)
class CascadeRun:
    """The two runs, how they are combined, and where the cascade goes."""

    whole: Path = opt(help="The whole-image run (tnet, snet1-3) on the face crops.")
    parts: Path = opt(help="The part-subnets run (train --arch parts) on the same crops.")
    out: Path = opt(help="Folder the cascade is written to (best.pt, cascade.json).",
                    path="dir")
    switch: Literal["hard", "soft"] = opt(
        "hard", "hard: per attribute the subnet that is better on val; soft: a learned mix "
                "per attribute (fitted on the training split).")
    relations: bool = opt(True, "Fit the attribute relation layer over the 40 switched "
                                "scores (its weight decay chosen on val).",
                          secondary="--no-relations")
    data: Path | None = opt(None, "CelebA-format folder [default: the one the runs trained "
                                  "on].", path="dir")
    batch_size: int = opt(128, "Batch size of the scoring passes.", type=click.IntRange(min=1))
    workers: int = opt(1, "DataLoader worker processes.", type=click.IntRange(min=0))
    device: str = opt("auto", "auto, cpu, cuda or cuda:N.")
    json: bool = opt(False, "Print the record as JSON.")


@config_command("cascade", CascadeRun)
def cascade_cmd(run: CascadeRun) -> None:
    """Combine a whole-image and a part-subnets run into the cascade: one model (best.pt) that
    eval, export, bench and predict take like any run."""
    from facedistill.pipeline.cascade import assemble

    cfg = EvalConfig(batch_size=run.batch_size, workers=run.workers, device=run.device)
    if not run.json:
        console.print(f"scoring {run.whole} and {run.parts} on train, val and test ...")
    record = assemble(run.whole, run.parts, run.out, data=run.data, switch=run.switch,
                      relations=run.relations, cfg=cfg)
    if run.json:
        print_json(record)
        return
    _print(record, run.out)


def _print(record: dict[str, Any], out: Path) -> None:
    from rich.table import Table

    table = Table(title=f"cascade in {out} (mean balanced accuracy on test, thresholds from "
                        "val)")
    for col in ("model", "bal. acc.", "params"):
        table.add_column(col, justify="left" if col == "model" else "right")
    params = record["params"]
    rows = (("whole-image subnet", "whole", params["whole"]),
            ("part subnets", "parts", params["parts"]),
            (f"parts + whole, {record['switch']} switch", "switch", params["cascade"]),
            ("the cascade" + (" (+ relations)" if record["relations"] else ""), "cascade",
             params["cascade"]))
    for label, key, n in rows:
        table.add_row(label, f"{100 * record['mean_balanced'][key]:.2f}", f"{n:,}")
    table.caption = (f"the switch takes the part subnet for {record['parts_chosen']} of "
                     f"{len(record['use_part'])} attributes"
                     + (f"; relation decay {record['relation_decay']:g}"
                        if record["relations"] else ""))
    console.print(table)
    console.print(f"wrote {out / 'best.pt'} and {out / 'cascade.json'}")


command = cascade_cmd
