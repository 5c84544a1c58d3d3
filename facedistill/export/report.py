"""``export_report.json``, typed: :class:`ExportReport` and its records (no torch, no onnx).

:func:`facedistill.export.api.export_model` returns an :class:`ExportReport` (so do the
``report`` of :class:`~facedistill.export.api.ExportFailed` and
:class:`~facedistill.export.api.GateError`); ``export_report.json`` is its
:meth:`ExportReport.to_json` (format :data:`REPORT_FORMAT`, the keys the export has always
written) and :func:`read_export_report` reads one back.

Reading is tolerant: a key an older file lacks takes its field's default, a key this version
does not know is kept in the record's ``extra`` (and written again), so reading and writing a
file of this version gives the same object. A ``None`` field is written as ``null`` when the
key always belongs to the record (an accuracy's ``split``, a source's ``note``) and left out
when the key is optional (a failed variant has no ``size_bytes``); the two optional keys that
carry a meaning when ``null`` are kept: fp32's ``parity`` (an ONNX source: parity not
re-checked) and an INT8 file's ``qdq_conformance`` (a CPU recipe: not checked).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from facedistill.records import (
    BadField,
    at,
    boolean,
    check_format,
    integer,
    number,
    obj,
    parsed,
    read_json,
    string,
)

REPORT_FORMAT = "facedistill.export_report/v1"
REPORT_NAME = "export_report.json"

__all__ = ["REPORT_FORMAT", "REPORT_NAME", "AccuracyRecord", "DataRecord", "EngineRecord",
           "ExportReport", "GateRecord", "GateResult", "Int8GateRecord", "PreviousRecord",
           "SourceRecord", "SplitRecord", "VariantRecord", "read_export_report"]

R = TypeVar("R", bound="_Record")
Parser = Callable[[Any, str], Any]


def _map(value: Any, where: str) -> dict[str, Any]:
    return _json(obj(value, where))


def _nums(value: Any, where: str) -> dict[str, float]:
    return {str(k): number(v, at(where, str(k))) for k, v in obj(value, where).items()}


def _strs(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise BadField(where, f"expected a list, got {type(value).__name__}")
    return tuple(string(v, f"{where}[{i}]") for i, v in enumerate(value))


def _records(cls: type[R]) -> Parser:
    """A parser of an object of records, e.g. ``variants``: name -> :class:`VariantRecord`."""
    def parse(value: Any, where: str) -> dict[str, R]:
        return {str(k): cls.from_json(v, at(where, str(k)))
                for k, v in obj(value, where).items()}
    return parse


def _record(cls: type[R]) -> Parser:
    return lambda value, where: cls.from_json(value, where)


class _Record:
    """``to_json``/``from_json`` of a frozen record whose fields are its JSON keys, in order.

    ``_PARSE`` checks and converts each key's value; ``null`` reads as ``None`` (as the
    field's default where that is an object or a list), a missing key as the default. Keys
    in ``_OPTIONAL`` are left out of the JSON when ``None`` (but those :meth:`_null_keys`
    names), the others are written as ``null``; keys not in ``_PARSE`` go to ``extra`` and
    are written back after the known ones. ``_REQUIRED`` keys must be there."""

    _PARSE: ClassVar[Mapping[str, Parser]] = {}
    _REQUIRED: ClassVar[frozenset[str]] = frozenset()
    _OPTIONAL: ClassVar[frozenset[str]] = frozenset()

    def _null_keys(self) -> frozenset[str]:
        """Optional keys written even when ``None`` (their ``null`` means something)."""
        return frozenset()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        keep = self._null_keys()
        for f in fields(self):  # type: ignore[arg-type]
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None and f.name in self._OPTIONAL and f.name not in keep:
                continue
            out[f.name] = _json(value)
        out.update(_json(getattr(self, "extra", {})))
        return out

    @classmethod
    def from_json(cls: type[R], rec: Any, where: str = "") -> R:
        """The record of ``rec`` (a JSON object); ``where`` names it in errors."""
        rec = obj(rec, where)
        has_default = {f.name for f in fields(cls)  # type: ignore[arg-type]
                       if f.default_factory is not MISSING
                       or f.default not in (MISSING, None)}
        kw: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in rec.items():
            parse = cls._PARSE.get(key)
            if parse is None:
                extra[str(key)] = _json(value)
            elif value is not None:
                kw[key] = parse(value, at(where, key))
            elif key not in has_default:  # a null object or list reads as the empty one
                kw[key] = None
        for key in cls._REQUIRED:
            if kw.get(key) is None:
                raise BadField(at(where, key), "missing")
        return cls(**kw, extra=extra)


def _json(value: Any) -> Any:
    """A value as JSON: records as objects, tuples as lists, mappings as dicts - a copy, so
    that no record shares a dict with the caller."""
    if isinstance(value, _Record):
        return value.to_json()
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    return value


@dataclass(frozen=True, kw_only=True)
class AccuracyRecord(_Record):
    """A variant's score on ``split`` (fractions, as in ``facedistill eval``)."""

    split: str | None = None
    mean_balanced: float | None = None
    delta_to_fp32: float | None = None
    n_images: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    _PARSE = {"split": string, "mean_balanced": number, "delta_to_fp32": number, "n_images": integer}


@dataclass(frozen=True, kw_only=True)
class Int8GateRecord(_Record):
    """Where and how the INT8 gate measured a file (also in the file's metadata):
    ``kernels`` ``integer`` (ONNX Runtime's on this CPU) or ``emulated`` (Q/DQ in float32);
    ``max_drop_points`` is ``None`` when the gate was off."""

    recipe: str | None = None
    kernels: str | None = None
    cpu: str | None = None
    int8_class: str | None = None
    onnxruntime: str | None = None
    split: str | None = None
    drop_points: float | None = None
    max_drop_points: float | None = None
    max_abs_diff_integer_vs_emulated: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    _PARSE = {"recipe": string, "kernels": string, "cpu": string, "int8_class": string,
              "onnxruntime": string, "split": string, "drop_points": number,
              "max_drop_points": number, "max_abs_diff_integer_vs_emulated": number}


@dataclass(frozen=True, kw_only=True)
class PreviousRecord(_Record):
    """The accepted file of an earlier export that stays when this export's gate rejected
    its replacement (``created_at``: that export's)."""

    path: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    accuracy: AccuracyRecord | None = None
    int8_gate: Int8GateRecord | None = None
    created_at: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    _PARSE = {"path": string, "size_bytes": integer, "sha256": string,
              "accuracy": _record(AccuracyRecord), "int8_gate": _record(Int8GateRecord),
              "created_at": string}


@dataclass(frozen=True, kw_only=True)
class VariantRecord(_Record):
    """One ONNX variant (``fp32``, ``fp16``, ``int8``, ``int8-trt``): ``status`` ``ok`` or
    ``failed`` (then ``error``, and no ``size_bytes``/``sha256``; ``rejected_by_gate`` when
    the INT8 gate refused it). ``path`` is where the file is once committed. ``parity``
    (fp32): the largest probability difference to PyTorch per batch size, ``None`` for an
    ONNX source; ``calibration``, ``recipe``, ``qdq_conformance``, ``int8_gate`` for INT8;
    ``carried_from``: kept from the export of that time; ``previous``: see
    :class:`PreviousRecord`."""

    path: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    precision: str | None = None
    opset: int | None = None
    checker: bool | None = None
    parity: Mapping[str, float] | None = None
    parity_logits: Mapping[str, float] | None = None
    calibration: Mapping[str, Any] | None = None
    recipe: Mapping[str, Any] | None = None
    qdq_conformance: Mapping[str, Any] | None = None
    seconds: Mapping[str, float] | None = None
    status: str
    accuracy: AccuracyRecord | None = None
    max_abs_diff_to_fp32: float | None = None
    max_abs_diff_integer_vs_emulated: float | None = None
    int8_gate: Int8GateRecord | None = None
    error: str | None = None
    rejected_by_gate: bool | None = None
    previous: PreviousRecord | None = None
    carried_from: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    _PARSE = {"path": string, "size_bytes": integer, "sha256": string, "precision": string,
              "opset": integer, "checker": boolean, "parity": _nums, "parity_logits": _nums,
              "calibration": _map, "recipe": _map, "qdq_conformance": _map, "seconds": _nums,
              "status": string, "accuracy": _record(AccuracyRecord),
              "max_abs_diff_to_fp32": number, "max_abs_diff_integer_vs_emulated": number,
              "int8_gate": _record(Int8GateRecord), "error": string, "rejected_by_gate": boolean,
              "previous": _record(PreviousRecord), "carried_from": string}
    _REQUIRED = frozenset({"status"})
    _OPTIONAL = frozenset(_PARSE) - {"status"}

    def _null_keys(self) -> frozenset[str]:
        keep = {"parity"} if self.precision == "fp32" else set()
        if self.recipe is not None:
            keep.add("qdq_conformance")
        return frozenset(keep)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True, kw_only=True)
class EngineRecord(_Record):
    """One TensorRT engine (``fp32``, ``fp16``, ``int8``), built from ``onnx``; ``sidecar``
    is its ``.engine.json``. ``status`` ``ok`` or ``failed`` (then ``error`` only)."""

    path: str | None = None
    sidecar: str | None = None
    onnx: str | None = None
    status: str
    size_bytes: int | None = None
    sha256: str | None = None
    trt_version: str | None = None
    gpu_name: str | None = None
    compute_capability: str | None = None
    precision: str | None = None
    profile: Mapping[str, int] | None = None
    built_at: str | None = None
    build: Mapping[str, Any] | None = None
    seconds: float | None = None
    error: str | None = None
    carried_from: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    _PARSE = {"path": string, "sidecar": string, "onnx": string, "status": string, "size_bytes": integer,
              "sha256": string, "trt_version": string, "gpu_name": string,
              "compute_capability": string, "precision": string, "profile": _map,
              "built_at": string, "build": _map, "seconds": number, "error": string,
              "carried_from": string}
    _REQUIRED = frozenset({"status"})
    _OPTIONAL = frozenset(_PARSE) - {"status"}

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True, kw_only=True)
class SourceRecord(_Record):
    """What was exported: a ``checkpoint`` or an fp32 ``onnx`` export (one of the two), its
    sha256 (of the checkpoint the model came from), the facedistill ``version`` that wrote
    it and a ``note`` (e.g. an older checkpoint; parity not re-checked)."""

    checkpoint: str | None = None
    onnx: str | None = None
    sha256: str | None = None
    version: str | None = None
    note: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    _PARSE = {"checkpoint": string, "onnx": string, "sha256": string, "version": string,
              "note": string}
    _OPTIONAL = frozenset({"checkpoint", "onnx"})


@dataclass(frozen=True, kw_only=True)
class SplitRecord(_Record):
    """Images an export used: from ``root``'s ``split``; ``method``: the calibration's."""

    root: str | None = None
    split: str | None = None
    n_images: int | None = None
    method: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    _PARSE = {"root": string, "split": string, "n_images": integer, "method": string}
    _OPTIONAL = frozenset({"method"})


@dataclass(frozen=True, kw_only=True)
class DataRecord(_Record):
    """The INT8 calibration images and the evaluation split, each when used."""

    calibration: SplitRecord | None = None
    eval: SplitRecord | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    _PARSE = {"calibration": _record(SplitRecord), "eval": _record(SplitRecord)}
    _OPTIONAL = frozenset(_PARSE)


@dataclass(frozen=True, kw_only=True)
class GateResult(_Record):
    """One INT8 file's gate: its drop in points, whether it passed, the kernels scored."""

    drop_points: float | None = None
    passed: bool | None = None
    kernels: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    _PARSE = {"drop_points": number, "passed": boolean, "kernels": string}


@dataclass(frozen=True, kw_only=True)
class GateRecord(_Record):
    """The INT8 gate: on or off, its limit (points of mean balanced accuracy), per scored
    INT8 file its :class:`GateResult`; ``int8_drop_points``/``passed``: the ``int8`` file's
    (the keys reports had before there were several INT8 files)."""

    enabled: bool | None = None
    max_drop_points: float | None = None
    results: Mapping[str, GateResult] | None = None
    int8_drop_points: float | None = None
    passed: bool | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    _PARSE = {"enabled": boolean, "max_drop_points": number, "results": _records(GateResult),
              "int8_drop_points": number, "passed": boolean}
    _OPTIONAL = frozenset({"results", "int8_drop_points", "passed"})


@dataclass(frozen=True, kw_only=True)
class ExportReport(_Record):
    """An ``export_report.json`` (:data:`REPORT_FORMAT`): what
    :func:`~facedistill.export.api.export_model` made.

    ``variants``: name -> :class:`VariantRecord` (carried files of the previous export
    included), ``engines``: precision -> :class:`EngineRecord`; ``arch``: the model's
    architecture record; ``machine``: the exporting machine's CPU
    (:func:`facedistill.runtime.cpu.cpu_record`) and ONNX Runtime version; ``seconds``:
    ``total``. ``version``: the facedistill that wrote it."""

    format: str = REPORT_FORMAT
    version: str | None = None
    created_at: str | None = None
    source: SourceRecord = field(default_factory=SourceRecord)
    arch: Mapping[str, Any] | None = None
    out_dir: str | None = None
    opset: int | None = None
    precisions: tuple[str, ...] = ()
    int8_recipes: Mapping[str, str] = field(default_factory=dict)  # variant -> recipe
    machine: Mapping[str, Any] = field(default_factory=dict)
    data: DataRecord = field(default_factory=DataRecord)
    variants: Mapping[str, VariantRecord] = field(default_factory=dict)
    engines: Mapping[str, EngineRecord] = field(default_factory=dict)
    gate: GateRecord = field(default_factory=GateRecord)
    seconds: Mapping[str, float] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    _PARSE = {"format": string, "version": string, "created_at": string,
              "source": _record(SourceRecord), "arch": _map, "out_dir": string, "opset": integer,
              "precisions": _strs, "int8_recipes": _map, "machine": _map,
              "data": _record(DataRecord), "variants": _records(VariantRecord),
              "engines": _records(EngineRecord), "gate": _record(GateRecord),
              "seconds": _nums}

    @classmethod
    def from_json(cls, rec: Any, path: str | os.PathLike[str] | None = None  # type: ignore[override]
                  ) -> ExportReport:
        """Checked: the format and every known key's shape (a bad one is a one-line
        :class:`UserError` naming ``path``, the file, and the field); keys an older file
        lacks take their defaults."""
        rec = check_format(rec, REPORT_FORMAT, path)
        return parsed(lambda: super(ExportReport, cls).from_json(rec), "export report", path)

    # -- what readers ask ----------------------------------------------------------------------
    def ok_onnx(self) -> dict[str, str]:
        """variant (fp32, fp16, int8, int8-trt) -> path of its ONNX file, for the variants
        that are in the folder (``ok``, carried ones included)."""
        return {name: v.path for name, v in self.variants.items()
                if v.ok and v.path is not None and v.path.endswith(".onnx")}

    def ok_engines(self) -> dict[str, str]:
        """precision -> path of its TensorRT engine, for the engines in the folder."""
        return {name: e.path for name, e in self.engines.items()
                if e.ok and e.path is not None}

    @property
    def report_path(self) -> Path | None:
        """Where the report is (``out_dir/export_report.json``) once committed."""
        return None if self.out_dir is None else Path(self.out_dir) / REPORT_NAME


def read_export_report(path: str | os.PathLike[str]) -> ExportReport:
    """An ``export_report.json`` (or the export folder holding one), checked; a missing,
    unreadable or corrupt file, or one of another format, is a one-line :class:`UserError`
    naming it."""
    rec, p = read_json(path, REPORT_NAME, "export report")
    return ExportReport.from_json(rec, p)
