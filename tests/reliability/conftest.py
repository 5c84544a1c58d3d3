"""Artifacts of the reliability matrix, made once per session: an export of the tiny teacher,
models whose metadata does not fit their graph, oversized images; and folders a write must
fail in (read-only, full)."""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def small_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 synthetic 32x32 faces (~50 train, ~7 val, ~7 test): for the cases that must get
    through a training epoch or a split before they fail, quickly."""
    from facedistill.data.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("data") / "small"
    generate(out, SynthConfig(n=64, size=32, seed=4, images_per_identity=4), workers=1)
    return out


@pytest.fixture(scope="session")
def matrix_export(tiny_teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_teacher`` exported to FP32 and FP16 ONNX (not scored): the previous, good export
    that the fault cases must leave byte-identical."""
    from facedistill.export import export_model

    out = tmp_path_factory.mktemp("matrix-export") / "export"
    export_model(tiny_teacher, out, precision="fp32,fp16", no_gate=True, no_eval=True)
    return out


def _slice_graph(path: Path, meta: dict[str, str], in_hw: int, width: int) -> Path:
    """input [batch, 3, in_hw, in_hw] -> the first ``width`` values of the flattened input,
    carrying ``meta`` (the approach of tests/runtime/test_bad_models.py)."""
    import onnx
    from onnx import TensorProto, helper

    from facedistill.export.onnx import set_metadata

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, in_hw, in_hw])
    y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", width])
    consts = [helper.make_tensor(n, TensorProto.INT64, [1], [v])
              for n, v in (("s", 0), ("e", width), ("a", 1))]
    nodes = [helper.make_node("Flatten", ["input"], ["f"]),
             helper.make_node("Slice", ["f", "s", "e", "a"], ["probabilities"])]
    model = helper.make_model(helper.make_graph(nodes, path.stem, [x], [y], initializer=consts),
                              opset_imports=[helper.make_opsetid("", 18)])
    set_metadata(model, meta)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def bad_models(matrix_export: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """ONNX files with facedistill metadata that does not fit them: another graph (3 outputs,
    not 40), a threshold that is not a number, an input of another size; and a graph with a
    dangling node (fails the ONNX checker)."""
    import json

    import onnx

    from facedistill.export.onnx import get_metadata, set_metadata

    tmp = tmp_path_factory.mktemp("bad-models")
    good = matrix_export / "snet3.fp32.onnx"
    meta = get_metadata(onnx.load(str(good)))
    thr = onnx.load(str(good))
    values = json.loads(meta["thresholds"])
    values[3] = "high"
    set_metadata(thr, {**meta, "thresholds": json.dumps(values)})
    onnx.save(thr, str(tmp / "thresholds.onnx"))
    dangling = onnx.load(str(good))
    dangling.graph.node.append(onnx.helper.make_node("Relu", ["no_such_tensor"], ["dangling"]))
    (tmp / "checker").mkdir()
    onnx.save(dangling, str(tmp / "checker" / "snet3.fp32.onnx"))
    return {
        "other_graph": _slice_graph(tmp / "other_graph.onnx", meta, 32, 3),
        "thresholds": tmp / "thresholds.onnx",
        "input_size": _slice_graph(tmp / "input_size.onnx", meta, 16, 40),
        "checker": tmp / "checker" / "snet3.fp32.onnx",
    }


@pytest.fixture(scope="session")
def huge_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12000x12000 JPEG of one colour: 144 Mpx, under 2 MB on disk."""
    from PIL import Image

    path = tmp_path_factory.mktemp("huge") / "huge.jpg"
    Image.new("RGB", (12000, 12000), (150, 120, 100)).save(path, quality=50)
    return path


@pytest.fixture(scope="session")
def bomb_png() -> bytes:
    """A 16000x12000 grey PNG (192 Mpx, over PIL's decompression-bomb limit), as bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (16000, 12000)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def read_only(tmpfs: Callable[[str], Path], tmp_path: Path):  # type: ignore[no-untyped-def]
    """``read_only(fill)``: a folder that ``fill(folder)`` populates, then made read-only: a
    tmpfs remounted read-only when running as root (root ignores file modes), else a folder
    of mode 0555 (restored afterwards)."""
    made: list[Path] = []

    def make(fill: Callable[[Path], None] = lambda _: None) -> Path:
        if os.geteuid() != 0:
            folder = tmp_path / f"ro{len(made)}"
            folder.mkdir()
            fill(folder)
            for p in [folder, *folder.rglob("*")]:
                if p.is_dir():
                    p.chmod(0o555)
            made.append(folder)
            return folder
        folder = tmpfs("8m")
        fill(folder)
        done = subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True,
                              text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot remount a tmpfs read-only here: {done.stderr.strip()}")
        return folder

    try:
        yield make
    finally:
        for folder in made:
            for p in [folder, *folder.rglob("*")]:
                if p.is_dir():
                    p.chmod(0o755)


@pytest.fixture
def full_disk(tmpfs: Callable[[str], Path]):  # type: ignore[no-untyped-def]
    """``full_disk(size, fill)``: a real tmpfs of ``size`` that ``fill(folder)`` populates (the
    previous artifact), then topped up to the last byte with a filler file, ``filler.bin``,
    when ``top_up`` (needs root; skipped elsewhere)."""

    def make(size: str, fill: Callable[[Path], None] = lambda _: None,
             top_up: bool = True) -> Path:
        folder = tmpfs(size)
        fill(folder)
        if top_up:
            fd = os.open(folder / "filler.bin", os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                while os.write(fd, b"\0" * 4096):
                    pass
            except OSError:
                pass
            finally:
                os.close(fd)
        return folder

    return make

