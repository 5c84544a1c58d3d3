"""The INT8 CPU classes and the one-line warning for INT8 files that saturate on this CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from facedistill.runtime import cpu

EPYC_AVX2 = ("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n"
             "flags\t\t: fpu sse2 avx avx2 fma bmi2\n\nprocessor\t: 1\nmodel name\t: AMD EPYC\n"
             "flags\t\t: fpu sse2 avx avx2 fma bmi2\n")
ORIN = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32 atomics asimddp\nCPU part\t: 0xd42\n"


@pytest.mark.parametrize(("flags", "machine", "expected"), [
    ({"avx2", "avx512f", "avx512bw", "avx512_vnni"}, "x86_64", "x86-vnni"),
    ({"avx2", "avx_vnni"}, "x86_64", "x86-vnni"),              # Alder Lake and later
    ({"avx2", "avx512f", "amx_int8"}, "x86_64", "x86-vnni"),
    ({"avx2", "avx512f", "avx512bw"}, "x86_64", "x86-avx512"),  # Skylake-SP: no VNNI
    ({"avx2", "fma"}, "x86_64", "x86-avx2"),                    # Zen 2/3, Haswell
    ({"sse4_2"}, "x86_64", "x86"),
    (set(), "x86_64", "unknown"),
    ({"asimd", "asimddp"}, "aarch64", "arm64-dotprod"),         # Orin's Cortex-A78AE
    ({"asimd"}, "aarch64", "arm64"),
    ({"avx2"}, "riscv64", "unknown"),
])
def test_int8_class(flags: set[str], machine: str, expected: str) -> None:
    assert cpu.int8_class(flags, machine) == expected
    assert expected in cpu.INT8_CLASSES


def test_only_vnni_and_dotprod_are_safe_for_8_bit_weights() -> None:
    safe = {c for c in cpu.INT8_CLASSES if not cpu.saturates_full_range(c)}
    assert safe == {"x86-vnni", "arm64-dotprod"}


def test_cpuinfo_is_parsed_per_cpu(tmp_path: Path) -> None:
    for text, flags in ((EPYC_AVX2, {"fpu", "sse2", "avx", "avx2", "fma", "bmi2"}),
                        (ORIN, {"fp", "asimd", "evtstrm", "aes", "crc32", "atomics", "asimddp"})):
        (tmp_path / "proc").mkdir(exist_ok=True)
        (tmp_path / "proc/cpuinfo").write_text(text)
        assert cpu.cpu_flags(tmp_path) == flags
    assert cpu.cpu_flags(tmp_path / "missing") == set()
    assert len(cpu.cpuinfo_blocks(tmp_path)) == 1


def test_warning_names_file_recipe_class_and_fix() -> None:
    for bits in (None, 7):
        assert cpu.int8_warning(bits, "cpu", "m.onnx", cls="x86-avx2") is None
    for cls in ("x86-vnni", "arm64-dotprod"):
        assert cpu.int8_warning(8, "tensorrt", "m.onnx", cls=cls) is None
    msg = cpu.int8_warning(8, "tensorrt", "m.onnx", cls="x86-avx2")
    assert msg is not None and "\n" not in msg
    assert msg.startswith("warning: m.onnx: ") and "'tensorrt'" in msg and "x86-avx2" in msg
    assert "--int8-recipe cpu" in msg
    legacy = cpu.int8_warning(8, None, "old.onnx", cls="x86-avx512")
    assert legacy is not None and "exported before INT8 recipes" in legacy
