"""facedistill.export: checkpoint -> ONNX (FP32/FP16/INT8 Q/DQ) -> TensorRT engines.

Modules: :mod:`.onnx` (the FP32 export, checks, metadata; torch only inside the export),
:mod:`.quantize` (FP16 and INT8 variants, no torch), :mod:`.tensorrt` (engine builds, no
torch), :mod:`.api` (:func:`export_model`, what the CLI and the pipeline call), :mod:`.report`
(:class:`ExportReport`, what it returns and writes as ``export_report.json``, and
:func:`read_export_report`).

Importing this package imports neither torch nor onnx; :func:`export_model` is loaded on
first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ExportReport", "export_model", "read_export_report"]


def __getattr__(name: str) -> Any:
    if name == "export_model":
        from facedistill.export.api import export_model

        return export_model
    if name in ("ExportReport", "read_export_report"):
        from facedistill.export import report

        return getattr(report, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
