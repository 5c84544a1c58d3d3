"""``facedistill export``: a run (or checkpoint) to ONNX FP32/FP16/INT8 and TensorRT engines."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from facedistill.clikit import console, print_json, step_bar
from facedistill.config import ExportConfig, config_command, opt

if TYPE_CHECKING:  # the verb imports the export package only when it runs (fast --help)
    from facedistill.export.report import ExportReport


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


def print_report(report: ExportReport, committed: bool = True) -> None:
    """The human summary of an export report: one row per variant, then the files
    (``committed=False``: a failed attempt, nothing of which was written)."""
    from rich.table import Table

    ev = report.data.eval
    split = ev.split if ev is not None else None
    n_eval = ev.n_images if ev is not None else None
    arch = (report.arch or {}).get("arch", "model")
    title = f"{arch} export" + (f" (accuracy on {split}, {n_eval} images)" if split else "")
    table = Table(title=title, caption="parity: largest |difference| of the probabilities, fp32 "
                                       "vs PyTorch, the others vs fp32")
    for col in ("variant", "size", "parity", "bal. acc.", "delta", "seconds", "status"):
        table.add_column(col, justify="left" if col in ("variant", "status") else "right")
    for name, v in report.variants.items():
        if name == "fp32" and v.parity:
            parity = f"{max(v.parity.values()):.1e}"
        elif v.max_abs_diff_to_fp32 is not None and name != "fp32":
            parity = f"{v.max_abs_diff_to_fp32:.1e}"
        else:
            parity = "-"
        mb = v.accuracy.mean_balanced if v.accuracy is not None else None
        delta = v.accuracy.delta_to_fp32 if v.accuracy is not None else None
        secs = sum(float(s) for k, s in (v.seconds or {}).items() if k != "total")
        table.add_row(name, _size(v.size_bytes), parity,
                      "-" if mb is None else f"{100 * mb:.2f}%",
                      "-" if delta is None else f"{100 * delta:+.2f} pt",
                      f"{secs:.1f}", v.status)
    console.print(table)
    for name, v in report.variants.items():
        if v.ok and committed:
            carried = f" (kept from the export of {v.carried_from})" if v.carried_from else ""
            console.print(f"{name}: {v.path}{carried}")
    for name, v in report.variants.items():
        if v.status == "failed":
            console.print(f"[red]{name} failed[/red]: {v.error}", markup=True,
                          highlight=False)
    for name, e in report.engines.items():
        if e.status != "failed" and not committed:
            continue
        if e.status == "failed":
            console.print(f"[red]{name} engine failed[/red]: {e.error}", markup=True,
                          highlight=False)
            continue
        profile = e.profile or {}
        console.print(f"{name} engine: {e.path} (TensorRT {e.trt_version}, "
                      f"{e.gpu_name}, batch {profile.get('min')}-{profile.get('max')})")
    if committed and report.report_path is not None:
        console.print(f"wrote {report.report_path}")


@dataclass(frozen=True)
class ExportRun:
    """What ``export`` reads and writes, and how it prints."""

    source: Path = opt(argument=True, metavar="RUN_OR_CKPT")
    calib_data: Path | None = opt(None, "CelebA-format folder for INT8 calibration [default: "
                                        "--data, else the run's data].", path="dir")
    data: Path | None = opt(None, "CelebA-format folder to score on [default: the run's data].",
                            path="dir")
    out: Path | None = opt(None, "Output folder [default: RUN/export].", path="dir")
    json: bool = opt(False, "Print the export report as JSON.")
    quiet: bool = opt(False, "No progress bar.")


@config_command("export", ExportConfig, ExportRun)
def command(cfg: ExportConfig, run: ExportRun) -> None:
    """Export a run (folder, .pt or an fp32 .onnx) to ONNX FP32/FP16/INT8 and TensorRT.

    Every variant is checked (onnx.checker), run with ONNX Runtime and scored on the
    validation split; INT8 is refused when it loses more than --max-drop points. The export
    is built aside and swapped in only when complete: when a step fails, every step's result
    is shown, nothing is written (the previous export stays as it was) and the command exits
    2; an INT8 file the gate rejects is left out and the rest is written (exit 2 too).
    """
    from facedistill.export.api import ExportFailed, export_model

    out_dir = run.out or _default_out(run.source)
    as_json = run.json
    try:
        with step_bar(enabled=not run.quiet and not as_json) as update:
            report = export_model(
                run.source, out_dir, cfg,
                calib_data=run.calib_data if run.calib_data is not None else run.data,
                eval_data=run.data, progress=update)
    except ExportFailed as exc:
        # show what every step did, then the error line (exit code 2)
        if as_json:
            print_json(exc.report.to_json())
        else:
            print_report(exc.report, exc.committed)
        raise
    if as_json:
        print_json(report.to_json())
        return
    print_report(report)
