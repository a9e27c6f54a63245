"""What this CPU offers int8 kernels, and whether an int8 graph is safe to run on it.

ONNX Runtime's x86 int8 matrix kernels are picked at run time from CPUID: VNNI (AVX512-VNNI or
AVX-VNNI) and AMX multiply u8 x s8 straight into 32-bit sums; without them (AVX2, AVX-512 without
VNNI) u8 x s8 goes through VPMADDUBSW, whose 16-bit pair sums saturate once two adjacent
products exceed 32,767 (255 x 127 x 2 = 64,770 does; 255 x 64 x 2 = 32,640, 7-bit weights, does
not). So a graph with full-range 8-bit s8 weights computes other numbers on an AVX2-only CPU than
where it was exported, while 7-bit (`reduce_range`) weights or u8 weights compute the same
integers everywhere (measured: models/results/int8-portability.md). Torch-free: the service
checks the graphs it loads with `saturation_hazard`.
"""

from __future__ import annotations

import platform
from pathlib import Path

# Flags that matter to int8 inference, in the order worth stating.
INT8_FLAGS = (
    "avx2",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "amx_int8",
    "asimd",
    "asimddp",
)
# CPUs with any of these multiply u8 x s8 without 16-bit intermediate sums.
NO_SATURATION_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU feature flags Linux reports (x86 `flags`, ARM `Features`)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


# CPU classes, best first: the first whose flags the CPU has all of. The int8 kernels ORT picks
# follow these (AMX tiles, AVX-512 VNNI, AVX-512 without VNNI, AVX2), and so do the figures in
# BENCHMARKS.md, which keeps one table per class.
CPU_CLASSES = (
    ("amx", ("amx_tile", "amx_int8")),
    ("avx512-vnni", ("avx512f", "avx512_vnni")),
    ("avx512", ("avx512f",)),
    ("avx2", ("avx2",)),
    ("arm64-dotprod", ("asimddp",)),
    ("arm64", ("asimd",)),
)


# The flags a CPU class is told by, and the neighbours worth stating beside it.
CLASS_FLAGS = (
    "avx2",
    "fma",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "asimddp",
)


def cpu_class(flags: set[str]) -> str:
    """The class of a CPU with `flags` (`CPU_CLASSES`; "baseline" when none fits). Older kernels
    spell AVX-512 VNNI `avx512vnni`."""
    flags = flags | ({"avx512_vnni"} if "avx512vnni" in flags else set())
    for name, needed in CPU_CLASSES:
        if all(flag in flags for flag in needed):
            return name
    return "baseline"


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's marketing name (`model name`), or the machine type when Linux gives none."""
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.machine() or "unknown"


def describe_cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """The CPU as parity records and model metadata state it: name, machine type and the
    int8-relevant flags it has (the others are left out to keep records short)."""
    flags = cpu_flags(cpuinfo)
    return {
        "model": cpu_model(cpuinfo),
        "machine": platform.machine(),
        "int8_flags": [flag for flag in INT8_FLAGS if flag in flags],
    }


def saturation_hazard(
    quantization_config: dict | None, flags: set[str], machine: str | None = None
) -> str | None:
    """Why an int8 graph may compute wrong numbers on a CPU with `flags`, or None when it is safe.

    Only x86 graphs with s8 weights at full 8-bit range are at risk (builds made before every
    export used 7-bit weights, or by other tools); `reduce_range` or u8 weights are safe."""
    if not quantization_config or quantization_config.get("dtype") != "int8":
        return None
    if (machine or platform.machine()) not in ("x86_64", "AMD64", "i686"):
        return None
    if quantization_config.get("reduce_range", False):
        return None
    if quantization_config.get("weights_dtype", "s8") != "s8":
        return None
    if any(flag in flags for flag in NO_SATURATION_FLAGS):
        return None
    made_on = quantization_config.get("target", "unknown")
    return (
        f"int8 graph quantized with full-range 8-bit weights (preset {made_on}, no reduce_range) "
        f"on a CPU without {'/'.join(NO_SATURATION_FLAGS)}: ONNX Runtime's u8s8 kernels "
        "(VPMADDUBSW) can saturate here, so outputs may differ from the parity-checked ones; "
        "rebuild it (`python -m models build`) to get 7-bit weights that are exact on every x86 CPU"
    )
