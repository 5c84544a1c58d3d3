"""FP16 and INT8 (explicit Q/DQ) variants of an FP32 ONNX export; no torch.

* **FP16**: ``onnxconverter_common.float16.convert_float_to_float16(keep_io_types=True)``:
  weights and compute in float16, the ``input`` and both outputs stay float32 (explicit
  casts). The sigmoid runs in float32 on the (fp16-computed) logits, so the probabilities
  keep float32 resolution near the decision thresholds. Loads on TensorRT 11 (strong typing:
  the ONNX carries the precision) and on ONNX Runtime (no speed-up on the CPU EP).
* **INT8**: ONNX Runtime static quantization, QDQ format: ``quant_pre_process`` (shape
  inference + graph optimisation), then ``quantize_static`` with int8 activations and weights,
  symmetric per-channel weights, calibrated (min-max, entropy or percentile) on real training
  images preprocessed exactly like training's eval transform. The logits (the classifier's
  output) and the sigmoid are kept in float32: an int8 probability has only ~1/127
  resolution, too coarse for per-attribute thresholds.

  The recipe depends on the target (:data:`INT8_RECIPES`): ``cpu`` keeps the weights to 7 bits
  so that ONNX Runtime's integer kernels cannot saturate on x86 CPUs without VNNI
  (:mod:`facedistill.runtime.cpu`) and quantizes biases to int32 as ONNX Runtime fuses them;
  ``cpu-vnni`` uses 8-bit weights for CPUs with VNNI/AMX or Arm dot-product. Both give the
  activations a zero point, which lets ONNX Runtime fold every ReLU into its conv (a symmetric
  activation scale leaves DequantizeLinear -> ReLU -> QuantizeLinear in float between the
  integer convs, which made INT8 slower than FP32 for the small nets:
  ``benchmarks/int8_small.py``). ``tensorrt`` uses symmetric activations, 8-bit weights and
  float biases (TensorRT's ONNX parser rejects an INT32 ``DequantizeLinear``)
  and must pass :func:`facedistill.export.qdq_check.check_tensorrt_qdq`.

Both keep the FP32 file's metadata with ``precision`` changed; INT8 adds ``int8_recipe`` and
``int8_weight_bits`` (files exported before recipes have neither: 8-bit weights, int32 biases).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facedistill.errors import UserError
from facedistill.export.onnx import (
    ExportError,
    check_onnx,
    file_record,
    get_metadata,
    load_onnx,
    quiet,
    save_onnx,
    set_metadata,
)
from facedistill.io import STALE_DIR_S, sweep_stale
from facedistill.runtime.metadata import INPUT_NAME, OUTPUT_NAMES, parse_metadata

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
CALIB_BATCH = 32
CALIB_CHUNK_IMAGES = 128  # images whose activations the calibrator holds at once
DEFAULT_CALIB_N = 512
DEFAULT_CALIB_SEED = 0
QUANT_FORMATS = ("qdq", "qoperator")


@dataclass(frozen=True)
class Int8Recipe:
    """How an INT8 file is quantized for one deployment target."""

    name: str
    target: str  # "onnxruntime" (CPU integer kernels) | "tensorrt"
    weight_bits: int  # 7: weights within +-64 (ONNX Runtime's reduce_range); 8: +-127
    quantize_bias: bool  # int32 bias initializers (ONNX Runtime fuses them; TensorRT refuses)
    summary: str
    # activations with a zero point (ONNX Runtime then folds each ReLU into its conv) or
    # symmetric (zero points 0: what TensorRT requires)
    symmetric_activations: bool = False

    @property
    def reduce_range(self) -> bool:
        return self.weight_bits == 7


INT8_RECIPES = {
    "cpu": Int8Recipe("cpu", "onnxruntime", 7, True,
                      "ONNX Runtime on any CPU: 7-bit weights cannot saturate the 16-bit "
                      "sums of x86 kernels without VNNI"),
    "cpu-vnni": Int8Recipe("cpu-vnni", "onnxruntime", 8, True,
                           "ONNX Runtime on CPUs with VNNI/AMX or Arm dot-product only: 8-bit "
                           "weights, which AVX2/AVX-512 CPUs without VNNI saturate"),
    "tensorrt": Int8Recipe("tensorrt", "tensorrt", 8, False,
                           "TensorRT explicit quantization: symmetric 8-bit, zero points 0, "
                           "per-channel weights on axis 0, float biases",
                           symmetric_activations=True),
}
DEFAULT_INT8_RECIPE = "cpu"


def int8_recipe(name: str) -> Int8Recipe:
    """The recipe called ``name``, or a UserError naming the field ``int8_recipe``."""
    if name not in INT8_RECIPES:
        raise UserError(f"INT8 recipe must be one of {', '.join(INT8_RECIPES)}, got {name!r}",
                        field="int8_recipe")
    return INT8_RECIPES[name]


def _variant_metadata(meta: dict[str, str], precision: str, **extra: str) -> dict[str, str]:
    """The FP32 file's metadata for a ``precision`` variant (accuracy is measured anew)."""
    out = {k: v for k, v in meta.items() if k != "accuracy"}
    out["precision"] = precision
    out.update(extra)
    return out


def _source(src: str | os.PathLike[str]) -> tuple[Any, dict[str, str]]:
    """Load an FP32 facedistill ONNX export and its metadata (checked)."""
    model = load_onnx(src)
    meta = get_metadata(model)
    info = parse_metadata(meta, source=str(src))
    if info.precision != "fp32":
        raise ExportError(f"the source must be an fp32 export, this one is {info.precision}",
                          path=src, field="precision")
    return model, meta


# ---------------------------------------------------------------------------------------
# FP16
# ---------------------------------------------------------------------------------------
def _detach_sigmoid(model: Any) -> Any:
    """Remove the ``logits -> Sigmoid -> probabilities`` node and the ``probabilities``
    output (returned, to be re-attached in float32 after the conversion)."""
    sig = [n for n in model.graph.node if n.op_type == "Sigmoid" and list(n.output) ==
           [OUTPUT_NAMES[0]]]
    if len(sig) != 1 or list(sig[0].input) != [OUTPUT_NAMES[1]]:
        raise ExportError("not a facedistill graph: expected probabilities = Sigmoid(logits)")
    model.graph.node.remove(sig[0])
    prob = next(o for o in model.graph.output if o.name == OUTPUT_NAMES[0])
    model.graph.output.remove(prob)
    return prob


def convert_fp16(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> dict[str, Any]:
    """Write the FP16 variant of the FP32 export ``src`` to ``dst`` (checked); returns
    ``{"path", "size_bytes", "sha256", "precision", "checker", "seconds"}``."""
    import onnx
    from onnx import helper

    try:
        from onnxconverter_common import float16
    except ImportError:
        raise UserError("FP16 conversion needs onnxconverter-common: "
                        "pip install 'facedistill[train]'") from None
    t0 = time.perf_counter()
    model, meta = _source(src)
    del model.graph.value_info[:]  # stale float32 annotations confuse the converter
    prob = _detach_sigmoid(model)
    with quiet(("",)):
        half = float16.convert_float_to_float16(model, keep_io_types=True)
    half.graph.node.append(helper.make_node("Sigmoid", [OUTPUT_NAMES[1]], [OUTPUT_NAMES[0]],
                                            name="probabilities_fp32"))
    outputs = list(half.graph.output)
    del half.graph.output[:]
    half.graph.output.extend([prob, *outputs])
    if [o.name for o in half.graph.output] != list(OUTPUT_NAMES) or any(
            o.type.tensor_type.elem_type != onnx.TensorProto.FLOAT
            for o in (*half.graph.input, *half.graph.output)):
        raise ExportError("FP16 conversion changed the graph's inputs/outputs", path=src)
    set_metadata(half, _variant_metadata(meta, "fp16"))
    save_onnx(half, dst)
    try:
        check_onnx(dst)
    except BaseException:
        Path(dst).unlink(missing_ok=True)
        raise
    return {**file_record(dst), "precision": "fp16", "checker": True,
            "seconds": {"convert": time.perf_counter() - t0}}


# ---------------------------------------------------------------------------------------
# INT8
# ---------------------------------------------------------------------------------------
def calibration_images(data: str | os.PathLike[str] | Any, n: int = DEFAULT_CALIB_N, *,
                       variant: str | None = None, split: str = "train",
                       seed: int = DEFAULT_CALIB_SEED) -> Any:
    """A seeded random sample of ``n`` images of ``split`` (all of them when the split has
    fewer), in dataset order, as an :class:`~facedistill.bench.accuracy.ImageList` (with
    boxes for wild faces)."""
    from facedistill.bench.accuracy import ImageList, split_images

    if not isinstance(n, int) or n < 1:
        raise UserError(f"the number of calibration images must be >= 1, got {n!r}",
                        field="calib_n")
    paths, _labels, _names = split_images(data, split, variant)
    if len(paths) > n:
        keep = np.sort(np.random.default_rng(seed).choice(len(paths), n, replace=False))
    else:
        keep = np.arange(len(paths))
    boxes = None if paths.boxes is None else paths.boxes[keep]
    return ImageList([paths[i] for i in keep], boxes)


class CalibrationReader:
    """ONNX Runtime ``CalibrationDataReader`` over preprocessed images, one batch per item.

    Supports ``__len__``/``set_range`` so the calibrator can collect a few batches at a time
    (``CalibStridedMinMax``, which every calibration method honours): its memory then holds
    the activations of ``CALIB_CHUNK_IMAGES`` images, not of all of them.

    Every batch has the same size: ONNX Runtime's histogram calibrators (entropy, percentile)
    stack the batches' activations and fail on a short last batch (onnxruntime issue #18792).
    Fewer images than ``batch_size`` make one batch; otherwise the last batch is filled up with
    the first images again (``padded`` of them: at most ``batch_size - 1`` repeats, which min-max
    does not see and a histogram barely does).
    """

    def __init__(self, images: np.ndarray, batch_size: int = CALIB_BATCH) -> None:
        if images.ndim != 4 or images.shape[0] == 0:
            raise ValueError(f"expected [N, 3, H, W] images, got {images.shape}")
        n = images.shape[0]
        self.batch_size = min(int(batch_size), n)
        self.padded = -n % self.batch_size
        if self.padded:
            images = np.concatenate([images, images[:self.padded]])
        self.images = np.ascontiguousarray(images, dtype=np.float32)
        self.n_batches = -(-len(self.images) // self.batch_size)
        self.start, self.stop = 0, self.n_batches

    def __len__(self) -> int:
        return self.n_batches

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.stop = int(start_index), min(int(end_index), self.n_batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.start >= self.stop:
            return None
        i = self.start
        self.start += 1
        return {INPUT_NAME: self.images[i * self.batch_size:(i + 1) * self.batch_size]}

    def rewind(self) -> None:
        self.start, self.stop = 0, self.n_batches

    def __iter__(self) -> Any:  # what qdq_loss_debug.collect_activations reads
        while (item := self.get_next()) is not None:
            yield item

    def stride(self) -> int:
        """Batches per collection: the largest divisor of the batch count that keeps about
        ``CALIB_CHUNK_IMAGES`` images (ORT requires the stride to divide the count)."""
        target = max(1, CALIB_CHUNK_IMAGES // self.batch_size)
        return max(d for d in range(1, min(target, self.n_batches) + 1)
                   if self.n_batches % d == 0)


def _calibration_method(method: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    table = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
             "percentile": CalibrationMethod.Percentile}
    if method not in table:
        raise UserError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, "
                        f"got {method!r}", field="calib_method")
    return table[method]


def quantize_int8(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    images: np.ndarray,
    *,
    method: str = "entropy",
    per_channel: bool = True,
    recipe: str = DEFAULT_INT8_RECIPE,
    quant_format: str = "qdq",
    keep_float: Sequence[str] = (),
    symmetric_activations: bool | None = None,
) -> dict[str, Any]:
    """Write the INT8 Q/DQ variant of the FP32 export ``src`` to ``dst``, calibrated on
    ``images`` (float32 NCHW, already preprocessed like the model's eval transform), by the
    :data:`INT8_RECIPES` entry ``recipe``.

    ``quant_format`` ``"qoperator"`` writes ONNX Runtime's fused integer operators
    (``QLinearConv``, ...) instead of Q/DQ pairs (not for the ``tensorrt`` recipe, whose
    explicit quantization reads Q/DQ only); ``keep_float`` names nodes of the pre-processed
    graph (:func:`quantizable_nodes`) that stay in float32, e.g. a sensitive first conv;
    ``symmetric_activations`` overrides the recipe's: with a zero point (the ``cpu`` recipes)
    ONNX Runtime folds each ReLU into the conv before it; with a symmetric scale the ReLU
    stays a float op between a DequantizeLinear and a QuantizeLinear (what TensorRT needs).

    Returns ``{"path", "size_bytes", "sha256", "precision", "checker", "calibration",
    "recipe", "seconds"}``; a ``tensorrt`` file that breaks TensorRT's Q/DQ rules is an
    :class:`ExportError` (and not written).
    """
    import onnx
    from onnxruntime.quantization import (
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    calibrate = _calibration_method(method)
    rec = int8_recipe(recipe)
    fmt = _quant_format(quant_format, rec)
    if symmetric_activations is None:
        symmetric_activations = rec.symmetric_activations
    if not symmetric_activations and rec.target == "tensorrt":
        raise UserError("the tensorrt recipe needs symmetric activations (zero points 0)",
                        field="symmetric_activations")
    t0 = time.perf_counter()
    model, meta = _source(src)
    reader = CalibrationReader(images)
    seconds: dict[str, float] = {}
    sweep_stale(Path(tempfile.gettempdir()), "facedistill-int8-*", STALE_DIR_S)
    with tempfile.TemporaryDirectory(prefix="facedistill-int8-") as tmp:
        pre, out = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        with quiet(("",)):
            quant_pre_process(model, str(pre))
        seconds["preprocess"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        nodes = onnx.load(str(pre)).graph.node
        unknown = sorted(set(keep_float) - {n.name for n in nodes})
        if unknown:
            raise UserError(f"keep_float names no node of the graph: {', '.join(unknown)}",
                            field="keep_float")
        sigmoids = [n.name for n in nodes if n.op_type == "Sigmoid"]
        extra = {
            "ActivationSymmetric": bool(symmetric_activations),
            "WeightSymmetric": True,
            "CalibStridedMinMax": reader.stride(),
            "OpTypesToExcludeOutputQuantization": ["Gemm"],
            "QuantizeBias": rec.quantize_bias,
        }
        with quiet(("",)) as printed:
            try:
                quantize_static(
                    str(pre), str(out), reader,
                    quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    per_channel=per_channel, reduce_range=rec.reduce_range,
                    calibrate_method=calibrate,
                    nodes_to_exclude=sigmoids + list(keep_float), extra_options=extra)
            except (ValueError, RuntimeError) as exc:
                tail = " | ".join(printed.getvalue().strip().splitlines()[-2:])
                raise ExportError(f"INT8 quantization failed: {exc}"
                                  + (f" ({tail})" if tail else ""), path=src) from None
        seconds["calibrate_quantize"] = time.perf_counter() - t1
        quant = onnx.load(str(out))
    conformance = None
    if rec.target == "tensorrt":
        from facedistill.export.qdq_check import check_tensorrt_qdq

        problems = check_tensorrt_qdq(quant)
        conformance = {"rules": "tensorrt", "problems": len(problems)}
        if problems:
            raise ExportError(f"the INT8 file breaks TensorRT's Q/DQ rules ({len(problems)} "
                              f"problems): {problems[0]}", path=src)
    set_metadata(quant, _variant_metadata(meta, "int8", int8_recipe=rec.name,
                                          int8_weight_bits=str(rec.weight_bits)))
    quant.doc_string = model.doc_string
    save_onnx(quant, dst)
    try:
        check_onnx(dst)
    except BaseException:
        Path(dst).unlink(missing_ok=True)
        raise
    seconds["total"] = time.perf_counter() - t0
    return {
        **file_record(dst), "precision": "int8", "checker": True,
        "calibration": {"method": method, "n_images": int(len(images)),
                        "repeated_to_fill_batches": reader.padded,
                        "per_channel": per_channel,
                        "symmetric": bool(symmetric_activations),
                        "format": "QDQ" if fmt == "qdq" else "QOperator",
                        "float_nodes": sorted(keep_float),
                        "activations": "int8", "weights": "int8"},
        "recipe": asdict(rec), "qdq_conformance": conformance,
        "seconds": seconds,
    }


def _quant_format(name: str, rec: Int8Recipe) -> str:
    if name not in QUANT_FORMATS:
        raise UserError(f"INT8 format must be one of {', '.join(QUANT_FORMATS)}, got {name!r}",
                        field="quant_format")
    if name == "qoperator" and rec.target == "tensorrt":
        raise UserError("the tensorrt recipe needs Q/DQ: TensorRT does not read QOperator "
                        "nodes", field="quant_format")
    return name


def quantizable_nodes(src: str | os.PathLike[str], save_to: str | os.PathLike[str] | None = None
                      ) -> list[tuple[str, str]]:
    """``(name, op_type)`` of every node of the graph :func:`quantize_int8` quantizes (the
    FP32 export after ``quant_pre_process``), in graph order: the names ``keep_float`` takes.
    ``save_to`` also keeps that float graph (whose tensor names the INT8 file shares, for
    ``onnxruntime.quantization.qdq_loss_debug``)."""
    import onnx
    from onnxruntime.quantization import quant_pre_process

    model, _meta = _source(src)
    with tempfile.TemporaryDirectory(prefix="facedistill-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        with quiet(("",)):
            quant_pre_process(model, str(pre))
        graph = onnx.load(str(pre))
        if save_to is not None:
            save_onnx(graph, save_to)
        return [(n.name, n.op_type) for n in graph.graph.node]


def preprocess_images(preprocess: Any, paths: Sequence[Path], progress: Any = None
                      ) -> np.ndarray:
    """Decode and preprocess ``paths`` (boxes from an ImageList) into float32 NCHW."""
    from facedistill.bench.accuracy import iter_batches

    chunks = []
    for start, x in iter_batches(preprocess, paths, 64):
        chunks.append(x)
        if progress is not None:
            progress(start + len(x), len(paths))
    return np.concatenate(chunks) if chunks else np.zeros((0, 3, *preprocess.size), np.float32)
