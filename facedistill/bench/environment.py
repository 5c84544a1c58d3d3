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
from facedistill.runtime.cpu import cpu_flags, cpuinfo_blocks, int8_class

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


def cpu_model(root: Path = ROOT) -> tuple[str | None, str | None]:
    """The CPU's marketing name (x86 ``model name``; aarch64 implementer/part decoded)."""
    blocks = cpuinfo_blocks(root)
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
    pairs = {(b.get("physical id", "0"), b["core id"]) for b in cpuinfo_blocks(root)
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


def cuda_toolkit_version(root: Path = ROOT) -> tuple[str | None, str | None]:
    """The system's CUDA toolkit: ``usr/local/cuda/version.json`` (or ``version.txt``)."""
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
    return None, "no usr/local/cuda/version.json or version.txt"


def cuda_version(root: Path = ROOT, torch_module: Any = None) -> tuple[str | None, str | None]:
    """The CUDA the benched code was built against: torch's CUDA build, else the system
    toolkit. cuda-python's bundled runtime is not it (see :func:`cuda_python_versions`)."""
    if torch_module is not None and getattr(torch_module.version, "cuda", None):
        return str(torch_module.version.cuda), None
    version, _why = cuda_toolkit_version(root)
    if version:
        return version, None
    return None, ("no torch CUDA build and no toolkit in usr/local/cuda (see cuda_driver and "
                  "cuda_python_runtime)")


def _import_cudart() -> Any:
    if importlib.util.find_spec("cuda") is None:
        return None
    try:
        from facedistill.runtime.engine import require_cudart

        return require_cudart()
    except Exception:  # a broken cuda-python must not break the bench
        return None


def cuda_python_versions(cudart: Any = None) -> dict[str, tuple[str | None, str | None]]:
    """``{"cuda_driver": ..., "cuda_python_runtime": ...}`` as (``major.minor``, reason):
    the CUDA version the driver supports (``cudaDriverGetVersion``) and the runtime bundled
    with cuda-python (``cudaRuntimeGetVersion``), which is not the system's toolkit."""
    from facedistill.runtime.engine import cuda_api_version

    cudart = cudart if cudart is not None else _import_cudart()
    calls = {"cuda_driver": "cudaDriverGetVersion", "cuda_python_runtime": "cudaRuntimeGetVersion"}
    if cudart is None:
        return {key: (None, "cuda-python not installed") for key in calls}
    return {key: cuda_api_version(cudart, fn) for key, fn in calls.items()}


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
    # ONNX Runtime's INT8 kernels differ by class (x86 without VNNI saturates 8-bit weights)
    env["cpu_int8_class"] = int8_class(cpu_flags(root), env["cpu_arch"])
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
    env["openvino"] = put("openvino", dist_version("openvino"),
                          "openvino not installed (the [openvino] extra)")
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
    env["cuda_toolkit"] = put("cuda_toolkit", *cuda_toolkit_version(root))
    for key, (value, why) in cuda_python_versions().items():
        env[key] = put(key, value, why)

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
