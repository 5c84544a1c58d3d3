"""Tuned CPU settings of a deployment: the sidecar ``bench --tune`` writes next to an ONNX file.

``<model>.onnx.tune.json`` (format :data:`TUNE_FORMAT`) holds, per batch size measured, the
fastest way found to run that file on one machine: the backend (ONNX Runtime or OpenVINO),
intra-op threads, graph optimization level, I/O binding and, for ONNX Runtime, whether the
pool may spin between calls. Two choices per batch size:

* ``shared`` (the default a :class:`~facedistill.runtime.Predictor` uses): the fastest setting
  whose threads do not spin, fair to other work on the machine;
* ``dedicated``: the fastest of all, spinning included (``Predictor(..., spin=True)``), for a
  machine that runs nothing else.

A sidecar only applies to the file and machine it was measured on: its ``onnx_sha256``, CPU
model, core count and runtime versions must match, else :func:`read_tuning` returns None and
says why (the predictor then runs ONNX Runtime with its usual settings). The file's own
metadata is not rewritten: that would change its sha256, which TensorRT engine sidecars and
export reports record. Torch-free and numpy-free.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

TUNE_FORMAT = "facedistill.tune/v1"
TUNE_SUFFIX = ".tune.json"
BACKENDS = ("ort", "ov")
POLICIES = ("shared", "dedicated")


@dataclass(frozen=True)
class Setting:
    """One way to run an ONNX file on a CPU. ``threads`` None: the runtime's default;
    ``hint`` is OpenVINO's performance hint (``latency`` | ``throughput``); ``opt_level``,
    ``io_binding`` and ``spin`` are ONNX Runtime's (:func:`~facedistill.runtime.backends.open_session`).
    """

    backend: str = "ort"
    threads: int | None = None
    opt_level: str = "all"
    io_binding: bool = False
    spin: bool = False
    hint: str | None = None

    def label(self) -> str:
        t = "default threads" if self.threads is None else f"{self.threads} thread" + (
            "s" if self.threads != 1 else "")
        if self.backend == "ov":
            return f"OpenVINO, {t}, {self.hint or 'default'} hint"
        parts = [f"ONNX Runtime, {t}", f"opt {self.opt_level}"]
        if self.io_binding:
            parts.append("I/O binding")
        parts.append("spinning" if self.spin else "no spinning")
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, rec: Any, where: str) -> Setting:
        if not isinstance(rec, Mapping):
            raise ValueError(f"{where}: expected an object")
        backend = rec.get("backend", "ort")
        if backend not in BACKENDS:
            raise ValueError(f"{where}.backend: {backend!r} is not one of {', '.join(BACKENDS)}")
        threads = rec.get("threads")
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool)
                                    or threads < 1):
            raise ValueError(f"{where}.threads: expected an integer >= 1 or null")
        return cls(backend=backend, threads=threads, opt_level=str(rec.get("opt_level", "all")),
                   io_binding=bool(rec.get("io_binding", False)), spin=bool(rec.get("spin", False)),
                   hint=None if rec.get("hint") is None else str(rec["hint"]))


def tune_path(onnx: str | os.PathLike[str]) -> Path:
    """Where the tuning of ``onnx`` lives: ``snet3.fp32.onnx`` -> ``snet3.fp32.onnx.tune.json``."""
    p = Path(onnx)
    return p.with_name(p.name + TUNE_SUFFIX)


def machine_key() -> dict[str, Any]:
    """What a tuning is only valid for: this CPU model, its cores, the runtimes' versions."""
    from facedistill.runtime.cpu import cpu_record

    cpu = cpu_record()
    return {"cpu_model": cpu["model"], "cores": cpu["cores"],
            "onnxruntime": _version("onnxruntime"), "openvino": _version("openvino")}


def _version(module: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class Tuning:
    """A read sidecar: per batch size and policy, the chosen setting and its median (ms)."""

    path: Path
    onnx_sha256: str
    machine: Mapping[str, Any]
    choices: Mapping[int, Mapping[str, tuple[Setting, float]]]

    def setting_for(self, batch: int, policy: str = "shared") -> Setting:
        """The setting tuned at the batch size nearest ``batch`` (on a log scale; ties to the
        larger)."""
        sizes = sorted(self.choices)
        best = min(sizes, key=lambda b: (abs(math.log(b) - math.log(max(batch, 1))), -b))
        return self.choices[best][policy][0]


def parse_tuning(rec: Any, path: Path) -> Tuning:
    """A sidecar's JSON, checked; a malformed one is a ``ValueError`` naming the field."""
    if not isinstance(rec, Mapping) or rec.get("format") != TUNE_FORMAT:
        raise ValueError(f"format: expected {TUNE_FORMAT!r}")
    sha = rec.get("onnx_sha256")
    if not isinstance(sha, str) or len(sha) != 64:
        raise ValueError("onnx_sha256: expected a sha256 hex digest")
    batches = rec.get("batches")
    if not isinstance(batches, Mapping) or not batches:
        raise ValueError("batches: expected a non-empty object")
    choices: dict[int, dict[str, tuple[Setting, float]]] = {}
    for key, entry in batches.items():
        if not str(key).isdigit() or int(key) < 1 or not isinstance(entry, Mapping):
            raise ValueError(f"batches.{key}: expected a batch size and an object")
        per: dict[str, tuple[Setting, float]] = {}
        for policy in POLICIES:
            pick = entry.get(policy)
            where = f"batches.{key}.{policy}"
            if not isinstance(pick, Mapping):
                raise ValueError(f"{where}: missing")
            ms = pick.get("median_ms")
            if not isinstance(ms, int | float) or isinstance(ms, bool):
                raise ValueError(f"{where}.median_ms: expected a number")
            per[policy] = (Setting.from_json(pick.get("setting"), f"{where}.setting"), float(ms))
        choices[int(key)] = per
    machine = rec.get("machine")
    if not isinstance(machine, Mapping):
        raise ValueError("machine: expected an object")
    return Tuning(path=path, onnx_sha256=sha, machine=dict(machine), choices=choices)


def read_tuning(onnx: str | os.PathLike[str], sha256: str | None = None
                ) -> tuple[Tuning | None, str | None]:
    """The tuning beside ``onnx`` if it applies here: (tuning, None), or (None, why not)."""
    path = tune_path(onnx)
    if not path.is_file():
        return None, "not tuned (no " + path.name + ")"
    try:
        tuning = parse_tuning(json.loads(path.read_text(encoding="utf-8")), path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        return None, f"{path}: ignored, not a readable tuning ({exc})"
    if sha256 is None:
        from facedistill.io import sha256_file

        sha256 = sha256_file(onnx)
    if tuning.onnx_sha256 != sha256:
        return None, f"{path}: ignored, it was measured on another version of the file"
    here = machine_key()
    for key, value in here.items():
        if tuning.machine.get(key) != value:
            return None, (f"{path}: ignored, measured with {key} {tuning.machine.get(key)!r}, "
                          f"this machine has {value!r} (run 'facedistill bench --tune' here)")
    return tuning, None
