"""Jetson detection, release, power mode, clocks and power rails, on fixture file trees."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from facedistill.bench import jetson as J
from facedistill.bench.environment import cpu_has_bf16, cpu_model, cuda_version, environment

from .jetson_fixtures import (
    TEGRA_RELEASE_R35,
    TEGRA_RELEASE_R36,
    TEGRASTATS_JP4,
    TEGRASTATS_JP6,
    add_rails,
    make_jetson,
    script,
    write,
)


def test_tegra_release_lines_parse() -> None:
    r36 = J.parse_tegra_release(TEGRA_RELEASE_R36)
    assert r36 == {"l4t": "36.3.0", "major": 36, "revision": "3.0", "board": "generic",
                   "gcid": "36191598"}
    r35 = J.parse_tegra_release(TEGRA_RELEASE_R35)
    assert r35 is not None and r35["l4t"] == "35.4.1" and r35["board"] == "t186ref"
    assert J.parse_tegra_release("Ubuntu 22.04") is None
    assert J.jetpack_for_l4t("36.3.0") == "6.0"
    assert J.jetpack_for_l4t("36.4.3") == "6.2"
    assert J.jetpack_for_l4t("35.4.1") == "5.1.2"
    assert J.jetpack_for_l4t("36.9.9") == "6.x"  # unknown release: its major line, no guess
    assert J.jetpack_for_l4t("99.0.0") is None


def test_detection_by_release_file_model_or_compatible(tmp_path: Path) -> None:
    pc = tmp_path / "pc"
    write(pc, "proc/cpuinfo", "processor\t: 0\nmodel name\t: AMD Ryzen 9 7950X\n")
    yes, why = J.is_jetson(pc)
    assert not yes and "not a Jetson" in why
    record, why = J.jetson_record(pc)
    assert record is None and "no /etc/nv_tegra_release" in why

    by_model = tmp_path / "model"
    write(by_model, "proc/device-tree/model", b"NVIDIA Jetson AGX Orin Developer Kit\0")
    assert J.is_jetson(by_model) == (True, "device-tree model 'NVIDIA Jetson AGX Orin "
                                           "Developer Kit'")
    by_compat = tmp_path / "compat"
    write(by_compat, "proc/device-tree/compatible", b"acme,board\0nvidia,tegra194\0")
    assert J.is_jetson(by_compat)[0]
    record, _ = J.jetson_record(by_compat, query_tools=False)
    assert record is not None and record["soc"] == "tegra194" and record["l4t"] is None
    assert "etc/nv_tegra_release missing" in record["reasons"]["l4t"]


def test_full_record_of_an_orin_nano(tmp_path: Path) -> None:
    root = make_jetson(tmp_path)
    record, why = J.jetson_record(root)
    assert why is None and record is not None
    assert record["model"] == "NVIDIA Jetson Orin Nano Developer Kit"
    assert record["soc"] == "tegra234"
    assert record["l4t"] == "36.3.0" and record["jetpack"] == "6.0"  # from nvidia-jetpack 6.0+b106
    assert record["power_mode"] == {"id": 0, "name": "15W"}
    assert record["power_mode_source"] == "nvpmodel -q"
    assert record["clocks_locked"] is True
    assert record["power_source"] == "sysfs"
    assert record["power_rails"] == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]
    assert record["reasons"] == {}


def test_power_mode_falls_back_to_the_status_file(tmp_path: Path) -> None:
    root = make_jetson(tmp_path, nvpmodel=False)
    assert J.power_mode(root) == ({"id": 1, "name": None}, "var/lib/nvpmodel/status")
    script(root, "usr/bin/nvpmodel", "echo 'NVPM ERROR: failed to read PARAM'; exit 1\n")
    mode, src = J.power_mode(root)
    assert mode == {"id": 1, "name": None} and src == "var/lib/nvpmodel/status"
    (root / "var/lib/nvpmodel/status").unlink()
    mode, why = J.power_mode(root)
    assert mode is None and "printed no power mode (exit 1)" in why


@pytest.mark.parametrize("text, expected", [
    ("NV Power Mode: MAXN\n0\n", {"id": 0, "name": "MAXN"}),
    ("NVPM WARN: fan mode is not set!\nNV Power Mode: 7W\n3\n", {"id": 3, "name": "7W"}),
    ("NV Power Mode: MODE_30W_ALL\n", {"id": None, "name": "MODE_30W_ALL"}),
    ("nothing useful\n", None),
])
def test_nvpmodel_output_parses(text: str, expected: dict | None) -> None:
    assert J.parse_nvpmodel(text) == expected


def test_clock_lock_detection(tmp_path: Path) -> None:
    unlocked = make_jetson(tmp_path / "a", locked=False)
    state, why = J.clock_state(unlocked)
    assert why is None and state is not None
    assert state["locked"] is False and state["cpu_locked"] is False
    assert [g["domain"] for g in state["gpu"]] == ["17000000.gpu"]  # the VIC is not the GPU
    locked, _ = J.clock_state(make_jetson(tmp_path / "b", locked=True))
    assert locked is not None and locked["locked"] is True
    state, why = J.clock_state(tmp_path / "empty")
    assert state is None and "no readable cpufreq" in str(why)


def test_ina3221_rails_and_sampler(tmp_path: Path) -> None:
    root = make_jetson(tmp_path)
    rails = J.find_rails(root)
    assert [r.label for r in rails] == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]
    assert [r.read_mw() for r in rails] == [5080.0, 1014.4, 1521.6]
    sampler, why = J.power_source(root)
    assert why is None and sampler is not None and sampler.source == "sysfs"
    with sampler:
        pass  # even an empty window reads once
    res = sampler.result()
    assert res is not None and res["total_rail"] == "VDD_IN"
    assert res["total_mw"] == pytest.approx(5080.0)
    assert res["rails"]["VDD_SOC"] == pytest.approx(1521.6)


def test_rails_without_a_total_are_summed_and_legacy_iio_is_read(tmp_path: Path) -> None:
    agx = tmp_path / "agx"
    add_rails(agx, {1: ("VDD_GPU_SOC", 5000, 400), 2: ("VDD_CPU_CV", 5000, 100),
                    3: ("VIN_SYS_5V0", 5000, 300)})
    sampler, _ = J.power_source(agx)
    assert sampler is not None
    with sampler:
        pass
    res = sampler.result()
    assert res is not None and res["total_rail"] == "sum(VDD_CPU_CV+VDD_GPU_SOC+VIN_SYS_5V0)"
    assert res["total_mw"] == pytest.approx(4000.0)

    nano = tmp_path / "nano-jp4"
    dev = "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    for n, (name, mw) in enumerate([("POM_5V_IN", 2254), ("POM_5V_GPU", 0), ("POM_5V_CPU", 418)]):
        write(nano, f"{dev}/rail_name_{n}", name + "\n")
        write(nano, f"{dev}/in_power{n}_input", f"{mw}\n")
    rails = J.find_rails(nano)
    assert [(r.label, r.read_mw()) for r in rails] == [
        ("POM_5V_IN", 2254.0), ("POM_5V_GPU", 0.0), ("POM_5V_CPU", 418.0)]


def test_no_rails_no_tegrastats_says_why(tmp_path: Path) -> None:
    root = make_jetson(tmp_path, rails=False)
    sampler, why = J.power_source(root)
    assert sampler is None and why == ("no INA3221 rails under sys/bus/i2c/drivers/ina3221* "
                                       "and no tegrastats")
    record, _ = J.jetson_record(root)
    assert record is not None and record["power_source"] is None
    assert "no INA3221 rails" in record["reasons"]["power"]


def test_tegrastats_lines_parse() -> None:
    assert J.parse_tegrastats(TEGRASTATS_JP6) == {
        "VDD_IN": 4500.0, "VDD_CPU_GPU_CV": 600.0, "VDD_SOC": 1400.0}
    assert J.parse_tegrastats(TEGRASTATS_JP4) == {
        "POM_5V_IN": 2254.0, "POM_5V_GPU": 0.0, "POM_5V_CPU": 418.0}
    assert J.parse_tegrastats("RAM 2448/7620MB SWAP 0/3810MB") == {}


def test_tegrastats_process_is_sampled(tmp_path: Path) -> None:
    root = make_jetson(tmp_path, rails=False)
    lines = "\n".join([TEGRASTATS_JP6, TEGRASTATS_JP6.replace("VDD_IN 4500", "VDD_IN 5500")])
    script(root, "usr/bin/tegrastats", f"cat <<'EOT'\n{lines}\nEOT\nsleep 5\n")
    sampler, why = J.power_source(root)
    assert why is None and sampler is not None and sampler.source == "tegrastats"
    with sampler:
        deadline = time.monotonic() + 5
        while sampler.samples_taken < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    res = sampler.result()
    assert res is not None and res["samples"] == 2 and res["total_rail"] == "VDD_IN"
    assert res["total_mw"] == pytest.approx(5000.0)


def test_environment_on_a_jetson_tree(tmp_path: Path) -> None:
    root = make_jetson(tmp_path)
    assert cpu_model(root) == ("Cortex-A78AE", None)
    assert cpu_has_bf16(root)[0] is False  # Orin's A78AE has no BF16 extension
    assert cuda_version(root) == ("12.6.68", None)
    env = environment(root=root, threads=2)
    assert env["cpu_model"] == "Cortex-A78AE" and env["cores_physical"] is None
    assert env["jetson"]["jetpack"] == "6.0" and env["jetson"]["clocks_locked"] is True
    assert env["cuda"] == "12.6.68"
    if shutil.which("nvidia-smi") is None:
        assert env["gpu_name"] == "NVIDIA Jetson Orin Nano Developer Kit (integrated GPU)"
    for key, value in env.items():
        if value is None:
            assert env["reasons"].get(key), f"{key} is null without a reason"


def test_environment_on_a_pc_tree_gives_reasons(tmp_path: Path) -> None:
    root = tmp_path / "pc"
    write(root, "proc/cpuinfo", "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\n"
                                "physical id\t: 0\ncore id\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n")
    env = environment(root=root, query_tools=False)
    assert env["cpu_model"] == "Intel(R) Xeon(R) Processor" and env["cpu_bf16"] is True
    assert env["jetson"] is None and "not a Jetson" in env["reasons"]["jetson"]
    assert env["cores_physical"] == 1
    for key, value in env.items():
        if value is None:
            assert env["reasons"].get(key), f"{key} is null without a reason"
