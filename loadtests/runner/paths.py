"""Where the runner finds the locustfile and the SLO file, and where its reports go by default:
one place, so that every module agrees on the repository root."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
DEFAULT_SLO = ROOT / "loadtests" / "slo.yaml"


def default_out(shape: str) -> Path:
    """A fresh report folder per run, named by shape and start time."""
    return ROOT / "reports" / "loadtest" / f"{shape}-{datetime.now():%Y%m%d-%H%M%S}"


def relative(path: Path | None) -> str:
    """`path` relative to the repository when inside it (reports stay readable when moved)."""
    if path is None:
        return "none"
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)
