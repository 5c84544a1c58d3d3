"""One ONNX Runtime loader: predict, bench and export open their sessions the same way, so the
bench times what the runtime ships and export scores it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facedistill.bench.artifacts import find_artifacts, load_variants
from facedistill.export.onnx import ExportError, ort_session
from facedistill.runtime import Predictor
from facedistill.runtime.backends import OrtBackend, open_session, session_summary
from facedistill.runtime.errors import ModelError


@pytest.mark.parametrize("threads", [1, 2])
def test_bench_times_the_session_predict_runs(tiny_onnx: Path, threads: int) -> None:
    shipped = Predictor(tiny_onnx, threads=threads).describe()
    [variant] = load_variants(find_artifacts([tiny_onnx])[0], "auto", threads, bf16=False)
    timed = {k: variant.details[k] for k in session_summary(open_session(tiny_onnx))}
    assert timed == {k: shipped[k] for k in timed}
    assert timed["intra_op_threads"] == threads and timed["inter_op_threads"] == 1
    assert timed["spinning"] is False and timed["emulate_qdq"] is False
    assert variant.backend == "ort-cpu" and timed["providers"] == ["CPUExecutionProvider"]
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(variant.predict(x),
                                  OrtBackend(tiny_onnx, threads=threads).run(x))


def test_export_scores_with_the_same_session_and_emulates_qdq_only_when_asked(
        tiny_onnx: Path) -> None:
    plain = session_summary(ort_session(tiny_onnx, threads=1))
    shipped = Predictor(tiny_onnx, threads=1).describe()
    assert plain == {k: shipped[k] for k in plain}
    assert session_summary(ort_session(tiny_onnx, threads=1, emulate_qdq=True))["emulate_qdq"]


def test_an_unloadable_model_is_one_error_for_every_caller(tmp_path: Path) -> None:
    bad = tmp_path / "noise.onnx"
    bad.write_bytes(b"\x08\x07not a model")
    with pytest.raises(ModelError, match="not a loadable ONNX model") as runtime_err:
        open_session(bad)
    assert runtime_err.value.path == str(bad)
    with pytest.raises(ExportError, match="not a loadable ONNX model"):
        ort_session(bad)
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        open_session(b"\x08\x07not a model")


def test_spinning_is_off_unless_asked_and_predict_passes_it_on(tiny_onnx: Path) -> None:
    assert Predictor(tiny_onnx).describe()["spinning"] is False
    assert Predictor(tiny_onnx, spin=True).describe()["spinning"] is True
    assert session_summary(open_session(tiny_onnx, spin=True))["spinning"] is True
