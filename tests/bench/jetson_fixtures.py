"""Fixture file trees that look like a Jetson's /etc, /proc, /sys and /usr (and a PC's)."""

from __future__ import annotations

import os
from pathlib import Path

TEGRA_RELEASE_R36 = (
    "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64, "
    "DATE: Mon May  6 17:34:21 UTC 2024\n# KERNEL_VARIANT: oot\nTARGET_USERSPACE_LIB_DIR=nvidia\n"
    "TARGET_USERSPACE_LIB_DIR_PATH=usr/lib/aarch64-linux-gnu/nvidia\n")
TEGRA_RELEASE_R35 = ("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, "
                     "EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023\n")
ORIN_NANO_MODEL = "NVIDIA Jetson Orin Nano Developer Kit"
ORIN_NANO_COMPATIBLE = ["nvidia,p3768-0000+p3767-0005", "nvidia,p3767-0005", "nvidia,tegra234"]

CPUINFO_ORIN = "".join(
    f"processor\t: {i}\nBogoMIPS\t: 62.50\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 "
    "crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp uscat ilrcpc flagm paca "
    f"pacg\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x1\n"
    f"CPU part\t: 0xd42\nCPU revision\t: 1\n\n" for i in range(6))

DPKG_STATUS = """Package: nvidia-l4t-core
Status: install ok installed
Version: 36.3.0-20240506102626

Package: nvidia-jetpack
Status: install ok installed
Architecture: arm64
Version: 6.0+b106
Description: NVIDIA Jetpack Meta Package
"""

# Orin Nano (JetPack 6): one INA3221 at 1-0040; mV and mA per channel
RAILS_ORIN_NANO = {
    1: ("VDD_IN", 5080, 1000),           # 5080 mW
    2: ("VDD_CPU_GPU_CV", 5072, 200),    # 1014.4 mW
    3: ("VDD_SOC", 5072, 300),           # 1521.6 mW
}

TEGRASTATS_JP6 = (
    "11-21-2024 10:00:00 RAM 2448/7620MB (lfb 2x4MB) SWAP 0/3810MB (cached 0MB) "
    "CPU [3%@729,1%@729,0%@729,0%@729,0%@729,0%@729] EMC_FREQ 0%@2133 GR3D_FREQ 0%@[305] "
    "NVDEC off NVJPG off VIC off APE 200 cpu@47.5C soc2@46.8C tj@47.5C "
    "VDD_IN 4500mW/4400mW VDD_CPU_GPU_CV 600mW/580mW VDD_SOC 1400mW/1380mW")
TEGRASTATS_JP4 = (
    "RAM 1854/3956MB (lfb 73x4MB) SWAP 0/1978MB (cached 0MB) CPU [12%@1479,6%@1479,off,off] "
    "EMC_FREQ 0% GR3D_FREQ 0% PLL@37C CPU@40C PMIC@100C GPU@38.5C AO@46C thermal@39.25C "
    "POM_5V_IN 2254/2254 POM_5V_GPU 0/0 POM_5V_CPU 418/418")


def write(root: Path, rel: str, content: str | bytes, mode: int | None = None) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content)
    if mode is not None:
        os.chmod(p, mode)
    return p


def script(root: Path, rel: str, body: str) -> Path:
    """An executable shell script: a real program the probes run."""
    return write(root, rel, "#!/bin/sh\n" + body, mode=0o755)


def add_rails(root: Path, rails: dict[int, tuple[str, int, int]],
              device: str = "1-0040", hwmon: str = "hwmon3") -> Path:
    base = root / "sys/bus/i2c/drivers/ina3221" / device / "hwmon" / hwmon
    for n, (label, mv, ma) in rails.items():
        write(base, f"in{n}_label", label + "\n")
        write(base, f"in{n}_input", f"{mv}\n")
        write(base, f"curr{n}_input", f"{ma}\n")
        write(base, f"in{n + 3}_input", "12\n")  # shunt voltage channels: no label, ignored
    write(base, "in7_label", "sum of shunt voltages\n")
    write(base, "in7_input", "40\n")
    return base


def add_clocks(root: Path, *, cpu_locked: bool, gpu_locked: bool) -> None:
    for policy, hi in (("policy0", 1510400),):
        write(root, f"sys/devices/system/cpu/cpufreq/{policy}/scaling_max_freq", f"{hi}\n")
        lo = hi if cpu_locked else 115200
        write(root, f"sys/devices/system/cpu/cpufreq/{policy}/scaling_min_freq", f"{lo}\n")
    gpu = "sys/class/devfreq/17000000.gpu"
    write(root, f"{gpu}/max_freq", "624750000\n")
    write(root, f"{gpu}/min_freq", "624750000\n" if gpu_locked else "306000000\n")
    write(root, "sys/class/devfreq/15340000.vic/min_freq", "1\n")  # not the GPU: ignored
    write(root, "sys/class/devfreq/15340000.vic/max_freq", "2\n")


def make_jetson(root: Path, *, locked: bool = True, nvpmodel: bool = True,
                rails: bool = True) -> Path:
    """An Orin Nano on JetPack 6.0 (L4T 36.3.0), 15W mode, clocks locked, INA3221 rails."""
    write(root, "etc/nv_tegra_release", TEGRA_RELEASE_R36)
    write(root, "proc/device-tree/model", (ORIN_NANO_MODEL + "\0").encode())
    write(root, "proc/device-tree/compatible", ("\0".join(ORIN_NANO_COMPATIBLE) + "\0").encode())
    write(root, "proc/cpuinfo", CPUINFO_ORIN)
    write(root, "var/lib/dpkg/status", DPKG_STATUS)
    write(root, "var/lib/nvpmodel/status", "pmode:0001 fmode:quiet\n")
    write(root, "usr/local/cuda/version.json",
          '{"cuda": {"name": "CUDA SDK", "version": "12.6.68"}}\n')
    if nvpmodel:
        script(root, "usr/sbin/nvpmodel",
               'if [ "$1" = "-q" ]; then echo "NV Power Mode: 15W"; echo 0; exit 0; fi\nexit 1\n')
    add_clocks(root, cpu_locked=locked, gpu_locked=locked)
    if rails:
        add_rails(root, RAILS_ORIN_NANO)
    return root
