"""A bench result, typed: :class:`BenchResult` of :class:`BenchRow` (torch-free, numpy-free).

:func:`facedistill.bench.run_bench` returns a :class:`BenchResult`; ``bench.json`` is its
:meth:`BenchResult.to_json` (format :data:`FORMAT`, the same keys in the same order as before
the records existed) and :func:`read_bench` reads one back, files of older versions included
(fields they lack take their defaults).

JSON cannot hold a non-finite number: the writer (:func:`facedistill.bench.report.to_json`)
turns one into ``null``, and the reader turns a ``null`` latency or throughput back into
``nan`` (shown as ``-``), so reading and writing a file again leaves it as it was.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from facedistill.records import (
    BadField,
    check_format,
    integer,
    number,
    obj,
    parsed,
    read_json,
    string,
)

FORMAT = "facedistill.bench/v1"
LATER = {"since": "0.1.0+floors"}
"""Metadata of fields added within v1 (left out of the JSON while empty)."""

__all__ = ["FORMAT", "Accuracy", "BenchResult", "BenchRow", "LatencyStats", "Power", "Skipped",
           "read_bench"]


def _need(rec: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in rec:
        raise BadField(f"{where}.{key}" if where else key, "missing")
    return rec[key]


def _num(value: Any, where: str) -> float:
    """A number as it was written (an int stays an int); ``null`` (a non-finite number in the
    file, or a key an older file lacks) reads as ``nan``."""
    return math.nan if value is None else number(value, where)


def _opt_num(value: Any, where: str) -> float | None:
    return None if value is None else _num(value, where)



def _opt_int(value: Any, where: str) -> int | None:
    return None if value is None else integer(value, where)



def _opt_str(value: Any, where: str) -> str | None:
    return None if value is None else string(value, where)


def _dict(value: Any, where: str) -> dict[str, Any]:
    """A copy (a record shares nothing mutable with what it was read from)."""
    return copy.deepcopy(dict(obj({} if value is None else value, where)))


def _plain(obj: Any) -> dict[str, Any]:
    """A record's fields in declaration order, nested records and tuples as dicts and lists,
    mappings copied (changing the JSON object leaves the frozen record as it was). Fields added
    later (``metadata={"since": ...}``) are left out while they hold their empty default, so
    a file written before them reads and writes back byte for byte."""
    out: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get("since") and not value:
            continue
        if hasattr(value, "to_json"):
            value = value.to_json()
        elif isinstance(value, tuple):
            value = [v.to_json() if hasattr(v, "to_json") else v for v in value]
        elif isinstance(value, Mapping):
            value = copy.deepcopy(dict(value))
        out[f.name] = value
    return out


@dataclass(frozen=True)
class LatencyStats:
    """Milliseconds per batch over the timed runs (:func:`facedistill.bench.stats.summarize`)."""

    median: float
    p90: float
    p99: float
    mean: float
    min: float
    max: float
    std: float

    @classmethod
    def from_samples(cls, values_ms: Sequence[float]) -> LatencyStats:
        from facedistill.bench.stats import summarize

        return cls(**summarize(values_ms))

    def to_json(self) -> dict[str, float]:
        return _plain(self)

    @classmethod
    def from_json(cls, rec: Any, where: str = "latency_ms") -> LatencyStats:
        rec = obj(rec, where)
        return cls(**{f.name: _num(_need(rec, f.name, where), f"{where}.{f.name}")
                      for f in fields(cls)})


@dataclass(frozen=True)
class Accuracy:
    """Mean balanced accuracy (a fraction) of one variant on ``split`` at its stored
    thresholds; ``delta_to_fp32`` against the fp32 variant ``reference`` of the same model
    (``None`` when the run had none)."""

    split: str
    mean_balanced: float
    n_images: int
    delta_to_fp32: float | None = None
    reference: str | None = None

    def to_json(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_json(cls, rec: Any, where: str = "accuracy") -> Accuracy:
        rec = obj(rec, where)
        return cls(split=string(_need(rec, "split", where), f"{where}.split"),
                   mean_balanced=_num(_need(rec, "mean_balanced", where),
                                      f"{where}.mean_balanced"),
                   n_images=integer(_need(rec, "n_images", where), f"{where}.n_images"),
                   delta_to_fp32=_opt_num(rec.get("delta_to_fp32"), f"{where}.delta_to_fp32"),
                   reference=_opt_str(rec.get("reference"), f"{where}.reference"))


@dataclass(frozen=True)
class Power:
    """Board power while one config ran for ``seconds`` (``runs`` calls), on a Jetson:
    ``source`` (sysfs | tegrastats), the total ``rail`` and its ``mean_mw``, every rail's mean
    in ``rails_mw``, ``samples`` read, and the energy per image in mJ."""

    source: str
    rail: str | None
    mean_mw: float
    rails_mw: Mapping[str, float] = field(default_factory=dict)
    samples: int = 0
    energy_mj_per_image: float = math.nan
    seconds: float = math.nan
    runs: int | None = None

    def to_json(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_json(cls, rec: Any, where: str = "power") -> Power:
        rec = obj(rec, where)
        return cls(source=string(_need(rec, "source", where), f"{where}.source"),
                   rail=_opt_str(rec.get("rail"), f"{where}.rail"),
                   mean_mw=_num(_need(rec, "mean_mw", where), f"{where}.mean_mw"),
                   rails_mw={str(k): _num(v, f"{where}.rails_mw.{k}") for k, v in
                             _dict(rec.get("rails_mw"), f"{where}.rails_mw").items()},
                   samples=integer(rec.get("samples", 0), f"{where}.samples"),
                   energy_mj_per_image=_num(rec.get("energy_mj_per_image"),
                                            f"{where}.energy_mj_per_image"),
                   seconds=_num(rec.get("seconds"), f"{where}.seconds"),
                   runs=_opt_int(rec.get("runs"), f"{where}.runs"))


@dataclass(frozen=True)
class Skipped:
    """A (variant, batch) config that was not measured, and why (e.g. a static batch axis)."""

    artifact: str
    precision: str
    backend: str
    batch: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_json(cls, rec: Any, where: str = "skipped") -> Skipped:
        rec = obj(rec, where)
        return cls(artifact=string(_need(rec, "artifact", where), f"{where}.artifact"),
                   precision=string(rec.get("precision", ""), f"{where}.precision"),
                   backend=string(rec.get("backend", ""), f"{where}.backend"),
                   batch=integer(_need(rec, "batch", where), f"{where}.batch"),
                   reason=string(rec.get("reason", ""), f"{where}.reason"))


@dataclass(frozen=True, kw_only=True)
class BenchRow:
    """One artifact variant at one batch size (the fields are the JSON keys, in order).

    ``kind``: checkpoint | onnx | engine; ``backend``: ort-cpu, ort-cuda, ort-trt, torch-cpu,
    torch-cuda, trt; ``mode``: default | autocast | cuda_graph; ``macs``: one image;
    ``reasons``: why each ``None`` field is ``None``. ``details`` is the backend's own record
    (providers, threads, engine profile, ...)."""

    model: str
    arch: Mapping[str, Any] = field(default_factory=dict)
    source_sha256: str | None = None
    artifact: str
    kind: str = ""
    backend: str
    precision: str
    mode: str = "default"
    layout: str = ""
    batch: int
    input_shape: tuple[int, ...] = ()
    threads: int | None = None
    warmup: int = 0
    runs: int = 0
    latency_ms: LatencyStats
    per_image_ms: float
    throughput_ips: float
    gpu_compute_ms: LatencyStats | None = None
    params: int | None = None
    macs: int | None = None
    file_bytes: int | None = None
    accuracy: Accuracy | None = None
    power: Power | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    reasons: Mapping[str, str] = field(default_factory=dict)
    #: the per-call floor at this input shape (ms), the median over it, floor + FLOPs at the
    #: peak (ms) and the share of the precision's peak reached (%) (:mod:`.floor`)
    floor_ms: float | None = field(default=None, metadata=LATER)
    x_floor: float | None = field(default=None, metadata=LATER)
    bound_ms: float | None = field(default=None, metadata=LATER)
    peak_pct: float | None = field(default=None, metadata=LATER)

    def to_json(self) -> dict[str, Any]:
        """The row's JSON object (nested records as objects, ``None`` as ``null``)."""
        return _plain(self)

    @classmethod
    def from_json(cls, rec: Any, where: str = "row") -> BenchRow:
        """A row of a ``bench.json``; keys an older file lacks take their defaults (a missing
        ``per_image_ms``/``throughput_ips`` is worked out from the latency)."""
        from facedistill.bench.stats import throughput

        rec = obj(rec, where)

        def at(key: str) -> str:
            return f"{where}.{key}"

        batch = integer(_need(rec, "batch", where), at("batch"))
        lat = LatencyStats.from_json(_need(rec, "latency_ms", where), at("latency_ms"))
        gpu = rec.get("gpu_compute_ms")
        acc = rec.get("accuracy")
        pw = rec.get("power")
        shape = rec.get("input_shape") or []
        if not isinstance(shape, list | tuple):
            raise BadField(at("input_shape"), f"expected a list, got {shape!r}")
        per_image = rec.get("per_image_ms", lat.median / batch if batch else math.nan)
        ips = rec.get("throughput_ips", throughput(lat.mean, batch))
        return cls(
            model=string(_need(rec, "model", where), at("model")),
            arch=_dict(rec.get("arch"), at("arch")),
            source_sha256=_opt_str(rec.get("source_sha256"), at("source_sha256")),
            artifact=string(_need(rec, "artifact", where), at("artifact")),
            kind=string(rec.get("kind", ""), at("kind")),
            backend=string(_need(rec, "backend", where), at("backend")),
            precision=string(_need(rec, "precision", where), at("precision")),
            mode=string(rec.get("mode", "default"), at("mode")),
            layout=string(rec.get("layout", ""), at("layout")),
            batch=batch,
            input_shape=tuple(integer(d, at("input_shape")) for d in shape),
            threads=_opt_int(rec.get("threads"), at("threads")),
            warmup=integer(rec.get("warmup", 0), at("warmup")),
            runs=integer(rec.get("runs", 0), at("runs")),
            latency_ms=lat,
            per_image_ms=_num(per_image, at("per_image_ms")),
            throughput_ips=_num(ips, at("throughput_ips")),
            gpu_compute_ms=None if gpu is None else LatencyStats.from_json(
                gpu, at("gpu_compute_ms")),
            params=_opt_int(rec.get("params"), at("params")),
            macs=_opt_int(rec.get("macs"), at("macs")),
            file_bytes=_opt_int(rec.get("file_bytes"), at("file_bytes")),
            accuracy=None if acc is None else Accuracy.from_json(acc, at("accuracy")),
            power=None if pw is None else Power.from_json(pw, at("power")),
            details=_dict(rec.get("details"), at("details")),
            reasons={str(k): str(v) for k, v in _dict(rec.get("reasons"), at("reasons")).items()},
            **{k: _opt_num(rec.get(k), at(k)) for k in ("floor_ms", "x_floor", "bound_ms",
                                                         "peak_pct")},
        )


@dataclass(frozen=True, kw_only=True)
class BenchResult:
    """What one ``facedistill bench`` measured (:data:`FORMAT`): the settings it ran with
    (``config``: artifacts, backend, batches, warmup, iters, seconds, rounds, ...), the machine
    (``environment``, see :func:`facedistill.bench.environment.environment`), one
    :class:`BenchRow` per variant x batch, and the configs it skipped. ``version``: the
    facedistill that wrote it."""

    format: str = FORMAT
    version: str | None = None
    created: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    environment: Mapping[str, Any] = field(default_factory=dict)
    rows: tuple[BenchRow, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    #: the machine's floors measured in the same rounds (:func:`.floor.summarize`), or {}
    floors: Mapping[str, Any] = field(default_factory=dict, metadata=LATER)
    #: with ``--tune``: per ONNX file and batch size, the chosen settings and the baselines
    #: (:func:`.tune.summary_rows`)
    tuning: tuple[Mapping[str, Any], ...] = field(default=(), metadata=LATER)

    def to_json(self) -> dict[str, Any]:
        """The ``bench.json`` object (the writer makes non-finite numbers ``null``)."""
        return _plain(self)

    @classmethod
    def from_json(cls, rec: Any, path: str | os.PathLike[str] | None = None) -> BenchResult:
        """Checked: the format and every row's shape (a bad one is a :class:`UserError`
        naming ``path`` and the field); keys an older file lacks take their defaults."""
        rec = check_format(rec, FORMAT, path)

        def parse() -> BenchResult:
            rows = rec.get("rows", [])
            skipped = rec.get("skipped") or []
            if not isinstance(rows, list):
                raise BadField("rows", "expected a list")
            if not isinstance(skipped, list):
                raise BadField("skipped", "expected a list")
            return cls(
                format=FORMAT,
                version=_opt_str(rec.get("version"), "version"),
                created=_opt_str(rec.get("created"), "created"),
                config=_dict(rec.get("config"), "config"),
                environment=_dict(rec.get("environment"), "environment"),
                rows=tuple(BenchRow.from_json(r, f"rows[{i}]") for i, r in enumerate(rows)),
                skipped=tuple(Skipped.from_json(s, f"skipped[{i}]")
                              for i, s in enumerate(skipped)),
                floors=_dict(rec.get("floors"), "floors"),
                tuning=tuple(_dict(t, f"tuning[{i}]")
                             for i, t in enumerate(rec.get("tuning") or [])))

        return parsed(parse, "bench file", path)


def read_bench(path: str | os.PathLike[str]) -> BenchResult:
    """A ``bench.json`` (or the folder holding one), checked; a missing, unreadable or corrupt
    file, or one of another format, is a one-line :class:`UserError` naming it."""
    rec, p = read_json(path, "bench.json", "bench file")
    return BenchResult.from_json(rec, p)
