"""facedistill.bench: latency, size, cost and accuracy of checkpoints, ONNX files and engines.

Torch-free unless a checkpoint is benchmarked. Public API::

    result = run_bench(["runs/snet3/export/snet3.fp32.onnx", "runs/snet3"], batches=(1, 32),
                       data="data/synth")
    write_outputs(result, json_path="bench.json", md_path="bench.md", plot_path="bench.png")
    print(markdown_table(result))

``result`` is ``{"format": "facedistill.bench/v1", "version", "created", "config",
"environment", "rows", "skipped"}``; each row is one artifact variant at one batch size:
``model``, ``arch``, ``source_sha256``, ``artifact``, ``kind`` (checkpoint | onnx | engine),
``backend`` (ort-cpu, ort-cuda, ort-trt, torch-cpu, torch-cuda, trt), ``precision``, ``mode``
(default | autocast | cuda_graph), ``layout``, ``batch``, ``input_shape``, ``threads``,
``warmup``, ``runs``, ``latency_ms`` {median, p90, p99, mean, min, max, std},
``per_image_ms``, ``throughput_ips``, ``gpu_compute_ms`` (same keys, or null), ``params``,
``macs`` (one image), ``file_bytes``, ``accuracy`` {split, mean_balanced, n_images,
delta_to_fp32, reference} (fractions; or null), ``power`` (Jetson: {source, rail, mean_mw,
rails_mw, samples, energy_mj_per_image, seconds}, or null), ``details``, and ``reasons``: why
each null field is null.
"""

from __future__ import annotations

from facedistill.bench.core import run_bench
from facedistill.bench.report import markdown_table, write_outputs

__all__ = ["markdown_table", "run_bench", "write_outputs"]
