"""The CPU class read from /proc/cpuinfo and the ORT choices made for it (service/cpu_tuning.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.cpu import cpu_class, cpu_flags
from service.config import load_settings
from service.cpu_tuning import CLASS_DEFAULTS, choose
from service.runtime.onnx_session import default_threads

BASE = "fpu vme sse sse2 ssse3 sse4_1 sse4_2 popcnt avx fma f16c"
SAMPLES = {
    # AVX2-only EPYC (the 2026-12-07 rerun of issue #21)
    "avx2": BASE + " avx2 bmi2",
    # Skylake-SP: AVX-512 without VNNI
    "avx512": BASE + " avx2 avx512f avx512dq avx512cd avx512bw avx512vl",
    # Zen 4 / Cascade Lake: AVX-512 VNNI; older kernels spell it avx512vnni
    "avx512-vnni": BASE + " avx2 avx512f avx512bw avx512vl avx512_vnni avx512_bf16",
    # Sapphire Rapids: AMX tiles
    "amx": BASE + " avx2 avx512f avx512bw avx512_vnni amx_bf16 amx_tile amx_int8 avx_vnni",
    # before AVX2
    "baseline": "fpu vme sse sse2",
}


def cpuinfo(tmp_path: Path, flags: str, processors: int = 2) -> Path:
    text = "".join(
        f"processor\t: {i}\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\n"
        for i in range(processors)
    )
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return path


@pytest.mark.parametrize("expected", list(SAMPLES))
def test_each_class_is_told_by_its_flags(tmp_path, expected):
    assert cpu_class(cpu_flags(cpuinfo(tmp_path, SAMPLES[expected]))) == expected


def test_old_vnni_spelling_avx_vnni_alone_and_arm(tmp_path):
    """Alder Lake's AVX-VNNI without AVX-512 is an AVX2 machine to ORT's fp32 kernels (its
    int8 kernels still get VNNI: models/cpu.py's saturation check reads the flags)."""
    old = BASE + " avx2 avx512f avx512vnni"
    assert cpu_class(cpu_flags(cpuinfo(tmp_path, old))) == "avx512-vnni"
    assert cpu_class(cpu_flags(cpuinfo(tmp_path, BASE + " avx2 avx_vnni"))) == "avx2"
    assert cpu_class({"asimd", "asimddp"}) == "arm64-dotprod"


def test_defaults_follow_the_class_and_match_what_the_runtime_uses(tmp_path):
    settings = load_settings(tmp_path / "none.yaml", {})
    flags = cpu_flags(cpuinfo(tmp_path, SAMPLES["amx"]))
    tuning = choose(settings, flags=flags, cores=4, model="Test CPU", machine="x86_64")
    assert (tuning.cpu_class, tuning.cores, tuning.threads) == ("amx", 4, 4)
    assert tuning.encoder_runners == 4 and not tuning.encoder_spinning
    assert tuning.decoder_spinning and tuning.int8_preset == "x86-64"
    assert tuning.from_settings == [] and tuning.basis.startswith("measured here")
    assert "amx_int8" in tuning.flags and "fpu" not in tuning.flags
    # This machine's own choice: the threads every session gets unless a setting says otherwise.
    assert choose(settings).threads == default_threads()


def test_explicit_settings_win_and_are_named(tmp_path):
    environ = {"ORT_INTRA_OP_THREADS": "3", "ORT_ALLOW_SPINNING": "1"}
    settings = load_settings(tmp_path / "none.yaml", environ)
    tuning = choose(settings, flags={"avx2"}, cores=8, model="x", machine="x86_64")
    assert tuning.threads == 3 and tuning.encoder_runners == 3
    assert tuning.encoder_spinning and tuning.decoder_spinning
    assert tuning.from_settings == ["threads", "allow_spinning"]
    assert "as on amx" in tuning.basis
    assert "cpu class avx2" in tuning.summary() and "threads, allow_spinning" in tuning.summary()


def test_every_class_starts_from_the_same_measured_defaults():
    measured = CLASS_DEFAULTS["amx"]
    for name, defaults in CLASS_DEFAULTS.items():
        same = (defaults.encoder_spinning, defaults.decoder_spinning, defaults.runners_per_thread)
        assert same == (
            measured.encoder_spinning,
            measured.decoder_spinning,
            measured.runners_per_thread,
        ), name


def test_int8_preset_names_an_export_target():
    from models.optimize import X86_64, quantization_target

    assert quantization_target("x86_64") is X86_64
    assert {d.int8_preset for d in CLASS_DEFAULTS.values()} == {X86_64.name}
    assert choose(load_settings(Path("/nonexistent"), {}), machine="aarch64").int8_preset == (
        quantization_target("aarch64").name
    )
