"""The environment record written with every bench result (torch-free).

Every field is a value or ``None``; every ``None`` has a reason in ``reasons[field]``. Probes
that read files take ``root`` so tests can point them at fixture trees; probes that would run a
program (``nvidia-smi``, ``nvpmodel``) run it only when it exists.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from facedistill.bench.jetson import ROOT, device_tree, jetson_record, read_text

ARM_PARTS = {
    ("0x41", "0xd03"): "Cortex-A53", ("0x41", "0xd07"): "Cortex-A57",
    ("0x41", "0xd08"): "Cortex-A72", ("0x41", "0xd0b"): "Cortex-A76",
    ("0x41", "0xd0c"): "Neoverse-N1", ("0x41", "0xd40"): "Neoverse-V1",
    ("0x41", "0xd41"): "Cortex-A78", ("0x41", "0xd42"): "Cortex-A78AE",
    ("0x41", "0xd49"): "Neoverse-N2", ("0x41", "0xd4f"): "Neoverse-V2",
    ("0x41", "0xd81"): "Cortex-A720", ("0x41", "0xd8e"): "Neoverse-V3AE",
    ("0x4e", "0x004"): "NVIDIA Carmel", ("0x4e", "0x003"): "NVIDIA Denver 2",
}  # fmt: skip
"""(CPU implementer, CPU part) of /proc/cpuinfo on aarch64, which prints no model name."""


def _cpuinfo_blocks(root: Path) -> list[dict[str, str]]:
    text = read_text(root / "proc/cpuinfo")
    if not text:
        return []
    blocks = []
    for chunk in re.split(r"\n\s*\n", text):
        fields = {}
        for line in chunk.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip().lower()] = value.strip()
        if fields:
            blocks.append(fields)
    return blocks


def cpu_model(root: Path = ROOT) -> tuple[str | None, str | None]:
    """The CPU's marketing name (x86 ``model name``; aarch64 implementer/part decoded)."""
    blocks = _cpuinfo_blocks(root)
    for b in blocks:
        if b.get("model name"):
            return b["model name"], None
    parts = sorted({(b.get("cpu implementer", ""), b.get("cpu part", "")) for b in blocks
                    if b.get("cpu part")})
    if parts:
        names = [ARM_PARTS.get(p, f"implementer {p[0]} part {p[1]}") for p in parts]
        return " + ".join(names), None
    if root == ROOT and platform.processor():
        return platform.processor(), None
    return None, "proc/cpuinfo has no model name or CPU part"


def cpu_flags(root: Path = ROOT) -> set[str]:
    """CPU feature flags (x86 ``flags``, aarch64 ``Features``) of the first CPU."""
    for b in _cpuinfo_blocks(root):
        text = b.get("flags") or b.get("features")
        if text:
            return set(text.split())
    return set()


def cpu_has_bf16(root: Path = ROOT) -> tuple[bool, str]:
    """Whether the CPU computes bf16 natively (x86 AVX512-BF16/AMX-BF16, Arm BF16)."""
    flags = cpu_flags(root)
    native = sorted(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    if native:
        return True, "CPU flags " + ", ".join(native)
    if not flags:
        return False, "CPU flags unknown (proc/cpuinfo unreadable)"
    return False, "CPU has no avx512_bf16 / amx_bf16 / bf16 flag: bf16 would be emulated"


def physical_cores(root: Path = ROOT) -> int | None:
    """Distinct (physical id, core id) pairs in /proc/cpuinfo; None where it does not say."""
    pairs = {(b.get("physical id", "0"), b["core id"]) for b in _cpuinfo_blocks(root)
             if "core id" in b}
    return len(pairs) or None


def dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _run(cmd: list[str], timeout: float = 10.0) -> str | None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def tensorrt_version() -> tuple[str | None, str | None]:
    for dist in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt_libs"):
        v = dist_version(dist)
        if v:
            return v, None
    if importlib.util.find_spec("tensorrt") is not None:  # JetPack's apt package: no metadata
        try:
            import tensorrt

            return str(tensorrt.__version__), None
        except Exception as exc:  # a broken install must not break the bench
            return None, f"tensorrt present but not importable: {exc}"
    return None, "tensorrt not installed"


def nvidia_smi() -> tuple[list[dict[str, str]], str | None]:
    """GPUs as ``nvidia-smi`` lists them (name, driver, memory), or a reason."""
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return [], "nvidia-smi not found"
    out = _run([tool, "--query-gpu=name,driver_version,memory.total",
                "--format=csv,noheader"])
    if not out:
        return [], "nvidia-smi found no GPU"
    gpus = []
    for line in out.strip().splitlines():
        cells = [c.strip() for c in line.split(",")]
        gpus.append(dict(zip(("name", "driver", "memory"), cells, strict=False)))
    return gpus, None


def cuda_version(root: Path = ROOT, torch_module: Any = None) -> tuple[str | None, str | None]:
    """CUDA runtime version: torch's build, cuda-python's runtime, or the toolkit on disk."""
    if torch_module is not None and getattr(torch_module.version, "cuda", None):
        return str(torch_module.version.cuda), None
    if importlib.util.find_spec("cuda") is not None:
        try:
            from cuda.bindings import runtime  # type: ignore[import-not-found]

            err, v = runtime.cudaRuntimeGetVersion()
            if int(err) == 0:
                return f"{v // 1000}.{(v % 1000) // 10}", None
        except Exception:  # no driver / old cuda-python: fall through to the files
            pass
    info = read_text(root / "usr/local/cuda/version.json")
    if info:
        try:
            return str(json.loads(info)["cuda"]["version"]), None
        except (ValueError, KeyError, TypeError):
            pass
    text = read_text(root / "usr/local/cuda/version.txt")
    if text:
        m = re.search(r"CUDA Version\s+([\d.]+)", text)
        if m:
            return m.group(1), None
    return None, "no CUDA runtime found (no torch CUDA build, cuda-python or usr/local/cuda)"


def environment(
    *,
    threads: int | None = None,
    torch_module: Any = None,
    root: Path = ROOT,
    query_tools: bool = True,
) -> dict[str, Any]:
    """The environment record. ``torch_module``: torch when the bench used it (its version, CUDA
    build and threads are then recorded); ``query_tools=False`` runs no external program."""
    reasons: dict[str, str] = {}

    def put(name: str, value: Any, why: str | None) -> Any:
        if value is None:
            reasons[name] = why or "unknown"
        return value

    env: dict[str, Any] = {}
    env["cpu_model"] = put("cpu_model", *cpu_model(root))
    env["cpu_arch"] = platform.machine() or None
    env["cores_logical"] = os.cpu_count()
    env["cores_physical"] = put("cores_physical", physical_cores(root),
                                "proc/cpuinfo lists no core ids")
    try:
        env["cores_available"] = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        env["cores_available"] = os.cpu_count()
    bf16, bf16_why = cpu_has_bf16(root)
    env["cpu_bf16"] = bf16
    env["cpu_bf16_reason"] = bf16_why
    env["os"] = platform.platform()
    env["python"] = platform.python_version()
    env["numpy"] = dist_version("numpy")
    ort_version = dist_version("onnxruntime") or dist_version("onnxruntime-gpu")
    env["onnxruntime"] = put("onnxruntime", ort_version, "onnxruntime not installed")
    providers = None
    if ort_version and "onnxruntime" in sys.modules:
        providers = list(sys.modules["onnxruntime"].get_available_providers())
    env["onnxruntime_providers"] = put("onnxruntime_providers", providers,
                                       "onnxruntime not used by this run")
    env["tensorrt"] = put("tensorrt", *tensorrt_version())
    env["torch"] = put("torch", getattr(torch_module, "__version__", None),
                       "torch not used by this run (no checkpoint artifacts)")
    env["threads_requested"] = put("threads_requested", threads,
                                   "not set: every runtime uses its default")
    env["threads_used"] = {}
    if ort_version:
        env["threads_used"]["onnxruntime"] = threads or physical_cores(root) or os.cpu_count()
    if torch_module is not None:
        env["threads_used"]["torch"] = int(torch_module.get_num_threads())
    env["cuda"] = put("cuda", *cuda_version(root, torch_module))

    gpu_name, gpu_why = None, "not queried"
    driver = None
    if torch_module is not None and torch_module.cuda.is_available():
        gpu_name, gpu_why = torch_module.cuda.get_device_name(0), None
    if gpu_name is None and query_tools:
        gpus, gpu_why = nvidia_smi()
        if gpus:
            gpu_name, driver = gpus[0].get("name"), gpus[0].get("driver")
    jetson, jetson_why = jetson_record(root, query_tools=query_tools)
    if gpu_name is None and jetson is not None:
        model = jetson.get("model") or device_tree(root)["model"] or "Jetson"
        gpu_name, gpu_why = f"{model} (integrated GPU)", None
    env["gpu_name"] = put("gpu_name", gpu_name, gpu_why)
    env["gpu_driver"] = put("gpu_driver", driver,
                            "no nvidia-smi driver version" if gpu_name else "no GPU")
    env["jetson"] = put("jetson", jetson, jetson_why)
    env["reasons"] = reasons
    return env
