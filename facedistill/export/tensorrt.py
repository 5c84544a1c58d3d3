"""Build TensorRT engines from the exported ONNX files (no torch).

One engine per precision, ``<arch>.<precision>.engine``, built from that precision's ONNX
with an optimization profile over the batch axis (min/opt/max), a timing cache shared by the
builds of a folder, and an optional workspace limit; next to it the sidecar
``<engine>.json`` (:mod:`facedistill.runtime.engine`) that the runtime checks before loading.

Precision by TensorRT version (:func:`precision_plan`, a pure function):

* **TensorRT >= 11** is strongly typed only: no precision flags exist; the ONNX carries the
  precision (the FP16 ONNX's float16 weights and casts, the INT8 ONNX's Q/DQ nodes).
* **TensorRT 10.x**: the network is created ``STRONGLY_TYPED`` when the flag exists (10.0
  has it), so the same rule applies; otherwise the FP16 / INT8 builder flags are set over the
  FP16 / Q/DQ graph.
* older versions are refused (facedistill needs the name-based API of TensorRT >= 10).

TensorRT lets FP32 layers use TF32 by default (``BuilderFlag.TF32``, set in 10.x and 11.x, and
allowed in strongly typed networks: it is a math mode of FP32 tensors, not a precision flag),
so an "fp32" engine would compute in TF32 on Ampere and newer. FP32 builds clear the flag;
the sidecar's ``build`` says ``tf32`` (allowed or not) and ``compute_precision``.

The workspace limit defaults to TensorRT's own (the device memory) except on a Jetson
(``/etc/nv_tegra_release``, a "NVIDIA Jetson" device-tree model, or an integrated GPU), where
the GPU shares the board's memory with the CPU: there it defaults to
:data:`JETSON_WORKSPACE_MB`. The sidecar records the limit and where it came from.

``tensorrt`` and ``cuda-python`` are imported only when a build starts.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from facedistill.errors import UserError
from facedistill.io import atomic_path, atomic_write_bytes, atomic_write_json, sha256_file
from facedistill.runtime.engine import (
    MIN_TRT_MAJOR,
    SIDECAR_FORMAT,
    TensorRTMissingError,
    cuda_check,
    parse_profile,
    probe_gpu,
    require_cudart,
    require_tensorrt,
    sidecar_path,
    version_tuple,
)
from facedistill.runtime.metadata import PRECISIONS

TIMING_CACHE = "trt_timing.cache"
JETSON_WORKSPACE_MB = 256


@dataclass(frozen=True)
class PrecisionPlan:
    """How to ask TensorRT for a precision: a strongly typed network, or builder flags."""

    strongly_typed: bool
    flags: tuple[str, ...]  # names of trt.BuilderFlag members to set
    reason: str
    clear_tf32: bool = False  # FP32 builds: no TF32 math in FP32 layers


def precision_plan(trt_version: str, precision: str, has_strongly_typed: bool = True
                   ) -> PrecisionPlan:
    """The build recipe for ``precision`` (fp32/fp16/int8) under TensorRT ``trt_version``.

    ``has_strongly_typed`` says whether ``trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED``
    exists in the installed bindings (it does from TensorRT 9/10 on).
    """
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}",
                        field="precision")
    try:
        major = version_tuple(trt_version)[0]
    except ValueError:
        raise TensorRTMissingError(f"cannot read the TensorRT version {trt_version!r}") from None
    if major < MIN_TRT_MAJOR:
        raise TensorRTMissingError(f"TensorRT {trt_version} is too old: facedistill needs "
                                   f"TensorRT >= {MIN_TRT_MAJOR} (JetPack 6 or newer on Jetson)")
    fp32 = precision == "fp32"
    if major >= 11:
        return PrecisionPlan(True, (), "TensorRT >= 11 is strongly typed: the ONNX carries the "
                                       "precision", fp32)
    if has_strongly_typed:
        return PrecisionPlan(True, (), "TensorRT 10.x, STRONGLY_TYPED network: the ONNX "
                                       "carries the precision", fp32)
    flags = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8",)}[precision]
    return PrecisionPlan(False, flags, "TensorRT 10.x without STRONGLY_TYPED: builder flags",
                         fp32)


def workspace_bytes(workspace_mb: int | None) -> int | None:
    """``--workspace-mb`` in bytes (None: TensorRT's default, the device's memory)."""
    if workspace_mb is None:
        return None
    if isinstance(workspace_mb, bool) or not isinstance(workspace_mb, int) or workspace_mb < 1:
        raise UserError(f"workspace must be a positive number of MiB, got {workspace_mb!r}",
                        field="workspace_mb")
    return int(workspace_mb) << 20


def default_workspace(workspace_mb: int | None, jetson: bool) -> tuple[int | None, str]:
    """The workspace limit in MiB (None: TensorRT's default) and where it came from: the user,
    the Jetson default (:data:`JETSON_WORKSPACE_MB`), or TensorRT."""
    if workspace_mb is not None:
        workspace_bytes(workspace_mb)  # validates
        return workspace_mb, "user"
    if jetson:
        return JETSON_WORKSPACE_MB, "jetson default"
    return None, "tensorrt default (device memory)"


def apply_tf32(trt: Any, config: Any, plan: PrecisionPlan) -> bool | None:
    """Clear ``BuilderFlag.TF32`` when ``plan`` asks; whether TF32 stays allowed (None: this
    TensorRT has no such flag, so nothing is known)."""
    flag = getattr(trt.BuilderFlag, "TF32", None)
    if flag is None:
        return None
    if plan.clear_tf32:
        config.clear_flag(flag)
    return bool(config.get_flag(flag))


def compute_precision(precision: str, tf32: bool | None) -> str:
    """What FP32 layers compute in: ``tf32`` unless TF32 is known to be off."""
    if precision == "fp32" and tf32 is not False:
        return "tf32"
    return precision


def build_sidecar(*, engine: Path, onnx_path: Path, trt_version: str, gpu_name: str,
                  compute_capability: str, precision: str, profile: tuple[int, int, int],
                  metadata: dict[str, str], build: dict[str, Any],
                  device: dict[str, Any] | None = None,
                  built_at: str | None = None) -> dict[str, Any]:
    """The sidecar record of a freshly built engine (pure, given the hashes' files);
    ``device`` is :meth:`~facedistill.runtime.engine.GpuInfo.record` of the GPU."""
    lo, opt, hi = profile
    return {
        "format": SIDECAR_FORMAT,
        "engine": engine.name,
        "engine_sha256": sha256_file(engine),
        "trt_version": str(trt_version),
        "gpu_name": gpu_name,
        "compute_capability": compute_capability,
        "device": dict(device) if device is not None else None,
        "precision": precision,
        "profile": {"min": lo, "opt": opt, "max": hi},
        "onnx": onnx_path.name,
        "onnx_sha256": sha256_file(onnx_path),
        "built_at": built_at or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "build": build,
        "metadata": dict(metadata),
    }


def network_input(network: Any, expected: str | None, onnx_path: Path) -> str:
    """The network's single input tensor name; the ONNX metadata's ``input_name`` must agree."""
    if network.num_inputs != 1:
        raise UserError(f"expected one input tensor, the network has {network.num_inputs}",
                        path=onnx_path)
    name = str(network.get_input(0).name)
    if expected and expected != name:
        raise UserError(f"the network's input is {name!r}, the metadata says {expected!r}",
                        path=onnx_path, field="input_name")
    return name


def _parse_onnx(trt: Any, logger: Any, onnx_path: Path, strongly_typed: bool
                ) -> tuple[Any, Any, Any]:
    """``(builder, network, parser)`` with ``onnx_path`` parsed; a parse error is one line."""
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        first = errors[0].splitlines()[0] if errors else "unknown error"
        raise UserError(f"TensorRT cannot parse this ONNX ({len(errors)} errors): {first}",
                        path=onnx_path)
    return builder, network, parser


def _use_timing_cache(config: Any, cache_path: Path) -> None:
    """Read ``cache_path`` into ``config``; a missing or foreign cache starts a fresh one."""
    blob = cache_path.read_bytes() if cache_path.is_file() else b""
    cache = config.create_timing_cache(blob) if blob else None
    if cache is None or not config.set_timing_cache(cache, False):
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)


def build_engine(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str],
    *,
    batches: str | tuple[int, int, int] = (1, 8, 32),
    workspace_mb: int | None = None,
    timing_cache: str | os.PathLike[str] | None = None,
    device: int = 0,
) -> dict[str, Any]:
    """Build ``engine_path`` (+ sidecar) from a facedistill ONNX export; returns the sidecar.

    The precision is the ONNX's (its metadata), FP32 without TF32; the profile covers
    ``batches`` (min, opt, max) of the network's input; ``workspace_mb`` defaults to
    TensorRT's own, or :data:`JETSON_WORKSPACE_MB` on a Jetson; ``timing_cache`` (default
    ``trt_timing.cache`` next to the engine) is read when present and written back.
    """
    from facedistill.export.onnx import get_metadata, load_onnx
    from facedistill.runtime.metadata import parse_metadata

    trt = require_tensorrt()
    cudart = require_cudart()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    profile = parse_profile(batches)
    workspace_bytes(workspace_mb)  # a bad --workspace-mb fails before any GPU work
    model = load_onnx(onnx_path)
    meta = get_metadata(model)
    info = parse_metadata(meta, source=str(onnx_path))
    if info.precision == "int8":  # one clear line before TensorRT's parser says less
        from facedistill.export.qdq_check import check_tensorrt_qdq

        problems = check_tensorrt_qdq(model)
        if problems:
            raise UserError(f"breaks TensorRT's Q/DQ rules ({len(problems)} problems, e.g. "
                            f"{problems[0]}); export it with --int8-recipe tensorrt",
                            path=onnx_path)
    gpu = probe_gpu(device, cudart)
    cuda_check(cudart.cudaSetDevice(device), "cudaSetDevice", cudart)
    workspace, workspace_source = default_workspace(workspace_mb, gpu.jetson)
    has_st = hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    plan = precision_plan(trt.__version__, info.precision, has_st)
    cache_path = Path(timing_cache) if timing_cache else engine_path.parent / TIMING_CACHE

    t0 = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder, network, _parser = _parse_onnx(trt, logger, onnx_path,
                                            plan.strongly_typed and has_st)
    input_name = network_input(network, info.input_name, onnx_path)
    config = builder.create_builder_config()
    for name in plan.flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    tf32 = apply_tf32(trt, config, plan)
    if workspace is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes(workspace))
    h, w = info.preprocess.size
    opt_profile = builder.create_optimization_profile()
    lo, opt, hi = profile
    opt_profile.set_shape(input_name, (lo, 3, h, w), (opt, 3, h, w), (hi, 3, h, w))
    config.add_optimization_profile(opt_profile)
    _use_timing_cache(config, cache_path)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError("TensorRT failed to build the engine (see its log above); try a "
                        "larger --workspace-mb or another precision", path=onnx_path)
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(serialized))
    atomic_write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))
    sidecar = build_sidecar(
        engine=engine_path, onnx_path=onnx_path, trt_version=trt.__version__,
        gpu_name=gpu.name, compute_capability=gpu.compute_capability,
        precision=info.precision, profile=profile, metadata=meta, device=gpu.record(),
        build={"strongly_typed": plan.strongly_typed, "flags": list(plan.flags),
               "reason": plan.reason, "tf32": tf32,
               "compute_precision": compute_precision(info.precision, tf32),
               "input": input_name, "workspace_mb": workspace,
               "workspace_source": workspace_source, "timing_cache": cache_path.name,
               "seconds": time.perf_counter() - t0, "device": device})
    atomic_write_json(sidecar_path(engine_path), sidecar)
    return sidecar
