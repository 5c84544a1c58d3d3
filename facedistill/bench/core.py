"""``run_bench``: latency, size, cost and accuracy of artifacts, interleaved fairly.

Flow: resolve artifacts -> load their variants -> make one seeded input per (input size,
batch) -> warm up and measure every (variant, batch) in rotated rounds (:mod:`.stats`) ->
on a Jetson with readable rails, power per config -> accuracy per variant on a split ->
rows (one per variant x batch) + the environment record.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from facedistill import __version__
from facedistill.bench import cost as cost_mod
from facedistill.bench import floor as floor_mod
from facedistill.bench import jetson as jetson_mod
from facedistill.bench.artifacts import (
    ArtifactError,
    Variant,
    check_backend,
    engine_onnx,
    find_artifacts,
    load_variants,
)
from facedistill.bench.environment import cpu_has_bf16, environment
from facedistill.bench.record import (
    FORMAT,
    Accuracy,
    BenchResult,
    BenchRow,
    LatencyStats,
    Power,
    Skipped,
)
from facedistill.bench.stats import Clock, interleave, throughput
from facedistill.config import BenchConfig
from facedistill.errors import UserError

DEFAULT_SECONDS = 2.0
"""Measuring time per artifact x batch when neither ``iters`` nor ``seconds`` is given."""
INPUT_SEED = 0
ACCURACY_BATCH = 64
POWER_SECONDS = 2.0
PRECISION_ORDER = ("fp32", "bf16", "fp16", "int8")
#: the backends whose rows get floors, and the runtime the floors are measured through
FLOOR_RUNTIMES = {"ort-cpu": "ort", "ov-cpu": "ov"}
FLOOR_FIELDS = ("floor_ms", "x_floor", "bound_ms", "peak_pct")

Progress = Callable[[int, int], None]


def make_input(preprocess: Any, batch: int, seed: int = INPUT_SEED) -> np.ndarray:
    """A seeded batch of random RGB images, normalised like the model's real input."""
    h, w = preprocess.size
    rng = np.random.default_rng([seed, batch, h, w])
    rgb = rng.integers(0, 256, size=(batch, h, w, 3), dtype=np.uint8)
    return preprocess.normalize(rgb)


def model_key(v: Variant) -> str:
    """Which variants are the same model: the arch record and the checkpoint's sha256."""
    arch = json.dumps(v.arch, sort_keys=True)
    return f"{arch}|{v.source_sha256 or ''}"


def model_label(arch: dict[str, Any]) -> str:
    name = str(arch.get("arch", "?"))
    width = arch.get("width", 1.0)
    try:
        if float(width) != 1.0:
            name += f"-w{float(width):g}"
    except (TypeError, ValueError):
        pass
    return name


def _labels(variants: list[Variant]) -> dict[str, str]:
    """Model labels, made unique when two different checkpoints share an arch."""
    by_label: dict[str, set[str]] = {}
    for v in variants:
        by_label.setdefault(model_label(v.arch), set()).add(model_key(v))
    out = {}
    for v in variants:
        label = model_label(v.arch)
        if len(by_label[label]) > 1:
            label += f"@{(v.source_sha256 or 'unknown')[:8]}"
        out[model_key(v)] = label
    return out


def _cost(v: Variant) -> tuple[dict[str, int | None], str | None]:
    a = v.artifact
    if a.kind == "checkpoint":
        return dict(cost_mod.torch_cost(v.details["model"], v.preprocess.size)), None
    if a.kind == "onnx":
        return cost_mod.onnx_cost(a.path)
    onnx = engine_onnx(a.path)
    if onnx is not None:
        return cost_mod.onnx_cost(onnx)
    return cost_mod.arch_cost(v.arch, v.preprocess.size)


def _file_bytes(v: Variant) -> int:
    p = v.artifact.path
    if p.is_dir():
        for name in ("best.pt", "last.pt"):
            if (p / name).is_file():
                return (p / name).stat().st_size
    return p.stat().st_size


def load_split(data: Any, split: str, limit: int | None) -> dict[str, Any]:
    """The images and labels of ``split`` (the first ``limit`` of them), loaded once."""
    from facedistill.bench.accuracy import split_images

    paths, labels, names = split_images(data, split)
    boxes = getattr(paths, "boxes", None)
    n = len(paths) if limit is None else min(limit, len(paths))
    return {"paths": list(paths)[:n], "labels": labels[:n], "names": list(names),
            "boxes": None if boxes is None else boxes[:n], "split": split, "data": str(data)}


def variant_accuracy(v: Variant, images: dict[str, Any],
                     progress: Progress | None = None) -> dict[str, Any]:
    """Mean balanced accuracy of one variant at its stored thresholds."""
    from facedistill.bench.accuracy import balanced_accuracy, predict_images

    names = images["names"]
    missing = [a for a in v.attributes if a not in names]
    if missing:
        raise UserError(f"the data has no attribute {missing[0]!r} that the model predicts",
                        path=images["data"])
    cols = [names.index(a) for a in v.attributes]
    batch = ACCURACY_BATCH
    if v.fixed_batch:
        batch = v.fixed_batch
    elif v.max_batch:
        batch = min(batch, v.max_batch)

    def run_batch(x: np.ndarray) -> np.ndarray:
        if v.fixed_batch and x.shape[0] != v.fixed_batch:  # pad the last batch
            pad = np.zeros((v.fixed_batch - x.shape[0], *x.shape[1:]), dtype=x.dtype)
            return v.predict(np.concatenate([x, pad]))[: x.shape[0]]
        return v.predict(x)

    probs = predict_images(run_batch, v.preprocess, images["paths"], batch_size=batch,
                           progress=progress, boxes=images["boxes"])
    if probs.ndim != 2 or probs.shape[1] != len(v.attributes):
        raise UserError(f"the model returned probabilities of shape {probs.shape} for "
                        f"{len(v.attributes)} attributes: its metadata does not describe this "
                        "graph", path=v.artifact.path)
    report = balanced_accuracy(probs, images["labels"][:, cols], list(v.thresholds),
                               list(v.attributes))
    return {"split": images["split"], "mean_balanced": report["mean_balanced"],
            "n_images": report["n_images"]}


class _Plan:
    """Progress over the whole run: latency calls, then power windows, then accuracy images."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.parts: dict[str, tuple[int, int]] = {}

    def set(self, part: str, done: int, total: int) -> None:
        self.parts[part] = (done, total)
        if self.progress is not None:
            self.progress(sum(d for d, _ in self.parts.values()),
                          sum(t for _, t in self.parts.values()))

    def reserve(self, part: str, total: int) -> None:
        self.parts.setdefault(part, (0, total))


def run_bench(
    artifacts: Sequence[str | os.PathLike[str]],
    cfg: BenchConfig | None = None,
    *,
    data: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    **fields: Any,
) -> BenchResult:
    """Benchmark ``artifacts`` as ``cfg`` (:class:`~facedistill.config.BenchConfig`, the
    ``bench`` command's options) says, ``fields`` overriding its fields (``batch=(1, 8)``);
    with ``data``, accuracy on ``cfg.split`` too. A
    :class:`~facedistill.bench.record.BenchResult` (config, environment, one row per variant x
    batch, skipped configs; see :mod:`facedistill.bench`)."""
    cfg = replace(cfg or BenchConfig(), **fields)
    return _Bench(root=jetson_mod.ROOT, clock=time.perf_counter).run(
        list(artifacts), cfg, data=data, progress=progress)


class _Bench:
    """The machinery of :func:`run_bench`; ``root`` and ``clock`` are injectable for tests."""

    def __init__(self, root: Path = jetson_mod.ROOT, clock: Clock = time.perf_counter,
                 query_tools: bool = True, power_seconds: float = POWER_SECONDS) -> None:
        self.root = root
        self.clock = clock
        self.query_tools = query_tools
        self.power_seconds = power_seconds

    def run(self, paths: list[Any], cfg: BenchConfig, *, data: Any = None,
            progress: Progress | None = None) -> BenchResult:
        """``cfg``'s values are checked by the config itself (a BenchConfig)."""
        batch_list = list(dict.fromkeys(cfg.batch))  # each batch size once, in order
        if data is not None and not Path(data).is_dir():
            raise UserError("no such data folder", path=str(data))
        found = find_artifacts(paths)
        check_backend(found, cfg.backend)
        plan = _Plan(progress)
        bf16, _ = cpu_has_bf16(self.root)
        tuning: list[dict[str, Any]] = []
        if cfg.tune:  # before the models load: each tuning opens its own sessions
            from facedistill.bench import tune as tune_mod

            onnx = [a.path for a in found if a.kind == "onnx"]
            if not onnx:
                raise UserError("--tune tunes ONNX files: none among the artifacts")
            tuning = tune_mod.summary_rows(tune_mod.tune_files(
                onnx, batch_list, cfg.tune_seconds,
                progress=lambda d, t: plan.set("tune", d, t)))
        variants: list[Variant] = []
        try:
            for a in found:
                variants.extend(load_variants(a, cfg.backend, cfg.threads, bf16,
                                              openvino=cfg.openvino))
            result = self._measure(variants, found, cfg, batch_list, data, plan)
            return replace(result, tuning=tuple(tuning))
        finally:
            for v in variants:
                v.close()

    def _measure(self, variants: list[Variant], found: list[Any], cfg: BenchConfig,
                 batch_list: list[int], data: Any, plan: _Plan) -> BenchResult:
        warmup, iters, seconds, threads, split = (cfg.warmup, cfg.iters, cfg.seconds,
                                                  cfg.threads, cfg.split)
        inputs: dict[tuple[Any, int], np.ndarray] = {}
        configs: list[tuple[Variant, int]] = []
        skipped: list[Skipped] = []
        calls = []
        for v in variants:
            for b in batch_list:
                why = None
                if v.fixed_batch and b != v.fixed_batch:
                    why = f"the model takes batch {v.fixed_batch} only (static batch axis)"
                elif v.max_batch and b > v.max_batch:
                    why = f"batch {b} is above the engine profile's maximum {v.max_batch}"
                elif v.min_batch and b < v.min_batch:
                    why = f"batch {b} is below the engine profile's minimum {v.min_batch}"
                if why:
                    skipped.append(Skipped(artifact=str(v.artifact.path), precision=v.precision,
                                           backend=v.backend, batch=b, reason=why))
                    continue
                key = (v.preprocess.size, v.preprocess.mean, v.preprocess.std, b)
                if key not in inputs:
                    inputs[key] = make_input(v.preprocess, b)
                configs.append((v, b))
                calls.append(v.prepare(inputs[key]))
        if not configs:
            raise UserError("nothing to measure: every batch size was skipped ("
                            + "; ".join(s.reason for s in skipped) + ")")

        images = None
        if data is not None:  # read (and check) the split before the long measurement
            images = load_split(data, split, cfg.limit)
            plan.reserve("accuracy", len(images["paths"]) * len(variants))
        mode_seconds = seconds if iters is None else None
        if iters is None and seconds is None:
            mode_seconds = DEFAULT_SECONDS
        probes, floor_why = _floor_probes(configs, cfg)
        timed = interleave(
            [*calls, *(p.call for p in probes)], warmup=warmup, iters=iters,
            seconds=mode_seconds, clock=self.clock,
            progress=lambda d, t: plan.set("latency", d, t))
        samples = timed[:len(calls)]
        floors = floor_mod.summarize(probes, [LatencyStats.from_samples(s.host_ms).median
                                              for s in timed[len(calls):]]) if probes else {}

        power: dict[int, tuple[Power | None, str | None]] = {}
        sampler, power_why = (None, "not a Jetson")
        on_jetson, _ = jetson_mod.is_jetson(self.root)
        if on_jetson:
            sampler, power_why = jetson_mod.power_source(self.root)
        for i, (_v, b) in enumerate(configs):
            if sampler is None:
                power[i] = (None, power_why or "power not readable")
                continue
            power[i] = self._power(sampler, calls[i], b)
            plan.set("power", i + 1, len(configs))

        accuracy: dict[int, tuple[dict[str, Any] | None, str | None]] = {}
        if images is not None:
            n_img = len(images["paths"])
            # a CUDA-graph replay computes what plain execution does: score each model once
            same: dict[tuple[str, str, str], int] = {}
            for vi, v in enumerate(variants):
                key = (str(v.artifact.path), v.backend, v.precision)
                if key in same:
                    accuracy[vi] = accuracy[same[key]]
                    plan.set("accuracy", (vi + 1) * n_img, n_img * len(variants))
                    continue
                same[key] = vi

                def acc_progress(d: int, _t: int, base: int = vi * n_img) -> None:
                    plan.set("accuracy", base + d, n_img * len(variants))
                accuracy[vi] = (variant_accuracy(v, images, acc_progress), None)
        torch_mod = sys.modules.get("torch") if any(
            v.artifact.kind == "checkpoint" for v in variants) else None
        env = environment(threads=threads, torch_module=torch_mod, root=self.root,
                          query_tools=self.query_tools)
        rows = self._rows(variants, configs, samples, power, accuracy, data, split, warmup,
                          floors, floor_why)
        config = {
            "artifacts": [str(a.path) for a in found],
            "backend": cfg.backend,
            "batches": batch_list,
            "warmup": warmup,
            "iters": iters,
            "seconds": mode_seconds,
            "rounds": samples[0].runs if samples else 0,
            "interleaved": True,
            "ort_spinning": False,
            "threads": threads,
            "data": None if data is None else str(data),
            "split": split if data is not None else None,
            "limit": cfg.limit,
            "input_seed": INPUT_SEED,
            "floors": cfg.floors,
            "tune": cfg.tune,
        }
        return BenchResult(
            format=FORMAT,
            version=__version__,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            config=config,
            environment=env,
            rows=tuple(rows),
            skipped=tuple(skipped),
            floors=floors,
        )

    def _power(self, sampler: jetson_mod.PowerSampler, call: Callable[[], Any],
               batch: int) -> tuple[Power | None, str | None]:
        runs = 0
        with sampler:
            t0 = self.clock()
            while True:
                call()
                runs += 1
                elapsed = self.clock() - t0
                if elapsed >= self.power_seconds and runs >= 5:
                    break
        res = sampler.result()
        if res is None:
            return None, f"no {sampler.source} samples while running"
        per_image_s = elapsed / (runs * batch)
        return Power(
            source=res["source"],
            rail=res["total_rail"],
            mean_mw=res["total_mw"],
            rails_mw=res["rails"],
            samples=res["samples"],
            energy_mj_per_image=res["total_mw"] * per_image_s,
            seconds=elapsed,
            runs=runs,
        ), None

    def _rows(self, variants: list[Variant], configs: list[tuple[Variant, int]],
              samples: list[Any], power: dict[int, Any], accuracy: dict[int, Any],
              data: Any, split: str, warmup: int, floors: dict[str, Any] | None = None,
              floor_why: str | None = None) -> list[BenchRow]:
        labels = _labels(variants)
        costs: dict[int, tuple[dict[str, int | None], str | None]] = {}
        index = {id(v): i for i, v in enumerate(variants)}
        for i, v in enumerate(variants):
            same = next((j for j in range(i) if variants[j].artifact == v.artifact), None)
            costs[i] = costs[same] if same is not None else _cost(v)

        # accuracy reference: the fp32 variant of the same model (ORT first, then torch, TRT)
        refs: dict[str, int] = {}
        pref = {"ort-cpu": 0, "ort-cuda": 1, "ort-trt": 2, "ov-cpu": 3, "torch-cpu": 4,
                "torch-cuda": 5, "trt": 6}
        for i, v in enumerate(variants):
            if v.precision != "fp32" or i not in accuracy or accuracy[i][0] is None:
                continue
            k = model_key(v)
            if k not in refs or pref.get(v.backend, 9) < pref.get(variants[refs[k]].backend, 9):
                refs[k] = i

        rows = []
        for ci, (v, b) in enumerate(configs):
            vi = index[id(v)]
            s = samples[ci]
            reasons: dict[str, str] = {}
            lat = LatencyStats.from_samples(s.host_ms)
            gpu = LatencyStats.from_samples(s.gpu_ms) if s.gpu_ms else None
            if gpu is None:
                reasons["gpu_compute_ms"] = ("CPU backend: no GPU compute time" if not
                                             v.gpu_timing else "the runner reported no GPU time")
            cst, cost_why = costs[vi]
            if cst.get("params") is None:
                reasons["params"] = cost_why or "unknown"
            if cst.get("macs") is None:
                reasons["macs"] = cost_why or "unknown"
            acc_row: Accuracy | None = None
            if data is None:
                reasons["accuracy"] = "no --data given"
            elif vi in accuracy and accuracy[vi][0] is not None:
                acc = accuracy[vi][0]
                ref_i = refs.get(model_key(v))
                delta = None
                ref_label = None
                if ref_i is not None:
                    ref = accuracy[ref_i][0]
                    delta = acc["mean_balanced"] - ref["mean_balanced"]
                    ref_label = str(variants[ref_i].artifact.path)
                else:
                    reasons["accuracy_delta"] = "no fp32 variant of the same model in this run"
                acc_row = Accuracy(split=acc["split"], mean_balanced=acc["mean_balanced"],
                                   n_images=acc["n_images"], delta_to_fp32=delta,
                                   reference=ref_label)
            pw, pw_why = power.get(ci, (None, "not measured"))
            if pw is None:
                reasons["power"] = pw_why or "unknown"
            runtime = FLOOR_RUNTIMES.get(v.backend)
            bounds: dict[str, float | None] = dict.fromkeys(FLOOR_FIELDS)
            if runtime is None:
                why = f"floors are measured for CPU runtimes only, not {v.backend}"
            else:
                why = floor_why
                bounds = floor_mod.row_floor(floors or {}, runtime, v.preprocess.size, b,
                                             v.precision, cst.get("macs"), lat.median)
            for key in FLOOR_FIELDS:
                if bounds[key] is None:
                    reasons[key] = why or ("the model's MACs are unknown" if key in (
                        "bound_ms", "peak_pct") else "no floor measured for this shape")
            rows.append(BenchRow(
                model=labels[model_key(v)],
                arch=v.arch,
                source_sha256=v.source_sha256 or None,
                artifact=str(v.artifact.path),
                kind=v.artifact.kind,
                backend=v.backend,
                precision=v.precision,
                mode=v.mode,
                layout=v.layout,
                batch=b,
                input_shape=(b, 3, *v.preprocess.size),
                threads=v.threads,
                warmup=s.warmup,
                runs=s.runs,
                latency_ms=lat,
                per_image_ms=lat.median / b,
                throughput_ips=throughput(lat.mean, b),
                gpu_compute_ms=gpu,
                params=cst.get("params"),
                macs=cst.get("macs"),
                file_bytes=_file_bytes(v),
                accuracy=acc_row,
                power=pw,
                details={k: val for k, val in v.details.items() if k != "model"},
                reasons=reasons,
                **bounds,
            ))
        return rows


def _floor_probes(configs: list[tuple[Variant, int]],
                  cfg: BenchConfig) -> tuple[list[floor_mod.FloorProbe], str | None]:
    """The floor probes for the CPU runtimes among ``configs`` (per runtime: one identity per
    input shape timed, both GEMMs), or none and why."""
    if not cfg.floors:
        return [], "floors not asked for (--no-floors)"
    shapes: dict[str, list[tuple[tuple[int, int], int]]] = {}
    for v, b in configs:
        runtime = FLOOR_RUNTIMES.get(v.backend)
        if runtime is not None and (v.preprocess.size, b) not in shapes.setdefault(runtime, []):
            shapes[runtime].append((v.preprocess.size, b))
    if not shapes:
        return [], None
    if not floor_mod.have_onnx():
        return [], floor_mod.INSTALL_ONNX
    makers = {"ort": floor_mod.ort_probes, "ov": floor_mod.ov_probes}
    return [p for runtime, todo in shapes.items() for p in makers[runtime](todo, cfg.threads)], None


def check_artifacts(paths: Sequence[str | os.PathLike[str]], backend: str = "auto") -> None:
    """Resolve paths and check the backend without loading anything (for early CLI errors)."""
    check_backend(find_artifacts(list(paths)), backend)


__all__ = ["FORMAT", "ArtifactError", "check_artifacts", "make_input", "run_bench"]
