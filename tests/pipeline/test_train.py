"""The Trainer: schedule, checkpoints (weights_only), resume, EMA, errors, torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from facedistill import metrics
from facedistill.attributes import ATTRIBUTES
from facedistill.config import TrainConfig
from facedistill.errors import ConfigError, UserError
from facedistill.nn.checkpoint import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
)
from facedistill.pipeline.data.dataset import CelebA
from facedistill.pipeline.data.transforms import Transform
from facedistill.pipeline.infer import collect
from facedistill.pipeline.train import lr_factor, train
from facedistill.runtime.preprocess import Preprocess

# small and fast: SNet3 at a quarter width on 32x32 inputs
TINY = {"arch": "snet3", "width": 0.25, "size": 32, "batch_size": 32, "workers": 0,
        "lr": 3e-3, "warmup": 0.5}


def tiny_cfg(**kw: object) -> TrainConfig:
    return TrainConfig(**{**TINY, **kw})  # type: ignore[arg-type]


def cli_args(data: Path, out: Path, epochs: int, *extra: str) -> list[str]:
    return ["train", "--arch", "snet3", "--width", "0.25", "--size", "32", "--batch-size", "32",
            "--workers", "0", "--lr", "3e-3", "--warmup-epochs", "0.5", "--epochs", str(epochs),
            "--data", str(data), "--out", str(out), "--quiet", *extra]


def test_lr_schedule_warms_up_then_follows_a_cosine() -> None:
    total, warm, floor = 100, 10, 0.01
    f = [lr_factor(s, total, warm, floor) for s in range(total + 1)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0)
    assert f[55] == pytest.approx(floor + (1 - floor) * 0.5)  # half way down the cosine
    assert f[100] == pytest.approx(floor)
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))
    assert lr_factor(0, 10, 0, 0.0) == pytest.approx(1.0)  # no warm-up


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="optimizer"):
        TrainConfig(optimizer="adam")
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="ema"):
        TrainConfig(ema=1.0)


@pytest.fixture(scope="module")
def tiny_run(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "snet3"
    train(tiny_cfg(epochs=2, ema=0.9), tiny_synth, out)
    return out


def test_run_writes_checkpoints_metrics_and_summary(tiny_run: Path) -> None:
    lines = (tiny_run / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        assert np.isfinite(r["train_loss"]) and 0.5 <= r["val_mean_balanced"] <= 1.0
    assert records[-1]["lr"] == pytest.approx(3e-3 * 0.01)  # cosine ends at min_lr
    summary = json.loads((tiny_run / "run.json").read_text())
    assert summary["epochs"] == 2 and summary["arch"]["arch"] == "snet3"
    assert summary["best_epoch"] in (1, 2)


def test_checkpoint_loads_with_weights_only_and_carries_everything(tiny_run: Path,
                                                                    tiny_synth: Path) -> None:
    raw = torch.load(tiny_run / "best.pt", weights_only=True)  # plain data only, no code
    assert raw["format"] == "facedistill.checkpoint/v1" and raw["kind"] == "best"
    assert raw["arch"] == {"arch": "snet3", "width": 0.25, "num_attrs": 40}
    assert raw["attributes"] == list(ATTRIBUTES)
    assert len(raw["thresholds"]) == 40 and raw["threshold_split"] == "val"
    assert raw["preprocess"]["size"] == [32, 32] or tuple(raw["preprocess"]["size"]) == (32, 32)
    assert raw["transform"]["augment"] is not None
    assert raw["config"]["seed"] == 0 and raw["seed"] == 0 and raw["version"]
    assert raw["data"]["root"] == str(tiny_synth.resolve())
    assert len(raw["data"]["attributes_sha256"]) == 64
    assert "resume" not in raw  # the deploy artifact stays lean
    last = torch.load(tiny_run / "last.pt", weights_only=True)
    assert last["kind"] == "last" and {"optimizer", "scheduler", "ema"} <= set(last["resume"])


def test_stored_thresholds_are_the_val_search_of_the_stored_weights(tiny_run: Path,
                                                                     tiny_synth: Path) -> None:
    ckpt = load_checkpoint(tiny_run)
    model = model_from_checkpoint(ckpt)
    pre = Preprocess.from_record(ckpt["preprocess"])
    val = CelebA(tiny_synth, "val", transform=Transform(pre))
    out = collect(model, val, batch_size=64)
    search = metrics.search_thresholds(out.logits, out.labels)
    np.testing.assert_allclose(search.thresholds, ckpt["thresholds"], rtol=1e-4, atol=1e-4)
    assert float(np.mean(search.balanced)) == pytest.approx(
        ckpt["metrics"]["val_mean_balanced"], abs=1e-3)
    # each attribute's val balanced accuracy travels with the thresholds (for the runtime's
    # reliability floor), not in the epoch metrics
    np.testing.assert_allclose(ckpt["val_balanced"], search.balanced, atol=1e-3)
    assert "val_balanced" not in ckpt["metrics"]
    history = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert all("val_balanced" not in r and "thresholds" not in r for r in history)


def test_ema_weights_are_the_deployed_ones(tiny_run: Path) -> None:
    last = torch.load(tiny_run / "last.pt", weights_only=True)
    deployed, raw = last["model"], last["resume"]["model"]
    ema = {k.removeprefix("module."): v for k, v in last["resume"]["ema"].items()
           if k.startswith("module.")}
    assert all(torch.equal(deployed[k], ema[k].float()) for k in deployed)
    assert any(not torch.equal(deployed[k], raw[k]) for k in deployed if "weight" in k)


def test_existing_run_is_not_overwritten(tiny_run: Path, tiny_synth: Path) -> None:
    before = (tiny_run / "best.pt").read_bytes()
    with pytest.raises(UserError, match="--resume"):
        train(tiny_cfg(epochs=2), tiny_synth, tiny_run)
    with pytest.raises(UserError, match="epochs 2 -> 3"):
        train(tiny_cfg(epochs=3, ema=0.9), tiny_synth, tiny_run, resume=True)
    assert (tiny_run / "best.pt").read_bytes() == before


def test_resume_without_a_run_starts_one_and_too_small_inputs(tiny_synth: Path,
                                                             tmp_path: Path) -> None:
    result = train(tiny_cfg(epochs=1), tiny_synth, tmp_path / "new", resume=True)
    assert result.summary["epochs"] == 1
    again = train(tiny_cfg(epochs=1), tiny_synth, tmp_path / "new", resume=True)  # done: no-op
    assert again.history == result.history
    with pytest.raises(UserError, match="at least 32x32"):
        train(tiny_cfg(arch="tnet", size=16), tiny_synth, tmp_path / "small")


def test_bad_checkpoints_are_refused(tmp_path: Path, tiny_run: Path) -> None:
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((tiny_run / "best.pt").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_checkpoint(truncated)

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "facedistill.checkpoint/v1", "x": Evil()}, evil)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(evil)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="not a facedistill checkpoint"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="no best.pt or last.pt"):
        load_checkpoint(tmp_path)


def _final(out: Path) -> tuple[dict[str, torch.Tensor], str]:
    last = torch.load(out / "last.pt", weights_only=True)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    strip = ("train_seconds", "train_images_per_s")
    final = {k: v for k, v in json.loads(lines[-1]).items() if k not in strip}
    return last["model"], json.dumps(final, sort_keys=True)


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_weights(tiny_synth: Path, tmp_path: Path) -> None:
    epochs = 3
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    run = [sys.executable, "-m", "facedistill"]
    subprocess.run([*run, *cli_args(tiny_synth, whole, epochs, "--deterministic")], check=True,
                   timeout=300)

    proc = subprocess.Popen([*run, *cli_args(tiny_synth, broken, epochs, "--deterministic")])
    metrics_file = broken / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not (metrics_file.exists() and metrics_file.read_text().count("\n") >= 1):
        assert proc.poll() is None and time.monotonic() < deadline, "run ended before epoch 1"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = torch.load(broken / "last.pt", weights_only=True)["epoch"]
    assert done < epochs, "the run finished before it could be killed"

    subprocess.run([*run, *cli_args(tiny_synth, broken, epochs, "--deterministic", "--resume")],
                   check=True, timeout=300)
    w1, m1 = _final(whole)
    w2, m2 = _final(broken)
    assert m1 == m2
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)
    lines = (broken / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tiny_synth: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "facedistill", *cli_args(tiny_synth, out, 1, "--device", "cpu", "--json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])  # only rank 0 prints
    assert summary["world_size"] == 2 and summary["epochs"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "last.pt", "metrics.jsonl",
                                                     "run.json"]
    ckpt = load_checkpoint(out)
    assert ckpt["world_size"] == 2 and len(ckpt["thresholds"]) == 40
    record = json.loads((out / "metrics.jsonl").read_text())
    # each rank saw half of the batches of one process
    train_images = ckpt["data"]["splits"]["train"]
    assert record["step"] == (train_images // 2) // 32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_amp_on_cuda(tiny_synth: Path, tmp_path: Path, precision: str) -> None:
    result = train(tiny_cfg(epochs=1, device="cuda", precision=precision), tiny_synth,
                   tmp_path / precision)
    assert result.summary["precision"] == precision and result.summary["device"] == "cuda"
    ckpt = load_checkpoint(tmp_path / precision)
    assert all(v.device.type == "cpu" for v in ckpt["model"].values())
    assert np.isfinite(result.last["train_loss"])


def test_positive_weights_follow_the_training_prevalence() -> None:
    from facedistill.pipeline.train import LabelObjective, positive_weights

    y = np.zeros((1000, 5), np.int8)
    y[:200, 0] = 1  # p = 0.2
    y[:500, 1] = 1  # p = 0.5
    y[:, 3] = 1  # only positives
    y[:1, 4] = 1  # p = 0.001: capped
    assert positive_weights(y, "none") is None
    np.testing.assert_allclose(positive_weights(y, "balanced").numpy(), [4, 1, 1, 1, 50])
    np.testing.assert_allclose(positive_weights(y, "sqrt").numpy(),
                               [2, 1, 1, 1, np.sqrt(999)], rtol=1e-6)
    logits = torch.tensor([[0.3, -1.0, 2.0, 0.0, 1.0]])
    labels = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0]])
    w = positive_weights(y, "balanced")
    loss, _ = LabelObjective(w)(logits, logits, labels, logits)
    p = torch.sigmoid(logits)
    want = -(w * labels * torch.log(p) + (1 - labels) * torch.log(1 - p)).mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)


def test_auto_precision_takes_bf16_on_a_cpu_only_with_amx(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """AVX512-BF16 alone does not make bf16 autocast faster (cpu_precision benchmark), so only
    AMX turns it on; explicit choices pass through, fp16 stays a CUDA-only choice."""
    from facedistill.pipeline import train as train_mod

    cpu = torch.device("cpu")
    for amx, avx512_bf16, want in ((True, True, "bf16"), (False, True, "fp32"),
                                   (False, False, "fp32")):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v,
                            raising=False)
        assert train_mod.cpu_has_bf16() is (amx or avx512_bf16)
        assert train_mod.resolve_precision("auto", cpu) == want
        assert train_mod.resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(UserError, match="fp16 training needs a CUDA device"):
        train_mod.resolve_precision("fp16", cpu)


def test_channels_last_is_on_unless_turned_off(tiny_synth: Path, tmp_path: Path) -> None:
    for layout, want in (("auto", True), ("off", False)):
        result = train(tiny_cfg(epochs=1, channels_last=layout, precision="fp32"), tiny_synth,
                       tmp_path / layout)
        assert result.summary["channels_last"] is want


def test_force_parks_the_old_run_and_puts_it_back_if_the_new_one_fails(tmp_path: Path) -> None:
    from facedistill.pipeline.train import PREVIOUS, RUN_FILES, _replacing, prepare_run

    out = tmp_path / "run"
    out.mkdir()
    old = {name: f"old {name}".encode() for name in RUN_FILES}
    for name, data in old.items():
        (out / name).write_bytes(data)
    assert prepare_run(out, resume=False, force=True) == (False, True)
    with pytest.raises(RuntimeError, match="disk full"), _replacing(out, True):
        assert not any((out / n).exists() for n in RUN_FILES)  # parked while it trains
        (out / "metrics.jsonl").write_text("half an epoch")  # the new run's partial output
        raise RuntimeError("disk full")
    assert {n: (out / n).read_bytes() for n in RUN_FILES} == old
    assert not (out / PREVIOUS).exists()
    with _replacing(out, True):  # a new run that finishes replaces the old one
        (out / "best.pt").write_bytes(b"new")
    assert (out / "best.pt").read_bytes() == b"new" and not (out / "last.pt").exists()
    assert not (out / PREVIOUS).exists()
