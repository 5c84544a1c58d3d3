"""The configurations of ``export`` and ``bench``: what an export writes and checks, what a
benchmark measures."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import click

from facedistill.config.fields import check_choices, check_ranges, opt
from facedistill.errors import ConfigError

#: the ONNX variants an export writes: runtime.metadata.PRECISIONS, which this module (below the
#: runtime in the layer map) cannot import; tests/test_cli.py checks that the two agree
EXPORT_PRECISIONS = ("fp32", "fp16", "int8")


def export_precisions(onnx: bool, fp16: bool, int8: bool, precision: str | None) -> list[str]:
    """The ONNX variants an export writes, from ``export``'s options: the flags plus the comma
    list ``precision``; none of them means all three. fp32 is always written (the others
    derive from it)."""
    chosen = [p for p, on in (("fp32", onnx), ("fp16", fp16), ("int8", int8)) if on]
    chosen += [p.strip().lower() for p in (precision or "").split(",") if p.strip()]
    bad = [p for p in chosen if p not in EXPORT_PRECISIONS]
    if bad:
        raise ConfigError(f"unknown precision {bad[0]!r} (fp32, fp16, int8)", field="precision")
    chosen = chosen or list(EXPORT_PRECISIONS)
    return [p for p in EXPORT_PRECISIONS if p in chosen or p == "fp32"]


def want_trt(mode: bool | str) -> bool:
    """Whether to build TensorRT engines: a bool, or ``"auto"`` (the pipeline's default): when
    TensorRT can be imported here. ``True`` without it is an error, raised by the export before
    any work."""
    if isinstance(mode, bool):
        return mode
    if mode != "auto":
        raise ConfigError(f"trt must be true, false or 'auto', not {mode!r}", field="trt")
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None


def int_list(value: Any, what: str) -> tuple[int, ...]:
    """``"1,8,32"`` or ``[1, 8, 32]`` -> ``(1, 8, 32)``: integers >= 1, at least one."""
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    try:
        out = tuple(int(str(v).strip()) for v in items if str(v).strip())
    except ValueError:
        raise ConfigError(f"expected comma-separated integers like 1,8,32, not {value!r}",
                          field=what) from None
    if not out or min(out) < 1:
        raise ConfigError(f"expected integers >= 1 like 1,8,32, not {value!r}",
                          field=what) from None
    return out


class IntList(click.ParamType):
    """A comma list of integers >= 1 (``1,8,32``; a TOML list or string) -> a tuple."""

    name = "ints"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> tuple[int, ...]:
        try:
            return int_list(value, param.name if param is not None else "value")
        except ConfigError as exc:
            self.fail(exc.message, param, ctx)


@dataclass(frozen=True)
class ExportConfig:
    """What an export writes and how it checks it. ``precisions``, ``gate`` and ``eval_split``
    are what the flags mean together."""

    onnx: bool = opt(False, "FP32 ONNX: always written (the others derive from it); given "
                            "alone, only FP32 [default without precision flags: all three].")
    fp16: bool = opt(False, "FP16 ONNX (float32 inputs/outputs).")
    int8: bool = opt(False, "INT8 Q/DQ ONNX, calibrated on training images.")
    trt: bool = opt(False, "Also build a TensorRT engine per precision (needs tensorrt, "
                           "cuda-python and an NVIDIA GPU) [default: no; the pipeline's: when "
                           "TensorRT is installed].", secondary="--no-trt", show_default=False)
    precision: str | None = opt(None, "Comma list of fp32,fp16,int8 (adds to the flags). "
                                      "[default: all three when no precision is chosen]",
                                metavar="LIST")
    opset: int = opt(18, "ONNX opset.")
    calib_n: int = opt(512, "Training images (seeded sample) to calibrate INT8 on.")
    calib_method: Literal["entropy", "minmax", "percentile"] = opt("entropy")
    int8_recipe: str = opt(
        "auto", "INT8 recipes, comma list: cpu (7-bit weights, safe on every CPU), cpu-vnni "
                "(8-bit weights, CPUs with VNNI/AMX or Arm dot-product only), tensorrt "
                "(<arch>.int8-trt.onnx, TensorRT's Q/DQ rules). auto: cpu, plus tensorrt with "
                "--trt.", metavar="LIST")
    max_drop: float = opt(1.0, "INT8 gate: largest allowed drop of mean balanced accuracy, in "
                               "points.")
    no_gate: bool = opt(False, "Keep INT8 whatever its accuracy.")
    no_eval: bool = opt(False, "Do not score the variants (INT8 then needs --no-gate).")
    trt_profile: tuple[int, ...] = opt(
        (1, 8, 32), "TensorRT profile batch sizes; the FP32 parity check runs at 1 and MAX.",
        type=IntList(), multiple=False, metavar="MIN,OPT,MAX")
    workspace_mb: int | None = opt(None, "TensorRT builder workspace limit in MiB [default: "
                                         "TensorRT's].")
    split: Literal["val", "test"] = opt("val", "Split the variants are scored on.")

    def __post_init__(self) -> None:
        check_choices(self)
        object.__setattr__(self, "trt_profile", int_list(self.trt_profile, "trt_profile"))
        self.precisions  # noqa: B018 - an unknown precision is an error now
        check_ranges(self, at_least={"calib_n": 1, "opset": 1})
        if math.isnan(self.max_drop):
            raise ConfigError("max drop is NaN", field="max_drop")
        if self.no_eval and self.gate and "int8" in self.precisions:
            raise ConfigError("the INT8 accuracy gate needs an evaluation split; drop --no-eval "
                              "or pass --no-gate", field="no_eval")

    @property
    def precisions(self) -> list[str]:
        return export_precisions(self.onnx, self.fp16, self.int8, self.precision)

    @property
    def gate(self) -> bool:
        return not self.no_gate

    @property
    def eval_split(self) -> str | None:
        return None if self.no_eval else self.split

    def key_record(self) -> dict[str, Any]:
        """What the pipeline's export stage key hashes: the resolved precisions, not the flags
        that chose them."""
        return {"precisions": self.precisions, "opset": self.opset, "calib_n": self.calib_n,
                "calib_method": self.calib_method, "int8_recipe": self.int8_recipe,
                "max_drop": self.max_drop, "no_gate": self.no_gate, "trt": self.trt,
                "trt_profile": list(self.trt_profile), "workspace_mb": self.workspace_mb,
                "split": self.split}


@dataclass(frozen=True)
class BenchConfig:
    """What a benchmark measures, per artifact and batch size."""

    backend: Literal["auto", "ort", "trt", "torch"] = opt(
        "auto", "auto: torch for checkpoints/run folders, ONNX Runtime for .onnx, TensorRT for "
                ".engine.")
    batch: tuple[int, ...] = opt((1, 32), "Comma-separated batch sizes.", type=IntList(),
                                 multiple=False, metavar="B1,B2,...")
    warmup: int = opt(10, "Warm-up runs per artifact and batch size (not timed).",
                      type=click.IntRange(min=0))
    iters: int | None = opt(None, "Timed runs per artifact and batch size (= interleaved "
                                  "rounds).", type=click.IntRange(min=1))
    seconds: float | None = opt(None, "Measure about this long per artifact and batch size "
                                      "[default: 2 when --iters is not given].",
                                type=click.FloatRange(min=0, min_open=True))
    threads: int | None = opt(None, "CPU threads for ONNX Runtime / torch [default: one per "
                                    "physical core, as predict and the runtime use].",
                              type=click.IntRange(min=1))
    split: Literal["val", "test", "train"] = opt("val", "Split scored for accuracy (with "
                                                        "--data).")
    limit: int | None = opt(None, "Score only the first N images of the split.",
                            type=click.IntRange(min=1))
    floors: bool = opt(True, "Also time the machine's floors in the same rounds: an empty graph "
                             "of each input shape (the per-call floor) and fp32/int8 matrix "
                             "products (the arithmetic peak); rows get 'x floor' and '% peak'.",
                       secondary="--no-floors")
    openvino: bool = opt(True, "Also time each ONNX file through OpenVINO on the CPU (f32 float "
                               "precision, its default hint), side by side with ONNX Runtime "
                               "in the same rounds, when openvino is installed (the [openvino] "
                               "extra) and --backend is auto; its rows say ov-cpu.",
                         secondary="--no-openvino")
    tune: bool = opt(False, "First tune each ONNX file's CPU settings by measurement at each "
                            "--batch (threads, graph optimization, I/O binding, spinning, "
                            "ONNX Runtime or OpenVINO) and write them beside it as "
                            "<file>.tune.json, which predict and Predictor then use.")
    tune_seconds: float = opt(0.5, "With --tune: measuring time per candidate setting and "
                                   "batch size.", type=click.FloatRange(min=0, min_open=True))

    def __post_init__(self) -> None:
        check_choices(self)
        object.__setattr__(self, "batch", int_list(self.batch, "batch"))
        if self.iters is not None and self.seconds is not None:
            raise ConfigError("give --iters or --seconds, not both", field="iters")
        check_ranges(self, at_least={"warmup": 0, "iters": 1, "threads": 1, "limit": 1},
                     positive=("seconds", "tune_seconds"))
