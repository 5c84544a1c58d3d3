"""facedistill.bench: latency, size, cost and accuracy of checkpoints, ONNX files and engines.

Torch-free unless a checkpoint is benchmarked. Public API::

    result = run_bench(["runs/snet3/export/snet3.fp32.onnx", "runs/snet3"],
                       BenchConfig(batch=(1, 32)), data="data/synth")
    write_outputs(result, json_path="bench.json", md_path="bench.md", plot_path="bench.png")
    print(markdown_table(result))

``result`` is a frozen :class:`~facedistill.bench.record.BenchResult`: ``format``
(``facedistill.bench/v1``), ``version``, ``created``, ``config``, ``environment``, ``rows`` and
``skipped``; ``bench.json`` is its ``to_json()`` and :func:`read_bench` reads one back (older
files too). Each row is a :class:`~facedistill.bench.record.BenchRow`, one artifact variant at
one batch size: ``model``, ``arch``, ``source_sha256``, ``artifact``, ``kind`` (checkpoint |
onnx | engine), ``backend`` (ort-cpu, ort-cuda, ort-trt, torch-cpu, torch-cuda, trt),
``precision``, ``mode`` (default | autocast | cuda_graph), ``layout``, ``batch``,
``input_shape``, ``threads``, ``warmup``, ``runs``, ``latency_ms`` (a ``LatencyStats``: median,
p90, p99, mean, min, max, std), ``per_image_ms``, ``throughput_ips``, ``gpu_compute_ms`` (a
``LatencyStats`` or None), ``params``, ``macs`` (one image), ``file_bytes``, ``accuracy`` (an
``Accuracy``: split, mean_balanced, n_images, delta_to_fp32, reference; fractions; or None),
``power`` (Jetson: a ``Power``: source, rail, mean_mw, rails_mw, samples,
energy_mj_per_image, seconds, runs; or None), ``details``, and ``reasons``: why each None field
is None.
"""

from __future__ import annotations

from facedistill.bench.core import run_bench
from facedistill.bench.record import BenchResult, BenchRow, read_bench
from facedistill.bench.report import markdown_table, write_outputs

__all__ = ["BenchResult", "BenchRow", "markdown_table", "read_bench", "run_bench",
           "write_outputs"]
