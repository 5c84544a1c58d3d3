"""Jetson probes: release, power mode, clock locking and power rails (stdlib only).

Every probe takes ``root`` (``/`` on a device) and reads files below it, so tests point the
probes at fixture trees. Nothing here needs root privileges; what cannot be read comes back as
``None`` together with a reason string.

Sources read (all relative to ``root``):

* ``etc/nv_tegra_release`` - ``# R36 (release), REVISION: 3.0, GCID: ..., BOARD: ...``
* ``proc/device-tree/model`` and ``.../compatible`` (NUL-separated) - board name, SoC
* ``var/lib/dpkg/status`` - the ``nvidia-jetpack`` meta-package's version, when installed
* ``nvpmodel -q`` (``usr/sbin/nvpmodel`` or ``usr/bin/nvpmodel``; with ``root=/`` also PATH),
  else ``var/lib/nvpmodel/status`` (``pmode:0000 ...``)
* cpufreq (``sys/devices/system/cpu/cpufreq/policy*`` or ``cpu*/cpufreq``) and GPU devfreq
  (``sys/class/devfreq/*gpu*``): clocks are locked when every ``min == max``, which is what
  ``jetson_clocks`` leaves behind
* INA3221 rails: ``sys/bus/i2c/drivers/ina3221*/*/hwmon/hwmon*/in{N}_label``, ``in{N}_input``
  (mV), ``curr{N}_input`` (mA); the legacy JetPack 4 IIO layout
  (``.../iio:device*/rail_name_N``, ``in_power{N}_input`` mW) is read too
* ``tegrastats`` lines (``VDD_IN 5012mW/5012mW``, JetPack 4: ``POM_5V_IN 2254/2254``)
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path("/")

L4T_TO_JETPACK: dict[str, str] = {
    "32.6.1": "4.6", "32.7.1": "4.6.1", "32.7.2": "4.6.2", "32.7.3": "4.6.3",
    "32.7.4": "4.6.4", "32.7.5": "4.6.5", "32.7.6": "4.6.6",
    "35.1.0": "5.0.2", "35.2.1": "5.1", "35.3.1": "5.1.1", "35.4.1": "5.1.2",
    "35.5.0": "5.1.3", "35.6.0": "5.1.4", "35.6.1": "5.1.5",
    "36.2.0": "6.0 DP", "36.3.0": "6.0", "36.4.0": "6.1", "36.4.3": "6.2", "36.4.4": "6.2.1",
    "38.2.0": "7.0", "38.2.1": "7.0",
}  # fmt: skip
"""Jetson Linux (L4T) release -> JetPack, from NVIDIA's JetPack archive. A release missing here
reports its JetPack major line (``6.x``) instead of a guess; the ``nvidia-jetpack`` package's
own version wins when it is installed."""

_JETPACK_MAJOR = {"32": "4.x", "34": "5.0 DP", "35": "5.x", "36": "6.x", "38": "7.x"}

TOTAL_RAILS = ("VDD_IN", "POM_5V_IN", "5V_IN", "VIN")
"""Rails that carry the whole module's input power (the first one present is used); without one
(AGX Orin, AGX Xavier) the sum of all rails is reported and named as such."""

_TEGRA_RELEASE = re.compile(
    r"#\s*R(?P<major>\d+)\s*\(release\),\s*REVISION:\s*(?P<rev>[\d.]+)(?P<rest>.*)")


def read_text(path: Path) -> str | None:
    """A small sysfs/procfs/etc file as text (NULs and surrounding blanks stripped), or None."""
    try:
        return path.read_bytes().decode("utf-8", "replace").replace("\x00", "\n").strip() or None
    except OSError:
        return None


# -- release and board ----------------------------------------------------------------------


def parse_tegra_release(text: str) -> dict[str, Any] | None:
    """``/etc/nv_tegra_release``'s first line -> ``{"l4t": "36.3.0", "major": 36, "revision":
    "3.0", "board": ..., "gcid": ...}``; ``None`` when the text is not in that format."""
    m = _TEGRA_RELEASE.search(text)
    if m is None:
        return None
    rev = m.group("rev").strip(".")
    parts = rev.split(".")
    while len(parts) < 2:
        parts.append("0")
    fields = {}
    for item in m.group("rest").split(","):
        key, _, value = item.partition(":")
        if key.strip() and value.strip():
            fields[key.strip().lower()] = value.strip()
    return {
        "l4t": f"{int(m.group('major'))}.{'.'.join(parts)}",
        "major": int(m.group("major")),
        "revision": rev,
        "board": fields.get("board"),
        "gcid": fields.get("gcid"),
    }


def jetpack_for_l4t(l4t: str) -> str | None:
    """JetPack release of an L4T release (``36.3.0`` -> ``6.0``); major line when unknown."""
    if l4t in L4T_TO_JETPACK:
        return L4T_TO_JETPACK[l4t]
    return _JETPACK_MAJOR.get(l4t.split(".")[0])


def dpkg_version(root: Path, package: str) -> str | None:
    """Installed version of a Debian package from ``var/lib/dpkg/status`` under ``root``."""
    text = read_text(root / "var/lib/dpkg/status")
    if text is None:
        return None
    for stanza in re.split(r"\n\s*\n", text):
        fields = dict(re.findall(r"^([\w-]+):\s*(.*)$", stanza, flags=re.M))
        if fields.get("Package") == package and "installed" in fields.get("Status", "installed"):
            return fields.get("Version")
    return None


def device_tree(root: Path = ROOT) -> dict[str, Any]:
    """``{"model": str | None, "compatible": [str, ...]}`` from ``proc/device-tree``."""
    base = root / "proc/device-tree"
    model = read_text(base / "model")
    compat = read_text(base / "compatible")
    return {
        "model": model.splitlines()[0].strip() if model else None,
        "compatible": [c.strip() for c in compat.splitlines() if c.strip()] if compat else [],
    }


def is_jetson(root: Path = ROOT) -> tuple[bool, str]:
    """Whether ``root`` is a Jetson, and how that was decided (or why not)."""
    if (root / "etc/nv_tegra_release").is_file():
        return True, "etc/nv_tegra_release present"
    dt = device_tree(root)
    if dt["model"] and "jetson" in dt["model"].lower():
        return True, f"device-tree model {dt['model']!r}"
    tegra = [c for c in dt["compatible"] if c.startswith("nvidia,tegra")]
    if tegra:
        return True, f"device-tree compatible {tegra[0]!r}"
    seen = f"device-tree model {dt['model']!r}" if dt["model"] else "no device-tree model"
    return False, f"not a Jetson (no /etc/nv_tegra_release, {seen})"


# -- power mode ------------------------------------------------------------------------------


def parse_nvpmodel(text: str) -> dict[str, Any] | None:
    """``nvpmodel -q`` output -> ``{"id": 0, "name": "MAXN"}``.

    The tool prints ``NV Power Mode: <name>`` and then the mode id on a line of its own (with
    ``--verbose`` more lines, and sometimes ``NVPM WARN`` lines, which are skipped)."""
    name = None
    mode_id = None
    lines = [ln.strip() for ln in text.splitlines()]
    for i, line in enumerate(lines):
        m = re.match(r"NV Power Mode\s*:\s*(.+)$", line)
        if m:
            name = m.group(1).strip()
            for after in lines[i + 1:]:
                if re.fullmatch(r"\d+", after):
                    mode_id = int(after)
                    break
            break
    if name is None:
        return None
    return {"id": mode_id, "name": name}


def _find_tool(root: Path, name: str) -> str | None:
    for sub in ("usr/sbin", "usr/bin", "usr/local/bin"):
        p = root / sub / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    if root == ROOT:
        return shutil.which(name, path=os.pathsep.join(
            [os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    return None


def power_mode(root: Path = ROOT, timeout: float = 10.0) -> tuple[dict[str, Any] | None, str]:
    """The current nvpmodel mode and where it came from (or why it is unknown)."""
    tool = _find_tool(root, "nvpmodel")
    why = "nvpmodel not found"
    if tool is not None:
        try:
            done = subprocess.run([tool, "-q"], capture_output=True, text=True, timeout=timeout,
                                  check=False)
            parsed = parse_nvpmodel(done.stdout + "\n" + done.stderr)
            if parsed is not None:
                return parsed, "nvpmodel -q"
            why = f"'nvpmodel -q' printed no power mode (exit {done.returncode})"
        except (OSError, subprocess.SubprocessError) as exc:
            why = f"'nvpmodel -q' failed: {exc}"
    status = read_text(root / "var/lib/nvpmodel/status")
    if status:
        m = re.search(r"pmode:(\d+)", status)
        if m:
            return {"id": int(m.group(1)), "name": None}, "var/lib/nvpmodel/status"
    return None, f"{why}; no var/lib/nvpmodel/status"


# -- clocks ----------------------------------------------------------------------------------


def _read_int(path: Path) -> int | None:
    text = read_text(path)
    try:
        return int(text.split()[0]) if text else None
    except ValueError:
        return None


def clock_state(root: Path = ROOT) -> tuple[dict[str, Any] | None, str | None]:
    """Whether CPU and GPU clocks are pinned (``min == max``, as ``jetson_clocks`` leaves them).

    Returns ``({"locked": bool, "cpu": {...}, "gpu": {...}}, None)`` or ``(None, reason)``. The
    memory clock (EMC) sits behind debugfs, which needs root, and is not checked.
    """
    cpu_dirs = sorted(glob.glob(str(root / "sys/devices/system/cpu/cpufreq/policy*")))
    if not cpu_dirs:
        cpu_dirs = sorted(glob.glob(str(root / "sys/devices/system/cpu/cpu[0-9]*/cpufreq")))
    cpu = []
    for d in cpu_dirs:
        lo, hi = _read_int(Path(d) / "scaling_min_freq"), _read_int(Path(d) / "scaling_max_freq")
        if lo is not None and hi is not None:
            cpu.append({"domain": Path(d).name if "policy" in d else Path(d).parent.name,
                        "min_khz": lo, "max_khz": hi, "locked": lo == hi})
    gpu = []
    for d in sorted(glob.glob(str(root / "sys/class/devfreq/*"))):
        name = Path(d).name
        label = (read_text(Path(d) / "name") or "") + " " + name
        if not re.search(r"gpu|gv11b|ga10b|gp10b|gm20b", label, flags=re.I):
            continue
        lo, hi = _read_int(Path(d) / "min_freq"), _read_int(Path(d) / "max_freq")
        if lo is not None and hi is not None:
            gpu.append({"domain": name, "min_hz": lo, "max_hz": hi, "locked": lo == hi})
    if not cpu and not gpu:
        return None, "no readable cpufreq or GPU devfreq min/max files"
    cpu_locked = all(c["locked"] for c in cpu) if cpu else None
    gpu_locked = all(g["locked"] for g in gpu) if gpu else None
    known = [v for v in (cpu_locked, gpu_locked) if v is not None]
    return {
        "locked": all(known),
        "cpu_locked": cpu_locked,
        "gpu_locked": gpu_locked,
        "cpu": cpu,
        "gpu": gpu,
    }, None


# -- power rails -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rail:
    """One INA3221 channel: its label and how to read its power in mW."""

    label: str
    voltage: Path | None = None  # mV (hwmon in{N}_input)
    current: Path | None = None  # mA (hwmon curr{N}_input)
    power: Path | None = None  # mW (legacy IIO in_power{N}_input)

    def read_mw(self) -> float | None:
        if self.power is not None:
            p = _read_int(self.power)
            return None if p is None else float(p)
        mv = _read_int(self.voltage) if self.voltage else None
        ma = _read_int(self.current) if self.current else None
        if mv is None or ma is None:
            return None
        return mv * ma / 1000.0


def find_rails(root: Path = ROOT) -> list[Rail]:
    """Every labelled INA3221 channel below ``root`` (hwmon layout, then legacy IIO)."""
    rails: list[Rail] = []
    pattern = str(root / "sys/bus/i2c/drivers/ina3221*/*/hwmon/hwmon*")
    for hw in sorted(glob.glob(pattern)):
        hw_path = Path(hw)
        for label_file in sorted(hw_path.glob("in*_label")):
            m = re.fullmatch(r"in(\d+)_label", label_file.name)
            label = read_text(label_file)
            if not m or not label or label.lower().startswith("sum of"):
                continue
            n = m.group(1)
            volt, curr = hw_path / f"in{n}_input", hw_path / f"curr{n}_input"
            if volt.exists() and curr.exists():
                rails.append(Rail(label=label, voltage=volt, current=curr))
    if rails:
        return rails
    pattern = str(root / "sys/bus/i2c/drivers/ina3221x/*/iio:device*")
    for dev in sorted(glob.glob(pattern)):
        dev_path = Path(dev)
        for name_file in sorted(dev_path.glob("rail_name_*")):
            n = name_file.name.rsplit("_", 1)[1]
            label = read_text(name_file)
            power = dev_path / f"in_power{n}_input"
            if label and power.exists():
                rails.append(Rail(label=label, power=power))
    return rails


def total_rail(labels: list[str]) -> tuple[list[str], str]:
    """The rails summed for the module's power, and the name under which it is reported."""
    for want in TOTAL_RAILS:
        if want in labels:
            return [want], want
    return list(labels), "sum(" + "+".join(labels) + ")"


_TEGRASTATS_RAIL = re.compile(
    r"\b([A-Za-z][A-Za-z0-9_]*)\s+(\d+)(mW)?/(\d+)(mW)?(?![A-Za-z0-9])")


def parse_tegrastats(line: str) -> dict[str, float]:
    """Instantaneous rail powers (mW) in one ``tegrastats`` line.

    JetPack 5/6 print ``VDD_IN 5012mW/5012mW`` (current/average); JetPack 4 prints
    ``POM_5V_IN 2254/2254`` without units, so unit-less pairs count only for ``POM_``/``VDD_``
    names (``RAM 1234/7620MB`` is memory, not power)."""
    out: dict[str, float] = {}
    for name, now, unit, _avg, _unit2 in _TEGRASTATS_RAIL.findall(line):
        if unit or re.match(r"(POM_|VDD_|VIN)", name):
            out[name] = float(now)
    return out


class PowerSampler:
    """Samples the rails in a background thread while a workload runs.

    ``source`` is ``"sysfs"`` (INA3221 files) or ``"tegrastats"`` (a ``tegrastats`` process
    read line by line). Use as a context manager; :meth:`result` gives the mean power per rail.
    """

    def __init__(self, rails: list[Rail] | None = None, *, tegrastats: str | None = None,
                 interval_s: float = 0.05) -> None:
        if not rails and tegrastats is None:
            raise ValueError("no rails and no tegrastats to sample")
        self.rails = rails or []
        self.tegrastats = tegrastats
        self.source = "sysfs" if self.rails else "tegrastats"
        self.interval_s = interval_s
        self._samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[str] | None = None

    @property
    def samples_taken(self) -> int:
        return len(self._samples)

    def sample(self) -> dict[str, float]:
        """One reading of every sysfs rail (mW)."""
        out = {}
        for rail in self.rails:
            mw = rail.read_mw()
            if mw is not None:
                out[rail.label] = mw
        return out

    def _sysfs_loop(self) -> None:
        while not self._stop.is_set():
            reading = self.sample()
            if reading:
                self._samples.append(reading)
            self._stop.wait(self.interval_s)

    def _tegrastats_loop(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            reading = parse_tegrastats(line)
            if reading:
                self._samples.append(reading)
            if self._stop.is_set():
                break

    def _signal(self, sig: int) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)  # the group this sampler started, nothing else

    def __enter__(self) -> PowerSampler:
        self._samples.clear()
        self._stop.clear()
        if self.source == "sysfs":
            target: Callable[[], None] = self._sysfs_loop
        else:
            ms = max(1, int(self.interval_s * 1000))
            # its own process group, so stopping it also stops anything it started
            self._proc = subprocess.Popen([str(self.tegrastats), "--interval", str(ms)],
                                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                          text=True, start_new_session=True)
            target = self._tegrastats_loop
        self._thread = threading.Thread(target=target, name="power-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._proc is not None:
            self._signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self._proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.source == "sysfs" and not self._samples:  # a very short window: read once
            reading = self.sample()
            if reading:
                self._samples.append(reading)

    def result(self) -> dict[str, Any] | None:
        """``{"source", "samples", "rails": {label: mean mW}, "total_rail", "total_mw"}``."""
        if not self._samples:
            return None
        labels = sorted({k for s in self._samples for k in s})
        means = {k: sum(s[k] for s in self._samples if k in s)
                 / sum(1 for s in self._samples if k in s) for k in labels}
        used, name = total_rail(labels)
        return {
            "source": self.source,
            "samples": len(self._samples),
            "rails": means,
            "total_rail": name,
            "total_mw": sum(means[k] for k in used),
        }


def power_source(root: Path = ROOT) -> tuple[PowerSampler | None, str | None]:
    """A sampler over the readable INA3221 rails, else over ``tegrastats``; or a reason."""
    rails = find_rails(root)
    readable = [r for r in rails if r.read_mw() is not None]
    if readable:
        return PowerSampler(readable), None
    tool = _find_tool(root, "tegrastats")
    if tool is not None:
        return PowerSampler(tegrastats=tool), None
    why = ("INA3221 rails found but not readable (permissions?)" if rails
           else "no INA3221 rails under sys/bus/i2c/drivers/ina3221*")
    return None, f"{why} and no tegrastats"


# -- the record ------------------------------------------------------------------------------


def jetson_record(root: Path = ROOT, *, query_tools: bool = True) -> tuple[dict[str, Any] | None,
                                                                         str | None]:
    """Everything the bench reports about a Jetson, or ``(None, reason)`` elsewhere.

    Keys: ``model``, ``soc`` (device-tree compatible ``nvidia,tegra234`` -> ``tegra234``),
    ``l4t``, ``jetpack``, ``power_mode`` ({id, name}), ``clocks`` (see :func:`clock_state`),
    ``clocks_locked``, ``power_source`` (``sysfs`` | ``tegrastats``) and ``reasons`` (a reason for
    every ``None``). ``query_tools=False`` skips running ``nvpmodel``.
    """
    yes, why = is_jetson(root)
    if not yes:
        return None, why
    reasons: dict[str, str] = {}
    dt = device_tree(root)
    soc = next((c.split(",", 1)[1] for c in dt["compatible"] if c.startswith("nvidia,tegra")),
               None)
    if dt["model"] is None:
        reasons["model"] = "proc/device-tree/model not readable"
    if soc is None:
        reasons["soc"] = "no nvidia,tegra* entry in proc/device-tree/compatible"
    release_text = read_text(root / "etc/nv_tegra_release")
    release = parse_tegra_release(release_text) if release_text else None
    l4t = release["l4t"] if release else None
    if l4t is None:
        reasons["l4t"] = ("etc/nv_tegra_release missing" if release_text is None else
                          "etc/nv_tegra_release not in the '# R36 (release), REVISION: x' form")
    jetpack = dpkg_version(root, "nvidia-jetpack")
    if jetpack is not None:
        jetpack = jetpack.split("+")[0].split("-")[0]
    elif l4t is not None:
        jetpack = jetpack_for_l4t(l4t)
    if jetpack is None:
        reasons["jetpack"] = "no nvidia-jetpack package and no known L4T release"
    mode, mode_from = power_mode(root) if query_tools else (None, "not queried")
    if mode is None:
        reasons["power_mode"] = mode_from
    clocks, clocks_why = clock_state(root)
    if clocks is None:
        reasons["clocks_locked"] = clocks_why or "unknown"
    sampler, power_why = power_source(root)
    if sampler is None:
        reasons["power"] = power_why or "unknown"
    return {
        "model": dt["model"],
        "soc": soc,
        "l4t": l4t,
        "l4t_board": release["board"] if release else None,
        "jetpack": jetpack,
        "power_mode": mode,
        "power_mode_source": mode_from if mode is not None else None,
        "clocks_locked": clocks["locked"] if clocks else None,
        "clocks": clocks,
        "power_source": sampler.source if sampler else None,
        "power_rails": [r.label for r in sampler.rails] if sampler else [],
        "reasons": reasons,
    }, None

