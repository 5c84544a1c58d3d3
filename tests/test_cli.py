"""The command line, run as a real process: verbs, config files, one-line errors, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from facedistill import __version__
from facedistill.cli import _VERBS


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "facedistill", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def test_help_lists_every_verb_and_version() -> None:
    proc = run("--help")
    assert proc.returncode == 0
    for verb in _VERBS:
        assert f"  {verb} " in proc.stdout
    # one module per verb, and every module in commands/ is a registered verb
    modules = {p.stem for p in (Path(__file__).parents[1] / "facedistill" / "commands").glob("*.py")}
    assert set(_VERBS) == modules - {"__init__"}
    assert {"data", "train", "select", "compress", "export", "bench", "predict",
            "pipeline"} <= set(_VERBS)
    version = run("--version")
    assert version.returncode == 0 and __version__ in version.stdout


def test_bad_options_are_one_line_errors(tmp_path: Path) -> None:
    assert_one_line_error(run("data", "synth", "--bogus"), "--bogus", "data synth --help")
    assert_one_line_error(run("data", "synth", "--n", "many"), "'--n'", "many")
    assert_one_line_error(run("data", "synth", "--out", str(tmp_path / "d"), "--n", "2"),
                          "field '--n'", "at least 3")
    assert not (tmp_path / "d").exists()
    assert_one_line_error(run("data", "check", str(tmp_path / "missing")), "missing")
    assert_one_line_error(run("pipeline", "--teacher-widths", "1,wide", "--status",
                              "--out", str(tmp_path / "run")), "'--teacher-widths'", "1,wide")
    assert_one_line_error(run("pipeline", "--teacher-widths", "1,0.5", "--teachers", "3",
                              "--status", "--out", str(tmp_path / "run")),
                          "'--teacher-widths'", "2 teacher widths but teachers = 3")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    proc = run("--debug", "data", "synth", "--out", str(tmp_path / "d"), "--n", "2")
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ConfigError" in proc.stderr


def test_config_file_sets_defaults_and_cli_overrides(tmp_path: Path) -> None:
    config = tmp_path / "demo.toml"
    config.write_text(
        f'[data.synth]\nout = "{tmp_path / "ds"}"\nn = 12\nsize = 16\nseed = 1\n'
        f'workers = 1\n\n[data.check]\nroot = "{tmp_path / "ds"}"\n'
    )
    proc = run("--config", str(config), "data", "synth", "--seed", "5", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["config"] == {"n": 12, "size": 16, "seed": 5, "wild": False,
                                "images_per_identity": 5.0}
    assert result["reused"] is False and result["images"] == 12
    again = json.loads(run("--config", str(config), "data", "synth", "--seed", "5",
                           "--json").stdout)
    assert again["reused"] is True
    assert_one_line_error(run("--config", str(config), "data", "synth"), "--force")

    check = run("--config", str(config), "data", "check", "--json")  # root from the config
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout)["images"] == 12


@pytest.mark.parametrize(
    "text, needles",
    [
        ("[data.synth]\nsizee = 3\n", ["field 'data.synth.sizee'", "unknown option"]),
        ("[data.synth]\nsize = 'big'\n", ["field 'data.synth.size'", "big"]),
        ("[data.synthh]\nn = 3\n", ["[data.synthh]"]),
        ("[data.synth\nn = 3\n", ["invalid TOML", "line 1"]),
    ],
)
def test_bad_config_files_name_file_and_key(tmp_path: Path, text: str,
                                            needles: list[str]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    assert_one_line_error(run("--config", str(config), "data", "synth", "--n", "3"),
                          str(config), *needles)
    assert_one_line_error(run("--config", str(tmp_path / "nope.toml"), "data", "synth"),
                          "nope.toml", "not found")


def test_synth_prints_a_summary(tmp_path: Path) -> None:
    proc = run("data", "synth", "--out", str(tmp_path / "ds"), "--n", "30", "--size", "16",
               "--workers", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "30 images" in proc.stdout
    for split in ("train", "val", "test"):
        assert split in proc.stdout


def test_models_lists_exact_counts() -> None:
    proc = run("models", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["arch"]: r for r in json.loads(proc.stdout)}
    assert {k: v["params"] for k, v in rows.items()} == {
        "tnet": 13_764_616, "snet1": 7_521_608, "snet2": 2_278_728, "snet3": 315_320,
        "frl": 14_441_008,  # the localization net: TNet's trunk, two branches
        "parts": 2_817_696,  # 7 SNet3-shaped part subnets + the frozen FRL (width 0.25)
        "cascade": 315_320 + 1_899_800 + 40 * 41}  # SNet3 + fixed-box parts + relations
    assert rows["snet3"]["params_no_head"] == 264_080
    assert rows["frl"]["params_no_head"] == 13_713_376  # TNet's trunk: both branch FCs out
    table = run("models", "--size", "32")
    assert table.returncode == 0 and "13,764,616" in table.stdout and "0.27M" in table.stdout
    assert_one_line_error(run("models", "--width", "0"), "field 'width'")


def test_train_then_eval_on_a_tiny_dataset(tiny_synth: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["--arch", "snet3", "--width", "0.25", "--size", "32", "--batch-size", "32",
            "--workers", "0", "--epochs", "1", "--data", str(tiny_synth), "--out", str(out)]
    proc = run("train", *args, "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["epochs"] == 1 and summary["params"] > 0
    again = run("train", *args)
    assert_one_line_error(again, "already holds a run", "--resume")
    # --force validates before it replaces: a bad --data leaves the old run byte-identical
    before = {f.name: f.read_bytes() for f in out.iterdir() if f.is_file()}
    bad = [a if a != str(tiny_synth) else str(tmp_path / "nope") for a in args]
    assert_one_line_error(run("train", *bad, "--force"), "nope")
    assert {f.name: f.read_bytes() for f in out.iterdir() if f.is_file()} == before
    assert not (out / ".previous-run").exists()

    proc = run("eval", str(out), "--json", "--split", "test")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["split"] == "test" and report["thresholds_from"] == "val"
    assert len(report["attributes"]) == 40 and 0.0 <= report["mean_balanced"] <= 1.0
    stored = run("eval", str(out / "best.pt"), "--thresholds", "checkpoint", "--json")
    stored_report = json.loads(stored.stdout)
    assert stored_report["thresholds_from"] == "checkpoint"
    # thresholds are shown on the probability, as predict and the exported model show them;
    # the checkpoint keeps its logits
    import torch

    logits = torch.load(out / "best.pt", weights_only=True)["thresholds"]
    assert stored_report["threshold_unit"] == "probability"
    assert stored_report["plain_threshold"] == 0.5
    assert [a["threshold"] for a in stored_report["attributes"]] == pytest.approx(
        torch.sigmoid(torch.tensor(logits, dtype=torch.float64)).tolist(), abs=1e-12)
    table = run("eval", str(out))
    assert table.returncode == 0 and "Wavy_Hair" in table.stdout and "mean" in table.stdout
    assert "on the probability" in table.stdout


def test_train_and_eval_bad_input_is_one_line(tmp_path: Path) -> None:
    assert_one_line_error(run("train", "--data", str(tmp_path / "nope"), "--out",
                              str(tmp_path / "r")), "nope")
    assert not (tmp_path / "r").exists()
    assert_one_line_error(run("eval", str(tmp_path / "missing.pt")), "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert_one_line_error(run("eval", str(junk)), "junk.pt", "corrupt")
    assert_one_line_error(run("eval", str(junk), "--batch-size", "0"), "'--batch-size'", "0")
    assert_one_line_error(run("select", "--teacher", str(junk), "--batch-size", "0"),
                          "'--batch-size'")
    assert_one_line_error(run("train", "--epochs", "0"), "field '--epochs'", "> 0")
    assert_one_line_error(run("train", "--warmup-epochs", "-1"), "field '--warmup-epochs'",
                          ">= 0")


def test_a_corrupt_image_read_in_a_worker_process_is_one_line(tiny_synth: Path,
                                                             tmp_path: Path) -> None:
    """torch re-raises a DataLoader worker's error with the worker's whole traceback as its
    message; the user gets the original line, naming the image."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_synth, data)
    first = sorted((data / "img_align_celeba").iterdir())[0]  # a train image
    first.write_bytes(first.read_bytes()[:60])  # truncated JPEG
    out = tmp_path / "run"
    line = assert_one_line_error(
        run("train", "--arch", "snet3", "--width", "0.25", "--size", "32", "--batch-size",
            "32", "--workers", "1", "--epochs", "1", "--data", str(data), "--out", str(out)),
        first.name)
    assert "Caught" not in line and "worker" not in line


@pytest.mark.parametrize(
    "table, key, needle",
    [
        ({"train": {"data": 5}}, "train.data", "expected a string, got an integer"),
        ({"train": {"lr": [1, 2]}}, "train.lr", "expected a number, got a list"),
        ({"train": {"out": {}}}, "train.out", "expected a string, got a table"),
        ({"compress": {"teacher": 5}}, "compress.teacher", "expected a string, got an integer"),
        ({"train": {"epochs": 1.5}}, "train.epochs", "expected an integer, got a float"),
        ({"train": {"epochs": True}}, "train.epochs", "expected an integer, got a boolean"),
        ({"train": {"deterministic": 1}}, "train.deterministic", "expected a boolean"),
        ({"bench": {"batch": [1, 32]}}, "bench.batch", "expected a string, got a list"),
    ],
)
def test_config_values_must_have_the_options_toml_type(tmp_path: Path, table: dict, key: str,
                                                       needle: str) -> None:
    """TOML is typed: 1.5 or true is no epoch count, 5 no path (click alone would coerce)."""
    from facedistill.cli import cli
    from facedistill.config import to_default_map
    from facedistill.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        to_default_map(cli, table, tmp_path / "c.toml")
    line = err.value.format()
    assert "\n" not in line and str(tmp_path / "c.toml") in line
    assert f"field '{key}'" in line and needle in line


def test_config_values_of_the_right_type_pass(tmp_path: Path) -> None:
    from facedistill.cli import cli
    from facedistill.config import to_default_map

    table = {"train": {"lr": 1, "epochs": 2, "deterministic": True, "data": "d"},
             "compress": {"teacher": "runs/t", "weight": ["selected=0.3"]},
             "bench": {"batch": "1,32", "json": True, "md": "b.md"}}
    got = to_default_map(cli, table, tmp_path / "c.toml")
    # keyed by click's parameter names (what default_map wants), converted by the option's type
    assert got["train"]["lr"] == 1 and got["compress"]["teacher"] == (Path("runs/t"),)
    assert got["compress"]["weight"] == ("selected=0.3",) and got["train"]["data"] == Path("d")
    assert got["bench"]["json"] is True and got["bench"]["md"] == Path("b.md")
    assert got["bench"]["batch"] == (1, 32)


def _leaves(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    out: dict[str, click.Command] = {}
    for name, sub in group.commands.items():
        out |= _leaves(sub, f"{prefix}{name}.") if isinstance(sub, click.Group) \
            else {prefix + name: sub}
    return out


def test_toml_keys_are_the_option_names_for_every_command(tmp_path: Path) -> None:
    """Each command's table takes exactly its options' long names (``--calib-n`` ->
    ``calib_n``, ``--json`` -> ``json``, ``--from`` -> ``from``) and its arguments' names, and
    every key lands on its own parameter; a parameter's Python name is not a key."""
    from facedistill.cli import cli
    from facedistill.config import to_default_map, toml_keys
    from facedistill.errors import ConfigError

    commands = _leaves(cli)
    assert len(commands) == 12
    for dotted, command in commands.items():
        expected = set()
        for p in command.params:
            if isinstance(p, click.Option) and p.name != "help":
                expected.add(next(o for o in p.opts if o.startswith("--"))[2:].replace("-", "_"))
            elif isinstance(p, click.Argument):
                expected.add(p.name)
        keys = toml_keys(command)
        assert set(keys) == expected, dotted
        assert len({p.name for p in keys.values()}) == len(keys), dotted  # one key per param
    export = toml_keys(commands["export"])
    assert export["trt_profile"].name == "trt_profile" and export["split"].name == "split"
    assert export["json"].name == "json"
    assert toml_keys(commands["pipeline"])["from"].name == "start"
    assert toml_keys(commands["train"])["warmup_epochs"].name == "warmup"
    for table, key, near in [({"bench": {"as_json": True}}, "bench.as_json", "json"),
                             ({"bench": {"md_out": "x"}}, "bench.md_out", "md"),
                             ({"export": {"batches": "1,8"}}, "export.batches", "batch"),
                             ({"pipeline": {"show_status": True}}, "pipeline.show_status",
                              "status")]:
        with pytest.raises(ConfigError) as err:
            to_default_map(cli, table, tmp_path / "c.toml")
        assert err.value.field == key and "unknown option" in err.value.message, key
        assert near in err.value.message


def test_every_option_is_a_config_field() -> None:
    """Every command is made from typed, frozen config classes (issue 20): its CLI options, its
    TOML keys and its config fields are one set, each field's default is the option's, and a
    command's classes build from the defaults alone."""
    import dataclasses

    from facedistill.cli import cli
    from facedistill.config import build, configs_of, key_name, option_key, toml_keys

    for dotted, command in _leaves(cli).items():
        classes = configs_of(command)
        assert classes, dotted
        fields = {key_name(f): f for cls in classes for f in dataclasses.fields(cls)}
        options = {option_key(p) for p in command.params if p.name != "help"}
        assert set(fields) == options == set(toml_keys(command)), dotted
        for cls in classes:
            assert cls.__dataclass_params__.frozen, cls  # type: ignore[attr-defined]
        by_name = {p.name: p for p in command.params}
        for key, f in fields.items():
            param = by_name[f.name]
            if f.default is dataclasses.MISSING:
                assert param.required, (dotted, key)
                continue
            default = param.get_default(click.Context(command), call=True)
            default = param.type_cast_value(click.Context(command), default)
            want = f.default
            assert default == want or (isinstance(want, bool) and default is want) or \
                (default == () and want == ()), (dotted, key, default, want)
        if not any(f.default is dataclasses.MISSING for cls in classes
                   for f in dataclasses.fields(cls)):
            for cls in classes:
                assert build(cls, {}) == cls(), (dotted, cls)


def test_one_name_one_meaning_across_the_verbs() -> None:
    """An option name means the same thing in every verb that has it (issue 20): --batch is a
    list of batch sizes (bench), --warmup a number of runs (bench), --precision a list of
    export formats; training's are --warmup-epochs and --train-precision, the TensorRT profile
    is --trt-profile, --json always a flag that prints JSON."""
    from facedistill.cli import cli

    commands = _leaves(cli)

    def verbs_with(opt: str) -> set[str]:
        return {name for name, cmd in commands.items() if any(opt in getattr(p, "opts", ())
                                                              for p in cmd.params)}

    assert verbs_with("--batch") == {"bench"} and verbs_with("--warmup") == {"bench"}
    assert verbs_with("--precision") == {"export"}
    assert verbs_with("--warmup-epochs") == verbs_with("--train-precision") == {"train",
                                                                                "compress"}
    json_opts = [p for cmd in commands.values() for p in cmd.params if "--json" in p.opts]
    assert len(json_opts) == len(commands) and all(p.is_flag for p in json_opts)


@pytest.mark.parametrize("text, key, needle", [
    ("[train]\nepochs = 0\n", "train.epochs", "must be > 0"),
    ("[compress]\nema = 1.5\n", "compress.ema", "EMA decay must be in [0, 1)"),
    ("[data.synth]\nn = 2\n", "data.synth.n", "at least 3"),
    ("[train]\nwarmup_epochs = -1.0\n", "train.warmup_epochs", "warmup"),
])
def test_values_the_configs_reject_name_the_file(tmp_path: Path, text: str, key: str,
                                                 needle: str) -> None:
    """Checked when the file is read, so the error names it (not the command line)."""
    from facedistill.cli import cli
    from facedistill.config import load_default_map
    from facedistill.errors import ConfigError

    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_default_map(cli, path)
    line = err.value.format()
    assert line.startswith(f"{path}: field '{key}'") and needle in line


def test_the_export_precisions_are_the_runtimes() -> None:
    """config keeps its own copy of the tuple (it sits below the runtime in the layer map)."""
    from facedistill.config import EXPORT_PRECISIONS
    from facedistill.runtime.metadata import PRECISIONS

    assert EXPORT_PRECISIONS == PRECISIONS


def test_predict_runs_the_runtime_as_a_face_app_would() -> None:
    """`predict`'s run options are the Predictor's defaults: the verb runs the model the way
    the runtime ships it (its keyword API is the face apps', so it keeps its own signature)."""
    import inspect

    from facedistill.commands.predict import PredictConfig
    from facedistill.runtime import Predictor

    params = inspect.signature(Predictor).parameters
    for name in ("backend", "device", "threads", "batch_size", "spin"):
        assert params[name].default == PredictConfig.__dataclass_fields__[name].default, name


def test_the_config_archs_are_the_registrys() -> None:
    """config keeps the model names (it sits below nn in the layer map and cannot ask it)."""
    from facedistill.config import ARCHS
    from facedistill.config.train import TRAIN_ARCHS
    from facedistill.nn.models import list_models

    # the cascade is put together from trained runs (facedistill cascade), not trained
    assert sorted([*TRAIN_ARCHS, "cascade"]) == list_models() and ARCHS[0] == "tnet"
    # FRL localizes and the part subnets need one: neither is a classification teacher/student
    assert set(ARCHS) == set(TRAIN_ARCHS) - {"frl", "parts"}


def test_the_config_choices_are_the_librarys() -> None:
    """A config's choices (Literal fields) repeat vocabularies of layers above config; one
    check that they agree, so a new solver, kernel, method or calibration is added in both."""
    import typing

    from facedistill.config import DistillConfig, ExportConfig, SelectConfig
    from facedistill.export.quantize import CALIBRATION_METHODS
    from facedistill.metrics import Polarity
    from facedistill.pipeline.distill import METHODS
    from facedistill.selection.solver import Redundancy, Solver

    def choices(cls: type, name: str) -> set[str]:
        return set(typing.get_args(typing.get_type_hints(cls)[name]))

    assert choices(SelectConfig, "solver") == set(typing.get_args(Solver))
    assert choices(SelectConfig, "redundancy") == set(typing.get_args(Redundancy))
    assert choices(SelectConfig, "polarity") == set(typing.get_args(Polarity))
    assert choices(DistillConfig, "method") == set(METHODS)
    assert choices(ExportConfig, "calib_method") == set(CALIBRATION_METHODS)
    from facedistill.config import TrainConfig
    from facedistill.nn.regions import MAP_RULES
    from facedistill.runtime.preprocess import FRAMES

    assert choices(TrainConfig, "box_rule") == set(MAP_RULES)
    assert choices(TrainConfig, "frame") == set(FRAMES)
