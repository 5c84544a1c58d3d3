"""The pipeline: stage skipping, invalidation by config changes, resume of a killed training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from facedistill.cli import cli
from facedistill.commands.pipeline import load_pipeline_config
from facedistill.errors import ConfigError, UserError
from facedistill.nn.checkpoint import load_checkpoint
from facedistill.workflow.stages import Pipeline, PipelineConfig

TINY = """
[train]
arch = "snet3"
width = 0.5
size = 32
epochs = {teacher_epochs}
batch_size = 32
workers = 0
seed = 1

[select]
k = 64

[compress]
k = 64
width = 0.25
size = 32
epochs = {student_epochs}
batch_size = 32
workers = 0

[export]
precision = "fp32,int8"
calib_n = 32
trt_profile = "1,4"
no_gate = true

[bench]
batch = "1,4"
warmup = 1
iters = 3

[pipeline]
students = ["snet3"]
twins = ["snet3"]
data = "{data}"
"""


def tiny_config(tmp: Path, data: Path, **kw: object) -> Path:
    values = {"teacher_epochs": 2, "student_epochs": 1, "data": str(data), **kw}
    path = tmp / "tiny.toml"
    path.write_text(TINY.format(**values))
    return path


def load(path: Path) -> PipelineConfig:
    return load_pipeline_config(cli, path)


@pytest.mark.slow
def test_full_run_then_skip_then_invalidate_downstream(tiny_synth: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg_path = tiny_config(tmp_path, tiny_synth)
    first = Pipeline(load(cfg_path), out).run()
    names = ["data", "teacher", "select", "student:snet3", "twin:snet3", "export:teacher",
             "export:snet3", "bench", "report"]
    assert first["ran"] == names and first["skipped"] == []
    report = out / "report.md"
    assert report.exists() and (out / "report.html").exists()
    data = json.loads((out / "report.json").read_text())
    # the label-only twin: same student and budget, no teacher term, its gain in the report
    twin = json.loads((out / "students" / "snet3-labels" / "compare.json").read_text())
    assert twin["method"] == "labels" and twin["distill"]["weights"] == {"labels": 1.0}
    (row,) = data["twins"]
    assert row["labels"] == twin["rows"][0]["mean_balanced"]
    assert row["gain"] == pytest.approx(data["models"][1]["mean_balanced"] - row["labels"])
    assert "## Distillation against a label-only twin" in report.read_text()
    assert data["models"][1]["live_params"] <= data["models"][1]["params"]
    assert [m["model"] for m in data["models"]] == ["teacher", "snet3"]
    for m in data["models"]:
        assert 0.4 < m["mean_balanced"] < 1.0
        assert m["fp32_ms_b1"] is not None and m["fp32_ms_b1"] > 0
        assert m["int8_bytes"] is not None and m["int8_bytes"] < m["fp32_bytes"]
        # what to ship: the precision with the lowest measured latency at each batch size
        for b in (1, 4):
            ms = {p: m[f"{p}_ms_b{b}"] for p in ("fp32", "int8")}
            assert m["fastest"][str(b)] == min(ms, key=ms.__getitem__)
    md = report.read_text()
    assert "## What to ship per model on this machine" in md and "- snet3: **" in md
    assert data["models"][1]["compression"] > 1
    # the verdict leads: one of the exported files, by the rule the page states
    assert md.index("## Verdict") < md.index("## Models")
    chosen = data["verdict"]
    shipped = {m[f"{p}_onnx"] for m in data["models"] for p in ("fp32", "int8")}
    assert chosen["path"] in shipped and f"**Ship `{chosen['path']}`**" in md
    assert "Rule: The verdict is" in md and "## Units and terms" in md
    assert "| teacher | " in md and "| total (without this report) |" in md  # stage times
    assert "- **compression**: the teacher's params over the model's" in md
    assert (out / "report_pareto.png").exists()
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<table>" in html
    assert "class='verdict'" in html and "<details>" in html and "<code>" in html

    # unchanged: everything is skipped
    second = Pipeline(load(cfg_path), out).run()
    assert second["ran"] == [] and second["skipped"] == names

    # a bench option changed: exactly bench and report run again
    cfg_path.write_text(cfg_path.read_text().replace("iters = 3", "iters = 4"))
    third = Pipeline(load(cfg_path), out).run()
    assert third["ran"] == ["bench", "report"] and third["skipped"] == names[:-2]

    # a student option changed: the student and everything downstream of it are stale
    tiny_config(tmp_path, tiny_synth, student_epochs=2)
    stale = [r["stage"] for r in Pipeline(load(cfg_path), out).status() if not r["valid"]]
    assert stale == ["student:snet3", "twin:snet3", "export:snet3", "bench", "report"]
    tiny_config(tmp_path, tiny_synth)
    cfg_path.write_text(cfg_path.read_text().replace("iters = 3", "iters = 4"))
    assert all(r["valid"] for r in Pipeline(load(cfg_path), out).status())

    # an output file changed behind the pipeline's back: that stage and its dependents
    state = json.loads((out / "pipeline.json").read_text())
    assert all(s["status"] == "done" for s in state["stages"].values())
    onnx = Path(state["stages"]["export:teacher"]["outputs"]["variants"]["fp32"])
    original = onnx.read_bytes()
    onnx.write_bytes(original + b"\0")
    rows = {r["stage"]: r for r in Pipeline(load(cfg_path), out).status()}
    assert rows["export:teacher"] == {"stage": "export:teacher", "valid": False,
                                      "reason": "outputs changed"}
    assert not rows["bench"]["valid"] and rows["export:snet3"]["valid"]
    onnx.write_bytes(original)

    # --from redoes a stage and everything after it
    fifth = Pipeline(load(cfg_path), out).run(start="report")
    assert fifth["ran"] == ["report"] and "bench" in fifth["skipped"]


def test_config_errors_name_the_key(tiny_synth: Path, tmp_path: Path) -> None:
    path = tiny_config(tmp_path, tiny_synth)
    path.write_text(path.read_text().replace("k = 64\n\n[compress]",
                                             "k = 64\nbogus = 1\n\n[compress]"))
    with pytest.raises(ConfigError, match=r"select\.bogus"):
        load(path)
    path.write_text(TINY.format(teacher_epochs=0, student_epochs=1, data=tiny_synth))
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        load(path)
    path.write_text(TINY.format(teacher_epochs=1, student_epochs=1, data=tiny_synth)
                    .replace('students = ["snet3"]', 'students = ["resnet"]'))
    with pytest.raises(ConfigError, match="students"):
        load(path)
    path.write_text(TINY.format(teacher_epochs=1, student_epochs=1, data=tiny_synth)
                    .replace('twins = ["snet3"]', 'twins = ["snet1"]'))
    with pytest.raises(ConfigError, match="twins must be some of the students"):
        load(path)
    path.write_text(TINY.format(teacher_epochs=1, student_epochs=1, data=tiny_synth)
                    .replace("k = 64\nwidth", 'k = 64\nweight = ["selected"]\nwidth'))
    with pytest.raises(ConfigError, match=r"compress\.weight.*TERM=WEIGHT"):
        load(path)
    path.write_text(TINY.format(teacher_epochs=1, student_epochs=1, data=tiny_synth)
                    .replace("[train]", "[trian]"))
    with pytest.raises(ConfigError, match=r"unknown command table \[trian\] \(did you mean "
                                          r"\[train\]\?") as err:
        load(path)
    assert err.value.field == "trian"
    path.write_text(TINY.format(teacher_epochs=1, student_epochs=1, data=tiny_synth)
                    .replace("iters = 3", "itres = 3"))
    with pytest.raises(ConfigError, match=r"unknown option 'itres' \(did you mean 'iters'\?"):
        load(path)
    good = tiny_config(tmp_path, tiny_synth)
    with pytest.raises(UserError, match="unknown stage 'nope'"):
        Pipeline(load(good), tmp_path / "r").run(only="nope")
    with pytest.raises(UserError, match="stage .data. is not up to date"):
        Pipeline(load(good), tmp_path / "r").run(only="teacher")


def _cli(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "facedistill", "--config", str(config), "pipeline", *args]


@pytest.mark.slow
def test_a_killed_training_stage_resumes_mid_training(tiny_synth: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, tiny_synth, teacher_epochs=3)
    text = cfg.read_text().replace('arch = "snet3"\nwidth = 0.5', 'arch = "tnet"\nwidth = 0.25')
    cfg.write_text(text)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    Pipeline(load(cfg), out).run(only="data")
    proc = subprocess.Popen(_cli(cfg, "--out", str(out), "--only", "teacher",
                                 "--quiet"), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    metrics = out / "teacher" / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 1:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the teacher finished before it could be killed"
    state = json.loads((out / "pipeline.json").read_text())
    assert state["stages"]["teacher"]["status"] == "running"
    done_before = len(metrics.read_text().splitlines())
    assert 1 <= done_before < 3

    res = subprocess.run(_cli(cfg, "--out", str(out), "--only", "teacher"),
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "teacher: running (resuming)" in res.stderr
    epochs = [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()]
    assert epochs == [1, 2, 3]  # continued, not restarted
    state = json.loads((out / "pipeline.json").read_text())
    assert state["stages"]["teacher"]["status"] == "done"
    assert state["stages"]["teacher"]["resumed"] is True


@pytest.mark.parametrize("name", ["demo", "celeba"])
def test_shipped_configs_load_for_the_pipeline_and_every_command(name: str) -> None:
    from facedistill.config import load_default_map

    path = Path(__file__).parents[2] / "configs" / f"{name}.toml"
    cfg = load(path)
    assert cfg.pipeline.students == ("snet1", "snet2", "snet3")
    assert cfg.teacher_config().arch == "tnet" and cfg.teacher_config().width == 1.0
    assert cfg.precisions() == ["fp32", "fp16", "int8"]
    assert (cfg.synth is not None) is (name == "demo")
    default_map = load_default_map(cli, path)  # the same file drives the single commands
    assert default_map["compress"]["method"] == "selected"
    assert "pipeline" in default_map and "export" in default_map


def test_the_global_config_is_the_pipelines_config(tiny_synth: Path, tmp_path: Path) -> None:
    # `facedistill --config F pipeline` reads F's stage tables, not the demo's
    cfg = tiny_config(tmp_path, tiny_synth)
    cfg.write_text(cfg.read_text() + f'out = "{tmp_path / "run"}"\n')
    res = subprocess.run([sys.executable, "-m", "facedistill", "--config", str(cfg), "pipeline",
                          "--status", "--json"], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    stages = [r["stage"] for r in json.loads(res.stdout)]
    # the tiny config's plan: one student with its twin (the demo's has three, no twin of snet1)
    assert stages == ["data", "teacher", "select", "student:snet3", "twin:snet3",
                      "export:teacher", "export:snet3", "bench", "report"]
    bad = tmp_path / "bad.toml"
    bad.write_text(cfg.read_text().replace("[bench]", "[bnech]"))
    res = subprocess.run([sys.executable, "-m", "facedistill", "--config", str(bad), "pipeline",
                          "--status"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "did you mean [bench]?" in res.stderr and "bad.toml" in res.stderr


def test_a_new_generator_version_makes_the_synthetic_data_stale(tmp_path: Path) -> None:
    """Labels alone do not fingerprint generated data: a new generator draws other images
    with the same labels, so its manifest is part of the data stage's outputs."""
    data = tmp_path / "synth"
    cfg_path = tmp_path / "synth.toml"
    cfg_path.write_text(f'[data.synth]\nout = "{data}"\nn = 120\nsize = 32\nseed = 2\n\n'
                        '[pipeline]\nstudents = ["snet3"]\n')
    out = tmp_path / "run"
    assert Pipeline(load(cfg_path), out).run(only="data")["ran"] == ["data"]
    outputs = json.loads((out / "pipeline.json").read_text())["stages"]["data"]["outputs"]
    assert str(data / "synth.json") in outputs["files"]
    rows = {r["stage"]: r for r in Pipeline(load(cfg_path), out).status()}
    assert rows["data"]["valid"]

    manifest = json.loads((data / "synth.json").read_text())
    manifest["generator_version"] -= 1  # as if written by the previous generator
    (data / "synth.json").write_text(json.dumps(manifest))
    rows = {r["stage"]: r for r in Pipeline(load(cfg_path), out).status()}
    assert rows["data"] == {"stage": "data", "valid": False, "reason": "outputs changed"}
    # re-running regenerates with the current generator, and the old teacher cannot be reused
    assert Pipeline(load(cfg_path), out).run(only="data")["ran"] == ["data"]
    assert json.loads((data / "synth.json").read_text())["generator_version"] == \
        manifest["generator_version"] + 1


@pytest.mark.slow
def test_an_ensemble_of_teachers_runs_end_to_end(tiny_synth: Path, tmp_path: Path) -> None:
    # two teachers of different widths (and seeds), one student distilled from both
    cfg_path = tiny_config(tmp_path, tiny_synth)
    cfg_path.write_text(cfg_path.read_text().replace('twins = ["snet3"]',
                                                     "teacher_widths = [0.5, 0.25]"))
    out = tmp_path / "run"
    result = Pipeline(load(cfg_path), out).run()
    assert result["ran"][:4] == ["data", "teacher", "teacher:1", "select"]
    assert "export:teacher:1" in result["ran"]
    members = [load_checkpoint(out / run) for run in ("teacher", "teacher-1")]
    assert [m["config"]["seed"] for m in members] == [1, 2]
    assert [m["arch"]["width"] for m in members] == [0.5, 0.25]
    sel = json.loads((out / "selection" / "selection.json").read_text())
    assert sel["candidates"] == 2 * 1280 and len(sel["teachers"]) == 2
    compare = json.loads((out / "students" / "snet3" / "compare.json").read_text())
    assert [r["role"] for r in compare["rows"]] == ["student", "teacher 0", "teacher 1",
                                                   "ensemble (2)"]
    assert compare["rows"][1]["params"] > compare["rows"][2]["params"]  # the narrower one
    report = json.loads((out / "report.json").read_text())
    (row,) = report["ensembles"]
    assert row["ensemble"] == compare["rows"][-1]["mean_balanced"]
    assert row["ensemble_params"] == compare["rows"][1]["params"] + compare["rows"][2]["params"]
    # every member was exported and benchmarked: the ensemble's latency is theirs summed
    models = {m["model"]: m for m in report["models"]}
    assert list(models) == ["teacher", "teacher:1", "snet3"]
    for b in (1, 4):
        total = models["teacher"][f"fp32_ms_b{b}"] + models["teacher:1"][f"fp32_ms_b{b}"]
        assert row[f"ensemble_fp32_ms_b{b}"] == pytest.approx(total)
        assert row[f"speedup_b{b}"] == pytest.approx(total / models["snet3"][f"fp32_ms_b{b}"])
    md = (out / "report.md").read_text()
    assert "## Students against the teachers' ensemble" in md and "speed-up (b4)" in md
    assert sorted(p.name for p in (out / "export" / "teacher-1").glob("*.onnx")) == \
        ["snet3.fp32.onnx", "snet3.int8.onnx"]
    cfg_path.write_text(cfg_path.read_text().replace("teacher_widths",
                                                     "teachers = 3\nteacher_widths"))
    with pytest.raises(ConfigError, match="2 teacher widths but teachers = 3"):
        load(cfg_path)
    bad = tiny_config(tmp_path, tiny_synth)
    bad.write_text(bad.read_text().replace('twins = ["snet3"]', "teachers = 0"))
    with pytest.raises(ConfigError, match=r"pipeline\.teachers.*0 is not in the range x>=1"):
        load(bad)


def test_the_stage_tables_start_from_the_commands_defaults(tmp_path: Path) -> None:
    """One home for each default: with an empty config, the pipeline's teacher and students
    are TrainConfig()'s, its export and bench options those of the commands (flags false),
    but for the pipeline's one default: TensorRT engines where TensorRT is installed."""
    import importlib.util

    from facedistill.config import (
        BenchConfig,
        DistillConfig,
        ExportConfig,
        SelectConfig,
        TrainConfig,
        table_options,
    )

    path = tmp_path / "empty.toml"
    path.write_text(f'[pipeline]\ndata = "{tmp_path}"\n')
    cfg = load(path)
    assert cfg.teacher_config() == TrainConfig(arch="tnet")
    assert cfg.student_config("snet3") == TrainConfig(arch="snet3")
    assert table_options(cli, {}, "train")["deterministic"] is False
    has_trt = importlib.util.find_spec("tensorrt") is not None
    assert cfg.export == ExportConfig(trt=has_trt) and cfg.export.trt_profile == (1, 8, 32)
    assert cfg.bench == BenchConfig() and cfg.bench.batch == (1, 32)
    assert cfg.select == SelectConfig() and cfg.distill == DistillConfig()
    assert cfg.precisions() == ["fp32", "fp16", "int8"]


def test_the_pipeline_refuses_a_localization_teacher(tmp_path: Path) -> None:
    """FRL localizes: the pipeline distils classification models only, and says so."""
    from facedistill.errors import ConfigError

    path = tmp_path / "frl.toml"
    path.write_text(f'[train]\narch = "frl"\n[pipeline]\ndata = "{tmp_path}"\n')
    with pytest.raises(ConfigError) as err:
        load(path)
    assert err.value.field == "train.arch" and "train --arch frl" in err.value.message


def test_the_shipped_wild_config_plans_the_cascade() -> None:
    path = Path(__file__).parents[2] / "configs" / "wild.toml"
    cfg = load(path)
    assert cfg.pipeline.cascade and cfg.teacher_config().variant == "wild"
    pipe = Pipeline(cfg, Path("/nonexistent/run"))
    names = [s.name for s in pipe.stages]
    assert names.index("cascade") < names.index("export:cascade")
    assert names[names.index("frl"):names.index("cascade:small") + 1] == [
        "frl", "parts", "cascade", "parts:small", "cascade:small"]
    assert pipe.models[-2:] == ["cascade", "cascade-small"]
    parts = pipe.parts_config(small=True)
    assert parts.arch == "parts" and parts.part_boxes == "fixed" and parts.width == 0.25
    assert parts.frl == "/nonexistent/run/frl"


def test_the_cascade_needs_wild_crops(tiny_synth: Path, tmp_path: Path) -> None:
    path = tiny_config(tmp_path, tiny_synth)
    path.write_text(path.read_text().replace('twins = ["snet3"]', "cascade = true"))
    with pytest.raises(UserError, match='variant = "wild"'):
        Pipeline(load(path), tmp_path / "run")
    path.write_text(path.read_text().replace("cascade = true",
                                             'cascade = true\ncascade_whole = "snet1"'))
    with pytest.raises(ConfigError, match="must be one of the students"):
        load(path)


@pytest.mark.slow
def test_the_cascade_runs_through_the_pipeline(wild: Path, tmp_path: Path) -> None:
    """frl -> parts -> cascade and parts:small -> cascade:small, each exported and benched
    and in the report; a re-run skips everything."""
    path = tiny_config(tmp_path, wild, teacher_epochs=1)
    text = path.read_text().replace("[compress]", '[compress]\nvariant = "wild"')
    text = text.replace("seed = 1", 'seed = 1\nvariant = "wild"')
    text = text.replace('twins = ["snet3"]', "cascade = true\nfrl_width = 0.125\n"
                        "parts_width = 0.25\nsmall_parts_width = 0.125")
    path.write_text(text)
    out = tmp_path / "run"
    result = Pipeline(load(path), out).run()
    for stage in ("frl", "parts", "cascade", "parts:small", "cascade:small",
                  "export:cascade", "export:cascade-small"):
        assert stage in result["ran"]
    small = load_checkpoint(out / "cascade-small")
    assert small["arch"]["whole"]["arch"] == "snet3"
    assert small["arch"]["parts"]["width"] == 0.125 and small["arch"]["parts"]["fixed"]
    assert load_checkpoint(out / "students" / "parts-small")["extra"]["distill"]["method"] \
        == "selected"
    report = json.loads((out / "report.json").read_text())
    models = {m["model"]: m for m in report["models"]}
    assert models["cascade"]["params"] > models["cascade-small"]["params"]
    assert models["cascade-small"]["fp32_ms_b4"] is not None  # benched
    rows = {c["name"]: c for c in report["cascades"]}
    record = json.loads((out / "cascade" / "cascade.json").read_text())
    assert rows["cascade"]["cascade"] == record["mean_balanced"]["cascade"] \
        == models["cascade"]["mean_balanced"]
    assert "## The cascade for unaligned faces" in (out / "report.md").read_text()
    again = Pipeline(load(path), out).run()
    assert again["ran"] == []
