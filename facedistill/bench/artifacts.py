"""What the bench measures: artifacts found on disk and the runnable variants made from them.

An *artifact* is a checkpoint (``.pt`` or a run folder, run with torch), an ONNX file (ONNX
Runtime) or a TensorRT engine. A *variant* is one way to run it: a checkpoint gives torch
``fp32`` and ``bf16`` autocast (where the CPU computes bf16 natively; ``fp16`` autocast on a
CUDA GPU), both channels-last; an engine gives plain and CUDA-graph execution where the runner
supports it. Every variant exposes the same small interface (:class:`Variant`).

torch is imported only when a checkpoint is benchmarked; TensorRT only for engines.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facedistill.errors import UserError
from facedistill.runtime.backends import (
    INSTALL_ORT,
    PROBABILITIES,
    OrtBackend,
    session_summary,
)
from facedistill.runtime.engine import INSTALL_HINT as TRT_HINT
from facedistill.runtime.openvino import have_openvino
from facedistill.runtime.preprocess import Preprocess

BACKENDS = ("auto", "ort", "trt", "torch")
CHECKPOINT_SUFFIXES = (".pt", ".pth")
ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
KIND_BACKEND = {"checkpoint": "torch", "onnx": "ort", "engine": "trt"}

INSTALL_TORCH = ("torch is not installed: pip install 'facedistill[train]' to bench checkpoints, "
                 "or export them to ONNX (facedistill export) and bench the .onnx")
ORT_BACKEND_NAMES = {"TensorrtExecutionProvider": "ort-trt", "CUDAExecutionProvider": "ort-cuda"}


class ArtifactError(UserError):
    """An artifact path is missing, of an unknown kind, corrupt, or asks for a missing backend."""


@dataclass(frozen=True)
class Artifact:
    path: Path
    kind: str  # checkpoint | onnx | engine


def _kind_of(p: Path) -> str | None:
    suffix = p.suffix.lower()
    if suffix in CHECKPOINT_SUFFIXES:
        return "checkpoint"
    if suffix in ONNX_SUFFIXES:
        return "onnx"
    if suffix in ENGINE_SUFFIXES:
        return "engine"
    return None


def find_artifacts(paths: list[str | os.PathLike[str]]) -> list[Artifact]:
    """Resolve the user's paths: files by suffix; a run folder (``best.pt``/``last.pt``) is a
    checkpoint; any other folder contributes its ``.onnx`` and engine files."""
    if not paths:
        raise ArtifactError("no artifacts given: pass checkpoints, run folders, .onnx or .engine "
                            "files")
    found: list[Artifact] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            if (p / "best.pt").is_file() or (p / "last.pt").is_file():
                found.append(Artifact(p, "checkpoint"))
                continue
            inside = sorted(q for q in p.iterdir()
                            if q.is_file() and _kind_of(q) in ("onnx", "engine"))
            if not inside:
                raise ArtifactError("folder holds no best.pt/last.pt, .onnx or .engine files",
                                    path=p)
            found.extend(Artifact(q, _kind_of(q) or "") for q in inside)
            continue
        if not p.exists():
            raise ArtifactError("no such file or folder", path=p)
        kind = _kind_of(p)
        if kind is None:
            raise ArtifactError(f"unknown artifact type {p.suffix or '(no suffix)'!r}: expected "
                                "a run folder, .pt, .onnx or .engine/.plan", path=p)
        found.append(Artifact(p, kind))
    seen: set[Path] = set()
    unique = []
    for a in found:
        key = a.path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(a)
    return unique


def check_backend(artifacts: list[Artifact], backend: str) -> None:
    """Refuse, in one line, a backend that is missing or cannot run an artifact."""
    if backend not in BACKENDS:
        raise ArtifactError(f"unknown backend {backend!r}: one of {', '.join(BACKENDS)}")
    needs = {KIND_BACKEND[a.kind] if backend == "auto" else backend for a in artifacts}
    if "trt" in needs:
        what = "--backend trt" if backend == "trt" else "a TensorRT engine"
        if importlib.util.find_spec("tensorrt") is None:
            raise ArtifactError(f"{what} needs TensorRT, which is not installed: {TRT_HINT}")
        if importlib.util.find_spec("cuda") is None:
            raise ArtifactError(f"{what} needs cuda-python, which is not installed: {TRT_HINT}")
    if "torch" in needs and importlib.util.find_spec("torch") is None:
        raise ArtifactError(INSTALL_TORCH)
    if "ort" in needs and importlib.util.find_spec("onnxruntime") is None:
        raise ArtifactError(INSTALL_ORT)
    if backend == "auto":
        return
    for a in artifacts:
        if KIND_BACKEND[a.kind] == backend:
            continue
        if backend == "trt":
            hint = ("TensorRT runs engines: build one with 'facedistill export --trt' (or trtexec) "
                    "and bench the .engine")
        elif backend == "ort":
            hint = ("ONNX Runtime runs .onnx files" + (": export the checkpoint first "
                    "(facedistill export)" if a.kind == "checkpoint" else ""))
        else:
            hint = "torch runs checkpoints (.pt or run folders) only"
        raise ArtifactError(f"--backend {backend} cannot run a {a.kind}: {hint}", path=a.path)


# -- variants --------------------------------------------------------------------------------

RunOnce = Callable[[], "float | None"]


@dataclass
class Variant:
    """One runnable way to execute an artifact, with what the report says about it."""

    artifact: Artifact
    backend: str  # ort-cpu, ort-cuda, torch-cpu, torch-cuda, trt
    precision: str  # fp32 | bf16 | fp16 | int8
    mode: str  # default | cuda_graph | autocast
    layout: str  # NCHW | channels_last
    arch: dict[str, Any]
    preprocess: Preprocess
    attributes: tuple[str, ...]
    thresholds: tuple[float, ...]
    source_sha256: str
    threads: int | None
    prepare: Callable[[np.ndarray], RunOnce]
    predict: Callable[[np.ndarray], np.ndarray]
    max_batch: int | None = None
    min_batch: int | None = None
    fixed_batch: int | None = None
    gpu_timing: bool = False
    details: dict[str, Any] = field(default_factory=dict)
    close: Callable[[], None] = lambda: None


def onnx_variants(a: Artifact, threads: int | None, openvino: bool = False) -> list[Variant]:
    """An ONNX file in the runtime's own :class:`~facedistill.runtime.backends.OrtBackend`:
    the session options, providers, metadata and graph checks ``predict`` ships with; with
    ``openvino`` (and OpenVINO installed, and ONNX Runtime on the CPU) also through OpenVINO
    (:func:`openvino_variant`)."""
    backend = OrtBackend(a.path, threads=threads)
    session, info = backend.session, backend.info
    providers = session.get_providers()
    name = info.input_name
    wanted = [PROBABILITIES]
    int8: dict[str, Any] = {}
    if info.precision == "int8":
        int8 = {"int8_recipe": info.int8_recipe, "int8_weight_bits": info.int8_weight_bits,
                "int8_warning": backend.int8_warning}

    def prepare(x: np.ndarray) -> RunOnce:
        feed = {name: np.ascontiguousarray(x, dtype=np.float32)}

        def once() -> None:
            session.run(wanted, feed)

        return once

    def predict(x: np.ndarray) -> np.ndarray:
        return session.run(wanted, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    variant = Variant(
        artifact=a, backend=ORT_BACKEND_NAMES.get(providers[0], "ort-cpu"), precision=info.precision,
        mode="default", layout="NCHW", arch=dict(info.arch), preprocess=info.preprocess,
        attributes=info.attributes, thresholds=info.thresholds,
        source_sha256=info.source_sha256, threads=threads, prepare=prepare, predict=predict,
        fixed_batch=backend.fixed_batch, details={**session_summary(session), **int8},
    )
    if not openvino or variant.backend != "ort-cpu" or not have_openvino():
        return [variant]
    return [variant, openvino_variant(a, threads)]


def openvino_variant(a: Artifact, threads: int | None) -> Variant:
    """The same ONNX file through the runtime's
    :class:`~facedistill.runtime.openvino.OvBackend` (OpenVINO's CPU plugin, its default
    performance hint, f32 float precision), timed beside ONNX Runtime's row."""
    from facedistill.runtime.openvino import OvBackend

    backend = OvBackend(a.path, threads=threads)
    info = backend.info

    def prepare(x: np.ndarray) -> RunOnce:
        request = backend.compiled.create_infer_request()
        feed = {info.input_name: np.ascontiguousarray(x, dtype=np.float32)}

        def once() -> None:
            request.infer(feed, share_inputs=True)

        return once

    details = {k: val for k, val in backend.describe().items() if k not in ("backend", "path")}
    return Variant(
        artifact=a, backend="ov-cpu", precision=info.precision, mode="default", layout="NCHW",
        arch=dict(info.arch), preprocess=info.preprocess, attributes=info.attributes,
        thresholds=info.thresholds, source_sha256=info.source_sha256, threads=threads,
        prepare=prepare, predict=backend.run, fixed_batch=backend.fixed_batch, details=details)


def engine_variants(a: Artifact) -> list[Variant]:
    """A TensorRT engine through :class:`facedistill.runtime.engine.TrtRunner`: plain
    execution (host latency includes the copies; GPU compute from CUDA events) and CUDA-graph
    replay (a second runner with ``cuda_graph=True``).

    The runner refuses a stale engine (its sibling ONNX changed since the build) before
    TensorRT loads: it is never benched silently. Both runners keep one execution context (and graph) per batch size, made in
    ``prepare``, so interleaved batch sizes are timed without shape changes or captures.
    """
    from facedistill.runtime.engine import TrtRunner

    plain = TrtRunner(a.path, device=0)
    graph: list[Any] = []

    def graph_runner() -> Any:
        if not graph:
            graph.append(TrtRunner(a.path, device=0, cuda_graph=True))
        return graph[0]

    info = plain.info
    lo, opt, hi = plain.profile
    build = plain.sidecar.get("build") or {}
    variants = []
    for mode in ("default", "cuda_graph"):

        def prepare(x: np.ndarray, mode: str = mode) -> RunOnce:
            r = plain if mode == "default" else graph_runner()
            x = np.ascontiguousarray(x, dtype=np.float32)
            r.prepare(x.shape[0])

            def once() -> float | None:
                r.run(x)
                return r.gpu_compute_ms

            return once

        def predict(x: np.ndarray) -> np.ndarray:
            return np.asarray(plain.run(np.ascontiguousarray(x, dtype=np.float32))[
                PROBABILITIES])

        def close(mode: str = mode) -> None:
            if mode == "default":
                plain.close()
            elif graph:
                graph[0].close()

        variants.append(Variant(
            artifact=a, backend="trt", precision=info.precision, mode=mode, layout="NCHW",
            arch=dict(info.arch), preprocess=info.preprocess, attributes=info.attributes,
            thresholds=info.thresholds, source_sha256=info.source_sha256, threads=None,
            prepare=prepare, predict=predict, max_batch=hi, min_batch=lo, gpu_timing=True,
            details={"gpu": plain.gpu_name, "compute_capability": plain.compute_capability,
                     "sm_count": plain.gpu.sm_count, "profile": [lo, opt, hi],
                     "trt_version": plain.sidecar.get("trt_version"),
                     "tf32": build.get("tf32"),
                     "compute_precision": build.get("compute_precision"),
                     "contexts": "one per batch size"},
            close=close,
        ))
    return variants


def checkpoint_variants(a: Artifact, threads: int | None, bf16: bool) -> list[Variant]:
    """torch eager fp32 (+ bf16 autocast on a bf16 CPU, fp16 autocast on CUDA), channels-last;
    on CUDA each precision also as CUDA-graph replay (mode ``cuda_graph``: captured once per
    input shape, predictions through the replayed graph too).

    Before torch's first import ``OMP_WAIT_POLICY`` is set to ``PASSIVE`` (unless the user set
    it): OpenMP workers that busy-wait after every op starve whatever runs next in the
    interleaved rounds (measured here: torch 28 ms -> 800 ms per run beside an ORT session).
    """
    omp_policy = os.environ.get("OMP_WAIT_POLICY")
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        omp_policy = os.environ["OMP_WAIT_POLICY"]
    elif omp_policy is None:
        omp_policy = "default (torch was imported before the bench)"
    import torch

    from facedistill.io import sha256_file
    from facedistill.nn.checkpoint import load_checkpoint, model_from_checkpoint
    from facedistill.runtime.metadata import probability_thresholds

    threads_before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    ckpt = load_checkpoint(a.path)
    model = model_from_checkpoint(ckpt)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device=device, memory_format=torch.channels_last)
    preprocess = Preprocess.from_record(ckpt["preprocess"])
    thresholds = tuple(probability_thresholds([float(t) for t in ckpt["thresholds"]]))
    sha = sha256_file(ckpt["path"])
    precisions: list[tuple[str, Any]] = [("fp32", None)]
    if device.type == "cuda":
        precisions.append(("fp16", torch.float16))
    elif bf16:
        precisions.append(("bf16", torch.bfloat16))
    modes = ["eager", "cuda_graph"] if device.type == "cuda" else ["eager"]
    graphs: dict[tuple[str, tuple[int, ...]], tuple[Any, Any, Any]] = {}  # (precision, shape)

    def to_input(x: np.ndarray) -> Any:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
        return t.contiguous(memory_format=torch.channels_last)

    def graphed(precision: str, forward: Callable[[Any], Any], x: np.ndarray) -> tuple[Any, Any]:
        """(graph, output) of ``forward`` captured for this precision and input shape, with
        ``x`` copied into the graph's static input; one capture per shape, then replays."""
        key = (precision, tuple(x.shape))
        if key not in graphs:
            static = to_input(x)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up off the capture: cuDNN picks its kernels
                for _ in range(3):
                    forward(static)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = forward(static)
            graphs[key] = (graph, static, out)
        graph, static, out = graphs[key]
        static.copy_(to_input(x))
        return graph, out

    def timed(run: Callable[[], Any]) -> RunOnce:
        """One call of ``run``; on CUDA its GPU time from events (ms), waited for."""
        if device.type != "cuda":
            def once_cpu() -> None:
                run()
            return once_cpu
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def once_cuda() -> float:
            start.record()
            run()
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end))
        return once_cuda

    variants = []
    for (precision, dtype), how in itertools.product(precisions, modes):

        def forward(t: Any, dtype: Any = dtype, how: str = how) -> Any:
            with torch.inference_mode():
                if dtype is None:
                    return model(t)
                # autocast's weight cache would live outside a captured graph's memory
                with torch.autocast(device.type, dtype=dtype, cache_enabled=how != "cuda_graph"):
                    return model(t)

        def prepare(x: np.ndarray, forward: Any = forward, how: str = how,
                    precision: str = precision) -> RunOnce:
            if how == "cuda_graph":
                return timed(graphed(precision, forward, x)[0].replay)
            t = to_input(x)
            return timed(lambda: forward(t))

        def predict(x: np.ndarray, forward: Any = forward, how: str = how,
                    precision: str = precision) -> np.ndarray:
            if how == "cuda_graph":
                graph, out = graphed(precision, forward, x)
                graph.replay()
                logits = out
            else:
                logits = forward(to_input(x))
            return torch.sigmoid(logits.float()).cpu().numpy()

        mode = how if how == "cuda_graph" else ("default" if dtype is None else "autocast")
        variants.append(Variant(
            artifact=a, backend=f"torch-{device.type}", precision=precision, mode=mode,
            layout="channels_last", arch=dict(ckpt["arch"]), preprocess=preprocess,
            attributes=tuple(ckpt["attributes"]), thresholds=thresholds, source_sha256=sha,
            threads=int(torch.get_num_threads()), prepare=prepare, predict=predict,
            gpu_timing=device.type == "cuda",
            details={"checkpoint": ckpt["path"], "kind": ckpt.get("kind"),
                     "omp_wait_policy": omp_policy},
        ))
    variants[0].details["model"] = model  # the cost counter reads it (not serialised)

    def close() -> None:  # leave torch as it was; free the captured graphs' memory
        graphs.clear()
        torch.set_num_threads(threads_before)
    variants[0].close = close
    return variants


def load_variants(a: Artifact, backend: str, threads: int | None, bf16: bool,
                  openvino: bool = False) -> list[Variant]:
    """The variants of one artifact (an ONNX file also through OpenVINO with ``openvino``);
    corrupt or unreadable files are one-line errors."""
    kind_backend = KIND_BACKEND[a.kind]
    if backend not in ("auto", kind_backend):  # check_backend refuses this earlier
        raise ArtifactError(f"--backend {backend} cannot run a {a.kind}", path=a.path)
    if a.kind == "checkpoint":
        return checkpoint_variants(a, threads, bf16)
    if a.kind == "onnx":
        return onnx_variants(a, threads, openvino=openvino and backend == "auto")
    return engine_variants(a)


def engine_onnx(engine: Path) -> Path | None:
    """The ONNX file an engine was built from: a sibling whose sha256 the sidecar records (the
    file the sidecar names first, then any other ``.onnx`` beside it)."""
    from facedistill.io import sha256_file
    from facedistill.runtime.engine import read_sidecar

    try:
        side = read_sidecar(engine)
    except UserError:
        return None
    want = side.get("onnx_sha256")
    if not want:
        return None
    named = engine.parent / Path(str(side.get("onnx") or "")).name
    others = sorted(p for p in engine.parent.glob("*.onnx") if p != named)
    for candidate in ([named] if named.suffix == ".onnx" and named.is_file() else []) + others:
        if sha256_file(candidate) == want:
            return candidate
    return None
