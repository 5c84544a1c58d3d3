"""export_model end to end on the tiny trained run: files, report, metadata, accuracy; and the
ways it refuses bad input with one-line errors."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facedistill.errors import UserError


def _meta(path: Path) -> dict[str, str]:
    import onnxruntime as ort

    return dict(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                .get_modelmeta().custom_metadata_map)


def test_report_lists_every_variant(tiny_export: tuple[dict[str, Any], Path]) -> None:
    from facedistill.io import sha256_file

    report, out = tiny_export
    on_disk = json.loads((out / "export_report.json").read_text())
    assert report.to_json() == on_disk  # what export_model returns is what it wrote
    assert on_disk["variants"].keys() == report.variants.keys() == {
        "fp32", "fp16", "int8", "int8-trt"}
    assert sorted(p.name for p in out.iterdir()) == [
        "export_report.json", "snet3.fp16.onnx", "snet3.fp32.onnx", "snet3.int8-trt.onnx",
        "snet3.int8.onnx"]
    for name, v in on_disk["variants"].items():
        path = Path(v["path"])
        assert path == out / f"snet3.{name}.onnx"
        assert v["status"] == "ok" and v["checker"] is True
        assert v["size_bytes"] == path.stat().st_size
        assert v["sha256"] == sha256_file(path)  # taken after the accuracy was written in
        acc = v["accuracy"]
        assert acc["split"] == "val" and acc["n_images"] == 47
        assert 0.5 < acc["mean_balanced"] <= 1.0
        assert math.isclose(acc["delta_to_fp32"],
                            acc["mean_balanced"] - on_disk["variants"]["fp32"]["accuracy"]
                            ["mean_balanced"], abs_tol=1e-12)
        assert all(s >= 0 for s in v["seconds"].values())
    fp32 = on_disk["variants"]["fp32"]
    assert set(fp32["parity"]) == {"1", "8"} and max(fp32["parity"].values()) <= 1e-4
    assert on_disk["variants"]["fp16"]["max_abs_diff_to_fp32"] < 5e-3
    assert on_disk["data"]["calibration"]["n_images"] == 64
    assert on_disk["gate"]["enabled"] is False
    assert math.isclose(on_disk["gate"]["int8_drop_points"],
                        -100 * on_disk["variants"]["int8"]["accuracy"]["delta_to_fp32"])


def test_metadata_round_trip(tiny_export: tuple[dict[str, Any], Path],
                             tiny_teacher: Path) -> None:
    from facedistill.io import sha256_file
    from facedistill.nn.checkpoint import load_checkpoint
    from facedistill.runtime.metadata import parse_metadata, probability_thresholds
    from facedistill.runtime.preprocess import Preprocess

    report, out = tiny_export
    ckpt = load_checkpoint(tiny_teacher)
    for name, v in report.variants.items():
        assert v.path is not None and v.accuracy is not None
        info = parse_metadata(_meta(Path(v.path)), source=v.path)
        assert info.precision == name.split("-")[0]
        assert info.attributes == tuple(ckpt["attributes"])
        assert info.logit_thresholds == pytest.approx(ckpt["thresholds"])
        assert info.thresholds == pytest.approx(probability_thresholds(ckpt["thresholds"]))
        # every variant carries the checkpoint's per-attribute val balanced accuracy
        assert info.val_balanced == pytest.approx(tuple(ckpt["val_balanced"]))
        assert info.preprocess == Preprocess.from_record(ckpt["preprocess"])
        assert info.preprocess.size == (32, 32)
        assert info.arch == ckpt["arch"]
        assert info.source_sha256 == sha256_file(tiny_teacher / "best.pt")
        assert info.version == ckpt["version"]
        assert info.accuracy == v.accuracy.to_json()
        assert (info.input_name, info.output_names) == ("input", ("probabilities", "logits"))


def test_fp32_accuracy_equals_pytorch(tiny_export: tuple[dict[str, Any], Path],
                                      tiny_teacher: Path) -> None:
    """The ONNX file, fed by the torch-free preprocessing, scores what the checkpoint scores
    in PyTorch with its stored thresholds: same images, same preprocessing, same decisions."""
    from facedistill.pipeline.evaluate import evaluate_checkpoint

    report, _ = tiny_export
    torch_report = evaluate_checkpoint(tiny_teacher, split="val", thresholds="checkpoint",
                                       batch_size=64, workers=0, device="cpu")
    fp32 = report.variants["fp32"].accuracy
    assert fp32 is not None and fp32.mean_balanced == pytest.approx(
        torch_report["mean_balanced"], abs=1e-9)


def test_fp16_and_int8_deltas_are_small(tiny_export: tuple[dict[str, Any], Path]) -> None:
    report, _ = tiny_export
    v = report.variants
    delta = {name: rec.accuracy.delta_to_fp32 for name, rec in v.items() if rec.accuracy}
    assert abs(delta["fp16"]) < 0.005
    for name in ("int8", "int8-trt"):
        assert abs(delta[name]) < 0.05  # 47 images: noisy, bounded
        assert v[name].max_abs_diff_to_fp32 < 0.1
    # the CPU recipe cannot saturate: its integer kernels equal the emulation on any CPU
    assert v["int8"].max_abs_diff_integer_vs_emulated < 0.02  # saturation: ~0.27 here
    assert v["int8-trt"].max_abs_diff_integer_vs_emulated >= 0.0  # depends on the CPU


def test_int8_files_record_their_recipe_and_gate(tiny_export: tuple[dict[str, Any], Path]
                                                 ) -> None:
    """Each INT8 file says how it was quantized and where its gate measured it: the CPU
    recipe with this machine's integer kernels, TensorRT's through the float emulation."""
    from facedistill.export.qdq_check import check_tensorrt_qdq
    from facedistill.runtime.cpu import cpu_record
    from facedistill.runtime.metadata import parse_metadata

    report, out = tiny_export
    here = cpu_record()
    assert report.machine["int8_class"] == here["int8_class"]
    assert report.int8_recipes == {"int8": "cpu", "int8-trt": "tensorrt"}
    for name, recipe, bits, kernels in (("int8", "cpu", 7, "integer"),
                                        ("int8-trt", "tensorrt", 8, "emulated")):
        v = report.variants[name]
        assert v.int8_gate is not None and v.accuracy is not None and v.recipe is not None
        info = parse_metadata(_meta(out / f"snet3.{name}.onnx"))
        assert (info.int8_recipe, info.int8_weight_bits) == (recipe, bits)
        assert info.int8_gate == v.int8_gate.to_json()
        assert v.int8_gate.kernels == kernels
        assert info.int8_gate["kernels"] == kernels
        assert info.int8_gate["int8_class"] == here["int8_class"]
        assert info.int8_gate["drop_points"] == pytest.approx(
            -100 * v.accuracy.delta_to_fp32)
        assert v.recipe["name"] == recipe
    assert report.variants["int8-trt"].qdq_conformance == {"rules": "tensorrt",
                                                           "problems": 0}
    assert report.variants["int8"].qdq_conformance is None  # a CPU recipe: not checked
    assert check_tensorrt_qdq(out / "snet3.int8-trt.onnx") == []
    assert any("INT32" in p for p in check_tensorrt_qdq(out / "snet3.int8.onnx"))


# -- refusals -------------------------------------------------------------------------------


def test_corrupt_and_truncated_onnx_are_refused(tiny_export: tuple[dict[str, Any], Path],
                                                tmp_path: Path, tiny_synth: Path) -> None:
    from facedistill.export import export_model

    _, out = tiny_export
    data = (out / "snet3.fp32.onnx").read_bytes()
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not an onnx file at all" * 10)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    for bad in (garbage, truncated):
        with pytest.raises(UserError) as err:
            export_model(bad, tmp_path / "out", precision="fp32", eval_data=tiny_synth)
        msg = err.value.format()
        assert "\n" not in msg and msg.startswith(str(bad))
        assert "not a readable ONNX file" in msg or "checker" in msg or "metadata" in msg
    assert not (tmp_path / "out" / "snet3.fp32.onnx").exists()


def test_onnx_without_our_metadata_is_refused(tmp_path: Path, tiny_synth: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    from facedistill.export import export_model

    graph = helper.make_graph(
        [helper.make_node("Sigmoid", ["input"], ["probabilities"])], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 40])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 40])])
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(UserError, match="not a facedistill model"):
        export_model(path, tmp_path / "out", eval_data=tiny_synth)


def test_checkpoint_version_rule(tiny_teacher: Path, tmp_path: Path) -> None:
    from facedistill.export import export_model
    from facedistill.export.onnx import ExportError, check_checkpoint_version
    from facedistill.nn.checkpoint import load_checkpoint, save_checkpoint

    assert check_checkpoint_version("0.1.0", current="0.1.3") == "written by facedistill 0.1.0"
    assert check_checkpoint_version("0.1.3", current="0.1.3") == ""
    assert check_checkpoint_version("0.0.9", current="0.1.3")  # older: accepted, noted
    assert check_checkpoint_version("0.1.7", current="0.1.3")  # newer patch: accepted
    for bad in ("0.2.0", "1.0.0", "banana", None):
        with pytest.raises(ExportError) as err:
            check_checkpoint_version(bad, "x.pt", current="0.1.3")
        assert err.value.field == "version"

    ckpt = load_checkpoint(tiny_teacher)
    ckpt.pop("path")
    ckpt["version"] = "9.4.0"
    future = save_checkpoint(tmp_path / "future.pt", ckpt)
    with pytest.raises(ExportError) as err:
        export_model(future, tmp_path / "out")
    assert err.value.format() == (f"{future}: field 'version': written by facedistill 9.4.0, "
                                  "newer than this 0.1.0; upgrade facedistill to export it")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_unwritable_output_dir(tiny_teacher: Path, tmp_path: Path) -> None:
    from facedistill.export import export_model

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(UserError) as err:
        export_model(tiny_teacher, blocker / "export")
    assert err.value.format().startswith(f"{blocker / 'export'}: cannot write to the output")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root writes into read-only folders")
def test_read_only_output_dir(tiny_teacher: Path, tmp_path: Path) -> None:
    from facedistill.export import export_model

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(UserError, match="cannot write to the output folder"):
            export_model(tiny_teacher, ro)
    finally:
        ro.chmod(0o700)


def test_option_errors_name_the_field(tiny_teacher: Path, tmp_path: Path) -> None:
    from facedistill.export import export_model

    cases = [({"precision": "fp8"}, "precision"), ({"opset": 9}, "opset"),
             ({"calib_method": "mse"}, "calib_method"), ({"calib_n": 0}, "calib_n"),
             ({"trt_profile": (8, 1, 32)}, "trt_profile"), ({"workspace_mb": 0}, "workspace_mb"),
             ({"no_eval": True}, "no_eval")]
    for kwargs, field in cases:
        with pytest.raises(UserError) as err:
            export_model(tiny_teacher, tmp_path / "out", **kwargs)
        assert err.value.field == field, kwargs


def test_int8_gate_rejects_and_keeps_previous_file(tiny_export: tuple[dict[str, Any], Path],
                                                   tiny_synth: Path, tmp_path: Path) -> None:
    """A real trigger: INT8 must not be worse than fp32 + 100 points (max_drop -100)."""
    from facedistill.export import export_model
    from facedistill.export.api import GateError

    _, out = tiny_export
    src = tmp_path / "src" / "snet3.fp32.onnx"
    src.parent.mkdir()
    shutil.copyfile(out / "snet3.fp32.onnx", src)
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "snet3.int8.onnx").write_bytes(b"an earlier, accepted export")
    with pytest.raises(GateError) as err:  # typed: only the gate failed
        export_model(src, dst, precision="int8", max_drop=-100.0, calib_n=32,
                     eval_data=tiny_synth)
    assert err.value.rejected == ["int8"] and err.value.report.gate.passed is False
    assert err.value.report.variants["int8"].rejected_by_gate is True
    msg = err.value.format()
    assert "\n" not in msg and msg.startswith(f"{dst / 'snet3.int8.onnx'}: INT8 rejected")
    assert "more than max_drop -100" in msg
    assert (dst / "snet3.int8.onnx").read_bytes() == b"an earlier, accepted export"
    assert not list(dst.glob(".*candidate*"))
    report = json.loads((dst / "export_report.json").read_text())
    assert report["variants"]["int8"]["status"] == "failed"
    assert "sha256" not in report["variants"]["int8"]
    assert report["variants"]["fp32"]["status"] == "ok"
    assert report["gate"]["passed"] is False

    # the same run with the gate off keeps INT8 and records its accuracy in the file
    report = export_model(src, dst, precision="int8", max_drop=-100.0, no_gate=True,
                          calib_n=32, eval_data=tiny_synth)
    int8 = report.variants["int8"]
    assert int8.status == "ok" and int8.accuracy is not None
    assert json.loads(_meta(dst / "snet3.int8.onnx")["accuracy"]) == int8.accuracy.to_json()
    assert str(report.source.note).startswith("exported earlier")


def test_onnx_source_runs_without_torch(tiny_export: tuple[dict[str, Any], Path],
                                        tiny_synth: Path, tmp_path: Path) -> None:
    """Quantization, FP16 and evaluation from an fp32 ONNX import neither torch nor the
    torch side of the pipeline (checked in a fresh interpreter)."""
    import subprocess
    import sys

    _, out = tiny_export
    code = (
        "import sys\n"
        "from facedistill.export import export_model\n"
        f"r = export_model({str(out / 'snet3.fp32.onnx')!r}, {str(tmp_path)!r}, "
        f"precision='fp16', eval_data={str(tiny_synth)!r})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(r.variants['fp16'].accuracy.mean_balanced)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    fp16 = tiny_export[0].variants["fp16"].accuracy
    assert fp16 is not None and fp16.mean_balanced is not None
    expected = fp16.mean_balanced
    assert float(done.stdout.strip()) == pytest.approx(expected, abs=1e-12)
    assert np.isfinite(expected)


def test_backend_warns_once_for_a_saturating_file(tiny_export: tuple[dict[str, Any], Path],
                                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """The real ONNX Runtime backend on the real exported files; only the CPU class is set
    (both classes cannot be had on one machine)."""
    import logging

    from facedistill.runtime import cpu
    from facedistill.runtime.backends import OrtBackend

    _, out = tiny_export
    trt_file = tmp_path / "snet3.int8-trt.onnx"
    shutil.copyfile(out / "snet3.int8-trt.onnx", trt_file)
    caplog.set_level(logging.WARNING, logger="facedistill")
    monkeypatch.setattr(cpu, "int8_class", lambda *a, **k: "x86-vnni")
    assert OrtBackend(trt_file, device="cpu").int8_warning is None
    monkeypatch.setattr(cpu, "int8_class", lambda *a, **k: "x86-avx2")
    assert OrtBackend(out / "snet3.int8.onnx", device="cpu").int8_warning is None
    first = OrtBackend(trt_file, device="cpu").int8_warning
    again = OrtBackend(trt_file, device="cpu").int8_warning
    assert first == again and first is not None and str(trt_file) in first
    logged = [r.getMessage() for r in caplog.records if r.name == "facedistill"]
    assert logged == [first]  # once per file and process


def test_int8_plan_and_gate_kernels() -> None:
    from facedistill.export.api import _gate_kernels, _int8_plan
    from facedistill.export.quantize import INT8_RECIPES

    assert _int8_plan(["fp32"], "tensorrt", trt=True) == {}
    assert _int8_plan(["fp32", "int8"], None, trt=False) == {"int8": "cpu"}
    assert _int8_plan(["fp32", "int8"], "auto", trt=True) == {"int8": "cpu",
                                                               "int8-trt": "tensorrt"}
    assert _int8_plan(["int8"], "tensorrt", trt=False) == {"int8-trt": "tensorrt"}
    assert _int8_plan(["int8"], ["cpu-vnni", "tensorrt"], trt=False) == {
        "int8": "cpu-vnni", "int8-trt": "tensorrt"}
    for bad in ("cpu,cpu-vnni", "avx2"):
        with pytest.raises(UserError) as err:
            _int8_plan(["int8"], bad, trt=False)
        assert err.value.field == "int8_recipe"
    kernels = {(r, c): _gate_kernels(INT8_RECIPES[r], c) for r in INT8_RECIPES
               for c in ("x86-avx2", "x86-vnni")}
    assert kernels == {("cpu", "x86-avx2"): "integer", ("cpu", "x86-vnni"): "integer",
                       ("cpu-vnni", "x86-avx2"): "emulated", ("cpu-vnni", "x86-vnni"): "integer",
                       ("tensorrt", "x86-avx2"): "emulated",
                       ("tensorrt", "x86-vnni"): "emulated"}


def test_int8_engine_without_the_tensorrt_recipe_is_a_recorded_failure(
        tiny_export: tuple[dict[str, Any], Path], tmp_path: Path) -> None:
    """`--trt --int8-recipe cpu`: the int8 engine cannot come from the CPU file (its int32
    biases); the report says why and the export fails at the end (no GPU needed to see it)."""
    from facedistill.export.api import ExportFailed, ExportRequest, _build_engines, _Steps
    from facedistill.export.folder import ExportFolder
    from facedistill.export.report import REPORT_FORMAT

    report, out = tiny_export
    rep = {"format": REPORT_FORMAT, "variants": {"fp32": {"status": "ok"},
                                                 "int8": {"status": "ok"}}, "engines": {}}
    steps = _Steps(rep)
    request = ExportRequest(precisions=("int8",), int8_plan={"int8": "cpu"}, profile=(1, 4, 8))
    with ExportFolder(tmp_path) as folder:
        _build_engines({"int8": out / "snet3.int8.onnx"}, "snet3", folder, request, rep, steps,
                       None)
    assert rep["engines"]["int8"]["status"] == "failed"
    assert "add 'tensorrt' to --int8-recipe" in rep["engines"]["int8"]["error"]
    with pytest.raises(ExportFailed, match="int8 engine not built") as err:
        steps.raise_if_failed(tmp_path)
    assert type(err.value) is ExportFailed  # not a GateError: the pipeline must stop on it
    assert err.value.failed == ["int8 engine"] and not err.value.committed
    assert err.value.report.engines["int8"].status == "failed"  # the typed report
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("method", ["entropy", "percentile", "minmax"])
def test_int8_calibration_on_a_count_that_is_no_multiple_of_the_batch(
        tiny_export: tuple[dict[str, Any], Path], tmp_path: Path, method: str) -> None:
    """ONNX Runtime's histogram calibrators used to fail on a short last batch ("setting an
    array element with a sequence"), e.g. with the default --calib-n 512 on a train split of
    fewer images: the reader now fills the last batch up."""
    import numpy as np
    import onnxruntime as ort

    from facedistill.export.quantize import quantize_int8

    report, _ = tiny_export
    src = str(report.variants["fp32"].path)
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    shape = [d if isinstance(d, int) else 1 for d in sess.get_inputs()[0].shape][1:]
    images = np.random.default_rng(0).standard_normal((45, *shape)).astype(np.float32)
    rec = quantize_int8(src, tmp_path / "q.onnx", images, method=method)
    assert rec["calibration"]["n_images"] == 45
    assert rec["calibration"]["repeated_to_fill_batches"] == 19  # 45 -> 2 batches of 32
    out = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    got = out.run(None, {out.get_inputs()[0].name: images[:4]})[0]
    assert got.shape[0] == 4 and np.isfinite(got).all()


def test_int8_options_keep_float_qoperator_and_activation_zero_points(
        tiny_export: tuple[dict[str, Any], Path], tmp_path: Path) -> None:
    """What benchmarks/int8_small.py varies: a conv kept in float, QOperator nodes, symmetric
    activations; and the combinations a target cannot read are refused by field."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from facedistill.errors import UserError
    from facedistill.export.quantize import quantizable_nodes, quantize_int8

    report, _ = tiny_export
    src = str(report.variants["fp32"].path)
    nodes = quantizable_nodes(src, save_to=tmp_path / "pre.onnx")
    convs = [n for n, op in nodes if op == "Conv"]
    assert convs and (tmp_path / "pre.onnx").is_file()
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    shape = [d if isinstance(d, int) else 1 for d in sess.get_inputs()[0].shape][1:]
    images = np.random.default_rng(0).standard_normal((32, *shape)).astype(np.float32)
    ref = sess.run(None, {"input": images[:8]})[0]

    def ops(path: Path) -> list[str]:
        return [n.op_type for n in onnx.load(str(path)).graph.node]

    rec = quantize_int8(src, tmp_path / "f.onnx", images, method="minmax",
                        keep_float=[convs[0]])
    assert rec["calibration"]["float_nodes"] == [convs[0]]
    assert ops(tmp_path / "f.onnx").count("Conv") == len(convs)  # Q/DQ keeps Conv nodes
    first = next(n for n in onnx.load(str(tmp_path / "f.onnx")).graph.node
                 if n.op_type == "Conv")
    inits = {t.name for t in onnx.load(str(tmp_path / "f.onnx")).graph.initializer}
    assert first.input[1] in inits  # its weight is the float initializer, not a DQ output
    q = quantize_int8(src, tmp_path / "op.onnx", images, method="minmax",
                      quant_format="qoperator")
    assert q["calibration"]["format"] == "QOperator"
    assert "QLinearConv" in ops(tmp_path / "op.onnx") and "Conv" not in ops(tmp_path / "op.onnx")
    sym = quantize_int8(src, tmp_path / "s.onnx", images, method="minmax",
                        symmetric_activations=True)
    assert sym["calibration"]["symmetric"] is True
    model = onnx.load(str(tmp_path / "s.onnx"))
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert not any(values[n.input[2]].any() for n in model.graph.node
                   if n.op_type == "QuantizeLinear")
    for path in ("f.onnx", "op.onnx", "s.onnx"):
        out = ort.InferenceSession(str(tmp_path / path), providers=["CPUExecutionProvider"])
        got = out.run(None, {"input": images[:8]})[0]
        assert np.abs(got - ref).max() < 0.1, path

    with pytest.raises(UserError, match="no_such_node") as err:
        quantize_int8(src, tmp_path / "x.onnx", images, keep_float=["no_such_node"])
    assert err.value.field == "keep_float"
    with pytest.raises(UserError, match="Q/DQ") as err:
        quantize_int8(src, tmp_path / "x.onnx", images, recipe="tensorrt",
                      quant_format="qoperator")
    assert err.value.field == "quant_format"
    with pytest.raises(UserError, match="symmetric") as err:
        quantize_int8(src, tmp_path / "x.onnx", images, recipe="tensorrt",
                      symmetric_activations=False)
    assert err.value.field == "symmetric_activations"
    assert not (tmp_path / "x.onnx").exists()


def test_an_onnx_source_failing_the_checker_never_replaces_the_good_fp32(
        tiny_export: tuple[dict[str, Any], Path], tmp_path: Path) -> None:
    import onnx

    from facedistill.export import export_model
    from facedistill.export.onnx import ExportError

    _, out = tiny_export
    model = onnx.load(str(out / "snet3.fp32.onnx"))
    model.graph.node.append(onnx.helper.make_node("Relu", ["no_such_tensor"], ["dangling"]))
    bad = tmp_path / "src" / "snet3.fp32.onnx"
    bad.parent.mkdir()
    onnx.save(model, str(bad))
    dst = tmp_path / "out"
    dst.mkdir()
    good = b"the fp32 of an earlier, good export"
    (dst / "snet3.fp32.onnx").write_bytes(good)
    with pytest.raises(ExportError) as err:
        export_model(bad, dst, precision="fp32", no_eval=True)
    line = err.value.format()
    assert line.startswith(f"{bad}: ") and "fails the ONNX checker" in line
    assert (dst / "snet3.fp32.onnx").read_bytes() == good
