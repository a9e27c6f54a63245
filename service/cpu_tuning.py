"""The ORT settings a worker starts with, chosen from what its CPU offers, and why.

The same code scores very differently on the CPUs this service runs on (issue #21: a 2-core AVX2
EPYC against the AMX Xeon it was tuned on), so the worker states at start-up which CPU class it
found (models/cpu.py), what it chose for intra-op threads, spinning, encoder runners and the int8
preset, and whether each choice came from a setting or from the class. The log line and `/info`
show the same record.

No class has numbers of its own that differ yet: every class starts from the defaults measured
on the others, and `basis` says which choices were measured on that class and which are only
carried over. Explicit settings (service/config.py) always win.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass

from models.cpu import CLASS_FLAGS, cpu_class, cpu_flags, cpu_model
from service.config import Settings


@dataclass(frozen=True)
class ClassDefaults:
    """What a CPU class starts with when the settings leave a choice open."""

    encoder_spinning: bool  # encoder sessions' idle pool threads spin
    decoder_spinning: bool  # decode loops' sessions spin (they call ORT back to back)
    runners_per_thread: int  # encoder runners per intra-op thread
    int8_preset: str  # the int8 export preset for this CPU (models/optimize.py targets)
    basis: str  # where these numbers come from


# Every class starts from the same values today; `basis` says which of them were measured on it.
# Spinning: encoders sleeping gave +62 % requests/s at c=16 on an AMX Xeon (BENCHMARKS.md
# "Levers"). Runners: two 1-thread runs side by side beat one 2-thread session on the AMX Xeon
# (+8-17 % requests/s, "Third round") and on an AVX-512-VNNI EPYC in process (71.2 vs 38.2
# items/s not spinning, 63.0 spinning; loadtests/results/memory-2026-12-07). int8: the 7-bit s8
# preset is as accurate and as fast as the VNNI preset on that EPYC and exact on an emulated
# AVX2 CPU (models/results/int8-portability.md).
CLASS_DEFAULTS = {
    "amx": ClassDefaults(
        False, True, 1, "x86-64", "measured here: spinning, runners; int8 preset: as on VNNI"
    ),
    "avx512-vnni": ClassDefaults(
        False, True, 1, "x86-64", "measured here: runners, int8 preset; spinning: as on amx"
    ),
    "avx512": ClassDefaults(False, True, 1, "x86-64", "not measured here: as on amx and VNNI"),
    "avx2": ClassDefaults(
        False, True, 1, "x86-64", "measured here: int8 exactness (emulated); the rest as on amx"
    ),
}
_OTHER_X86 = ClassDefaults(False, True, 1, "x86-64", "not measured here: as on amx and VNNI")
_ARM = ClassDefaults(False, True, 1, "arm64", "not measured on ARM: as on amx")


@dataclass(frozen=True)
class CpuTuning:
    """What this worker runs ORT with, and where each value came from."""

    cpu_class: str
    cpu_model: str
    cores: int
    flags: list[str]
    threads: int
    encoder_spinning: bool
    decoder_spinning: bool
    encoder_runners: int
    int8_preset: str
    basis: str
    from_settings: list[str]  # the choices an explicit setting made

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        settings = ", ".join(self.from_settings) or "none"
        return (
            f"cpu class {self.cpu_class} ({self.cpu_model}, {self.cores} cores): "
            f"{self.threads} intra-op threads, encoder runners {self.encoder_runners}, spinning "
            f"encoders {'on' if self.encoder_spinning else 'off'} / decoders "
            f"{'on' if self.decoder_spinning else 'off'}, int8 preset {self.int8_preset} "
            f"({self.basis}; from settings: {settings})"
        )


def choose(
    settings: Settings,
    flags: set[str] | None = None,
    cores: int | None = None,
    model: str | None = None,
    machine: str | None = None,
) -> CpuTuning:
    """The tuning for this CPU (or the one described), settings first."""
    flags = cpu_flags() if flags is None else flags
    cores = cores or max(1, len(os.sched_getaffinity(0)))
    name = cpu_class(flags)
    arm = (machine or platform.machine()).lower() in ("aarch64", "arm64")
    defaults = _ARM if arm else CLASS_DEFAULTS.get(name, _OTHER_X86)
    models = settings.models
    threads = models.threads or cores
    spinning = models.allow_spinning
    return CpuTuning(
        cpu_class=name,
        cpu_model=model or cpu_model(),
        cores=cores,
        flags=[flag for flag in CLASS_FLAGS if flag in flags],
        threads=threads,
        encoder_spinning=defaults.encoder_spinning if spinning is None else spinning,
        decoder_spinning=defaults.decoder_spinning if spinning is None else spinning,
        encoder_runners=models.encoder_runners or threads * defaults.runners_per_thread,
        int8_preset=defaults.int8_preset,
        basis=defaults.basis,
        from_settings=[
            key
            for key, chosen in (
                ("threads", models.threads),
                ("allow_spinning", spinning is not None),
                ("encoder_runners", models.encoder_runners),
            )
            if chosen
        ],
    )
