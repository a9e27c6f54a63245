"""Reading the project's lock files (requirements/*.txt, written by `make lock`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
DEV_LOCK = ROOT / "requirements" / "dev.txt"
SERVING_LOCK = ROOT / "requirements" / "serving.txt"
SERVING_TESTS_LOCK = ROOT / "requirements" / "serving-tests.txt"
EXPORT_LOCK = ROOT / "requirements" / "export.txt"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Locked:
    """One pinned line of a lock: the requirement (name, `==` version, marker) and its hashes."""

    requirement: Requirement
    hashes: tuple[str, ...]

    @property
    def name(self) -> str:
        return canonical(self.requirement.name)

    @property
    def version(self) -> str:
        (spec,) = self.requirement.specifier
        return spec.version

    def applies(self, environment: dict[str, str] | None = None) -> bool:
        marker = self.requirement.marker
        return marker is None or marker.evaluate(environment)


def read_lock(path: Path) -> list[Locked]:
    """The lock's entries, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    entries = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        spec, *hashes = re.split(r"\s+--hash=", line)
        entries.append(Locked(Requirement(spec.strip()), tuple(h.strip() for h in hashes)))
    return entries


def pins(path: Path, environment: dict[str, str] | None = None) -> dict[str, str]:
    """name -> version of the entries whose marker holds in `environment` (default: here)."""
    return {e.name: e.version for e in read_lock(path) if e.applies(environment)}
