"""``facedistill export``: a run (or checkpoint) to ONNX FP32/FP16/INT8 and TensorRT engines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from facedistill.clikit import console, print_json, step_bar


def _default_out(source: Path) -> Path:
    if source.is_dir():
        return source / "export"
    if source.suffix.lower() == ".onnx":
        return source.parent
    return source.parent / "export"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def print_report(report: dict[str, Any], committed: bool = True) -> None:
    """The human summary of an export report: one row per variant, then the files
    (``committed=False``: a failed attempt, nothing of which was written)."""
    from rich.table import Table

    split = (report.get("data", {}).get("eval") or {}).get("split")
    n_eval = (report.get("data", {}).get("eval") or {}).get("n_images")
    title = f"{report['arch']['arch']} export" + (f" (accuracy on {split}, {n_eval} images)"
                                                  if split else "")
    table = Table(title=title, caption="parity: largest |difference| of the probabilities, fp32 "
                                       "vs PyTorch, the others vs fp32")
    for col in ("variant", "size", "parity", "bal. acc.", "delta", "seconds", "status"):
        table.add_column(col, justify="left" if col in ("variant", "status") else "right")
    for name, v in report["variants"].items():
        if name == "fp32" and v.get("parity"):
            parity = f"{max(v['parity'].values()):.1e}"
        elif v.get("max_abs_diff_to_fp32") is not None and name != "fp32":
            parity = f"{v['max_abs_diff_to_fp32']:.1e}"
        else:
            parity = "-"
        acc = v.get("accuracy") or {}
        mb = acc.get("mean_balanced")
        delta = acc.get("delta_to_fp32")
        secs = sum(float(s) for k, s in (v.get("seconds") or {}).items() if k != "total")
        table.add_row(name, _size(v.get("size_bytes")), parity,
                      "-" if mb is None else f"{100 * mb:.2f}%",
                      "-" if delta is None else f"{100 * delta:+.2f} pt",
                      f"{secs:.1f}", v.get("status", "-"))
    console.print(table)
    for name, v in report["variants"].items():
        if v.get("status") == "ok" and committed:
            carried = f" (kept from the export of {v['carried_from']})" \
                if v.get("carried_from") else ""
            console.print(f"{name}: {v['path']}{carried}")
    for name, v in report["variants"].items():
        if v.get("status") == "failed":
            console.print(f"[red]{name} failed[/red]: {v.get('error')}", markup=True,
                          highlight=False)
    for name, e in report.get("engines", {}).items():
        if e.get("status") != "failed" and not committed:
            continue
        if e.get("status") == "failed":
            console.print(f"[red]{name} engine failed[/red]: {e.get('error')}", markup=True,
                          highlight=False)
            continue
        console.print(f"{name} engine: {e['path']} (TensorRT {e['trt_version']}, "
                      f"{e['gpu_name']}, batch {e['profile']['min']}-{e['profile']['max']})")
    if committed:
        console.print(f"wrote {Path(report['out_dir']) / 'export_report.json'}")


@click.command("export")
@click.argument("source", metavar="RUN_OR_CKPT", type=click.Path(path_type=Path))
@click.option("--onnx", is_flag=True, help="FP32 ONNX: always written (the others derive from it); "
              "given alone, only FP32 [default without precision flags: all three].")
@click.option("--fp16", is_flag=True, help="FP16 ONNX (float32 inputs/outputs).")
@click.option("--int8", is_flag=True, help="INT8 Q/DQ ONNX, calibrated on training images.")
@click.option("--trt/--no-trt", default=False,
              help="Also build a TensorRT engine per precision (needs tensorrt, cuda-python and "
                   "an NVIDIA GPU) [default: no; the pipeline's: when TensorRT is installed].")
@click.option("--precision", default=None, metavar="LIST",
              help="Comma list of fp32,fp16,int8 (adds to the flags). [default: all three when "
                   "no precision is chosen]")
@click.option("--opset", type=int, default=18, show_default=True, help="ONNX opset.")
@click.option("--calib-data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="CelebA-format folder for INT8 calibration [default: --data, else the run's "
                   "data].")
@click.option("--calib-n", type=int, default=512, show_default=True,
              help="Training images (seeded sample) to calibrate INT8 on.")
@click.option("--calib-method", type=click.Choice(["entropy", "minmax", "percentile"]),
              default="entropy", show_default=True)
@click.option("--int8-recipe", default="auto", show_default=True, metavar="LIST",
              help="INT8 recipes, comma list: cpu (7-bit weights, safe on every CPU), cpu-vnni "
                   "(8-bit weights, CPUs with VNNI/AMX or Arm dot-product only), tensorrt "
                   "(<arch>.int8-trt.onnx, TensorRT's Q/DQ rules). auto: cpu, plus tensorrt "
                   "with --trt.")
@click.option("--max-drop", type=float, default=1.0, show_default=True,
              help="INT8 gate: largest allowed drop of mean balanced accuracy, in points.")
@click.option("--no-gate", is_flag=True, help="Keep INT8 whatever its accuracy.")
@click.option("--no-eval", is_flag=True,
              help="Do not score the variants (INT8 then needs --no-gate).")
@click.option("--trt-profile", "batches", default="1,8,32", show_default=True,
              metavar="MIN,OPT,MAX",
              help="TensorRT profile batch sizes; the FP32 parity check runs at 1 and MAX.")
@click.option("--workspace-mb", type=int, default=None,
              help="TensorRT builder workspace limit in MiB [default: TensorRT's].")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="CelebA-format folder to score on [default: the run's data].")
@click.option("--split", "eval_split", type=click.Choice(["val", "test"]), default="val",
              show_default=True, help="Split the variants are scored on.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder [default: RUN/export].")
@click.option("--json", "as_json", is_flag=True, help="Print the export report as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(source: Path, onnx: bool, fp16: bool, int8: bool, trt: bool, precision: str | None,
            opset: int, calib_data: Path | None, calib_n: int, calib_method: str,
            int8_recipe: str, max_drop: float, no_gate: bool, no_eval: bool, batches: str,
            workspace_mb: int | None, data: Path | None, eval_split: str, out: Path | None,
            as_json: bool, quiet: bool) -> None:
    """Export a run (folder, .pt or an fp32 .onnx) to ONNX FP32/FP16/INT8 and TensorRT.

    Every variant is checked (onnx.checker), run with ONNX Runtime and scored on the
    validation split; INT8 is refused when it loses more than --max-drop points. The export
    is built aside and swapped in only when complete: when a step fails, every step's result
    is shown, nothing is written (the previous export stays as it was) and the command exits
    2; an INT8 file the gate rejects is left out and the rest is written (exit 2 too).
    """
    from facedistill.config import export_precisions
    from facedistill.export.api import ExportFailed, export_model

    out_dir = out or _default_out(source)
    try:
        with step_bar(enabled=not quiet and not as_json) as update:
            report = export_model(
                source, out_dir,
                precisions=export_precisions(onnx, fp16, int8, precision), opset=opset,
                calib_data=calib_data if calib_data is not None else data, calib_n=calib_n,
                calib_method=calib_method, int8_recipe=int8_recipe, max_drop=max_drop,
                gate=not no_gate,
                eval_data=data, eval_split=None if no_eval else eval_split, trt=trt,
                batches=batches, workspace_mb=workspace_mb, progress=update)
    except ExportFailed as exc:
        # show what every step did, then the error line (exit code 2)
        print_json(exc.report) if as_json else print_report(exc.report, exc.committed)
        raise
    if as_json:
        print_json(report)
        return
    print_report(report)
