"""What an exported model says about itself: the ONNX ``metadata_props`` / engine-sidecar contract.

Numpy-free and torch-free. The exporter writes :func:`build_metadata`'s string map into the
ONNX file (and copies it into every TensorRT engine's sidecar); the runtime and the bench read
it back with :func:`parse_metadata`. Every value is a string; structured values are JSON.

=======================  ===================================================================
key                      value
=======================  ===================================================================
``facedistill.format``   ``facedistill.onnx/v1``
``facedistill.version``  the package version that exported it
``arch``                 JSON ``{"arch", "width", "num_attrs"}``
``input_size``           JSON ``[height, width]``
``color``                ``RGB`` (channel order of the input tensor)
``mean`` / ``std``       JSON lists of 3 floats (applied after scaling to [0, 1])
``preprocess``           JSON: the full :class:`~facedistill.runtime.preprocess.Preprocess` record
``attributes``           JSON list of attribute names, in output order
``thresholds``           JSON list: per-attribute decision thresholds on the *probability*
                         (positive iff probability >= threshold)
``logit_thresholds``     JSON list: the same thresholds on the logits, as in the checkpoint
``val_balanced``         (optional) JSON list: per attribute, the balanced accuracy on the
                         validation split at its threshold (a fraction; null where undefined),
                         from the checkpoint; the runtime flags attributes under a reliability
                         floor with it. Absent in files exported before it was recorded
``regions``              (optional) JSON ``{group: [cx, cy, side]}``: the face regions a
                         cascade's part subnets see, the same for every input (unit
                         coordinates of the input: centre and side); absent for other models
``precision``            ``fp32`` | ``fp16`` | ``int8``
``source_sha256``        sha256 of the checkpoint the model was exported from
``input_name``           name of the input tensor (``input``), NCHW float32, dynamic ``batch``
``output_names``         JSON list: ``["probabilities", "logits"]``
``accuracy``             (optional) JSON: ``{"split", "mean_balanced", "delta_to_fp32",
                         "n_images"}`` measured with ONNX Runtime at export time
``int8_recipe``          (INT8) ``cpu`` | ``cpu-vnni`` | ``tensorrt``: how it was quantized
                         (:data:`facedistill.export.quantize.INT8_RECIPES`); absent in files
                         exported before recipes, which have 8-bit weights
``int8_weight_bits``     (INT8) ``7`` or ``8``: the range of the weights (7: within +-64)
``int8_gate``            (INT8) JSON: where the accuracy gate measured it - ``{"recipe",
                         "kernels" (integer | emulated), "cpu", "int8_class", "onnxruntime",
                         "split", "drop_points", "max_drop_points", ...}``
=======================  ===================================================================
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from facedistill.errors import UserError
from facedistill.runtime.preprocess import Preprocess

FORMAT_KEY = "facedistill.format"
FORMAT = "facedistill.onnx/v1"
INPUT_NAME = "input"
OUTPUT_NAMES = ("probabilities", "logits")
PRECISIONS = ("fp32", "fp16", "int8")
_REQUIRED = ("arch", "preprocess", "attributes", "thresholds", "precision")


class MetadataError(UserError):
    """A model file lacks facedistill's metadata or carries a malformed value."""


def _sigmoid(t: float) -> float:
    if t >= 0:
        return 1.0 / (1.0 + math.exp(-t))
    e = math.exp(t)
    return e / (1.0 + e)


def probability_thresholds(logit_thresholds: Sequence[float]) -> list[float]:
    """Logit thresholds (the checkpoint's) to probability thresholds (the runtime's)."""
    return [_sigmoid(float(t)) for t in logit_thresholds]


def build_metadata(
    *,
    version: str,
    arch: Mapping[str, Any],
    preprocess: Mapping[str, Any],
    attributes: Sequence[str],
    logit_thresholds: Sequence[float],
    precision: str,
    source_sha256: str,
    accuracy: Mapping[str, Any] | None = None,
    val_balanced: Sequence[float | None] | None = None,
    regions: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, str]:
    """The string map stored in an exported model (see the module docstring).
    ``val_balanced``: per attribute, the validation balanced accuracy (None where undefined);
    ``regions``: a cascade's fixed part boxes; None leaves either key out."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} not one of {PRECISIONS}")
    if len(attributes) != len(logit_thresholds):
        raise ValueError(f"{len(attributes)} attributes but {len(logit_thresholds)} thresholds")
    if val_balanced is not None:
        problem = _check_balanced(list(val_balanced), len(attributes))
        if problem:
            raise ValueError(f"val_balanced: {problem}")
    if regions is not None:
        problem = _check_regions(regions)
        if problem:
            raise ValueError(f"regions: {problem}")
    record = Preprocess.from_record(dict(preprocess)).to_record()
    meta = {
        FORMAT_KEY: FORMAT,
        "facedistill.version": str(version),
        "arch": json.dumps(dict(arch)),
        "input_size": json.dumps(record["size"]),
        "color": record["color"],
        "mean": json.dumps(record["mean"]),
        "std": json.dumps(record["std"]),
        "preprocess": json.dumps(record),
        "attributes": json.dumps(list(attributes)),
        "thresholds": json.dumps(probability_thresholds(logit_thresholds)),
        "logit_thresholds": json.dumps([float(t) for t in logit_thresholds]),
        "precision": precision,
        "source_sha256": str(source_sha256),
        "input_name": INPUT_NAME,
        "output_names": json.dumps(list(OUTPUT_NAMES)),
    }
    if accuracy is not None:
        meta["accuracy"] = json.dumps(dict(accuracy))
    if val_balanced is not None:
        meta["val_balanced"] = json.dumps([None if v is None else float(v) for v in val_balanced])
    if regions is not None:
        meta["regions"] = json.dumps({g: [float(v) for v in b] for g, b in regions.items()})
    return meta


def _check_regions(regions: Any) -> str | None:
    """Why ``regions`` is not ``{group: [cx, cy, side]}`` in unit coordinates, or None."""
    if not isinstance(regions, Mapping) or not regions:
        return "expected a map of region name to [cx, cy, side]"
    for name, box in regions.items():
        if (not isinstance(box, list | tuple) or len(box) != 3
                or any(isinstance(v, bool) or not isinstance(v, int | float)
                       or not math.isfinite(v) for v in box) or not 0 < box[2] <= 1):
            return f"{name}: expected [cx, cy, side] with 0 < side <= 1, found {box!r}"
    return None


def _check_balanced(values: Any, n: int) -> str | None:
    """Why ``values`` is not ``n`` balanced accuracies (fractions in [0, 1] or None), or None."""
    if not isinstance(values, list) or len(values) != n:
        return f"expected a list of {n} numbers"
    for v in values:
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
            return f"expected fractions in [0, 1] or null, found {v!r}"
    return None


@dataclass(frozen=True)
class ModelInfo:
    """The parsed metadata of one exported model."""

    version: str
    arch: dict[str, Any]
    preprocess: Preprocess
    attributes: tuple[str, ...]
    thresholds: tuple[float, ...]
    logit_thresholds: tuple[float, ...]
    precision: str
    source_sha256: str
    input_name: str = INPUT_NAME
    output_names: tuple[str, ...] = OUTPUT_NAMES
    accuracy: dict[str, Any] | None = None
    int8_recipe: str | None = None
    int8_weight_bits: int | None = None
    int8_gate: dict[str, Any] | None = None
    #: per attribute, the validation balanced accuracy (None where undefined); None for a file
    #: exported without it
    val_balanced: tuple[float | None, ...] | None = None
    #: a cascade's fixed part boxes, ``{group: (cx, cy, side)}`` in unit coordinates of the
    #: input; None for other models
    regions: dict[str, tuple[float, float, float]] | None = None
    raw: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def num_attrs(self) -> int:
        return len(self.attributes)


def parse_metadata(meta: Mapping[str, str], source: str | None = None) -> ModelInfo:
    """Validate and parse the map written by :func:`build_metadata`; ``source`` names the file
    in errors."""
    if meta.get(FORMAT_KEY) != FORMAT:
        got = meta.get(FORMAT_KEY)
        raise MetadataError(
            "not a facedistill model: no facedistill metadata"
            if got is None else f"unknown metadata format {got!r} (expected {FORMAT!r})",
            path=source)
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise MetadataError(f"metadata lacks {', '.join(missing)}", path=source)

    def load(key: str, default: Any = None) -> Any:
        if key not in meta:
            return default
        try:
            return json.loads(meta[key])
        except json.JSONDecodeError as exc:
            raise MetadataError(f"malformed JSON: {exc.msg}", path=source, field=key) from None

    try:
        preprocess = Preprocess.from_record(load("preprocess"))
    except (ValueError, KeyError, TypeError) as exc:
        raise MetadataError(str(exc), path=source, field="preprocess") from None
    attributes = load("attributes")
    thresholds = load("thresholds")
    logit_thresholds = load("logit_thresholds", [])
    if not isinstance(attributes, list) or not all(isinstance(a, str) for a in attributes):
        raise MetadataError("expected a list of names", path=source, field="attributes")
    if not isinstance(thresholds, list) or len(thresholds) != len(attributes):
        raise MetadataError(f"expected {len(attributes)} numbers", path=source,
                            field="thresholds")
    numbers = []
    for key, values in (("thresholds", thresholds), ("logit_thresholds", logit_thresholds)):
        if not isinstance(values, list):
            raise MetadataError("expected a list of numbers", path=source, field=key)
        # bool is an int to Python; a threshold of true is still not a number
        bad = [t for t in values if isinstance(t, bool) or not isinstance(t, (int, float))
               or not math.isfinite(t)]
        if bad:
            raise MetadataError(f"expected finite numbers, found {bad[0]!r}", path=source,
                                field=key)
        numbers.append([float(t) for t in values])
    if logit_thresholds and len(logit_thresholds) != len(attributes):
        raise MetadataError(f"expected {len(attributes)} numbers", path=source,
                            field="logit_thresholds")
    precision = meta["precision"]
    if precision not in PRECISIONS:
        raise MetadataError(f"{precision!r} not one of {PRECISIONS}", path=source,
                            field="precision")
    bits: int | None = None
    if precision == "int8":
        try:
            bits = int(meta.get("int8_weight_bits", "8"))  # older files: 8-bit weights
        except ValueError:
            raise MetadataError("expected 7 or 8", path=source, field="int8_weight_bits") from None
    val_balanced = load("val_balanced")
    if val_balanced is not None:
        problem = _check_balanced(val_balanced, len(attributes))
        if problem:
            raise MetadataError(problem, path=source, field="val_balanced")
        val_balanced = tuple(None if v is None else float(v) for v in val_balanced)
    regions = load("regions")
    if regions is not None:
        problem = _check_regions(regions)
        if problem:
            raise MetadataError(problem, path=source, field="regions")
        regions = {str(g): tuple(float(v) for v in b) for g, b in regions.items()}
    arch = load("arch")
    if not isinstance(arch, dict) or "arch" not in arch:
        raise MetadataError("expected {\"arch\", \"width\", \"num_attrs\"}", path=source,
                            field="arch")
    return ModelInfo(
        version=meta.get("facedistill.version", "unknown"),
        arch=arch,
        preprocess=preprocess,
        attributes=tuple(attributes),
        thresholds=tuple(numbers[0]),
        logit_thresholds=tuple(numbers[1]),
        precision=precision,
        source_sha256=meta.get("source_sha256", ""),
        input_name=meta.get("input_name", INPUT_NAME),
        output_names=tuple(load("output_names", list(OUTPUT_NAMES))),
        accuracy=load("accuracy"),
        int8_recipe=meta.get("int8_recipe"),
        int8_weight_bits=bits,
        int8_gate=load("int8_gate"),
        val_balanced=val_balanced,
        regions=regions,
        raw=dict(meta),
    )
