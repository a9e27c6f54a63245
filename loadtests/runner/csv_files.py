"""Reading a run's CSV files: Locust's statistics and history, the raw samples the locustfile
writes (one line per request) and the host's load average. Parsing lives here so that the
analysis works on plain dicts and arrays."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any


def _num(value: str) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def read_stats(path: Path) -> dict[str, dict[str, Any]]:
    """locust_stats.csv -> {name: {"type", "requests", "failures", "rps", "p50", "p95", ...}}."""
    rows: dict[str, dict[str, Any]] = {}
    with path.open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["Name"] == "Aggregated":
                continue
            rows[row["Name"]] = {
                "type": row["Type"],
                "requests": int(row["Request Count"]),
                "failures": int(row["Failure Count"]),
                "rps": _num(row["Requests/s"]) or 0.0,
                "p50": _num(row["50%"]),
                "p95": _num(row["95%"]),
                "p99": _num(row["99%"]),
            }
    return rows


def read_history(path: Path) -> dict[str, list[dict[str, Any]]]:
    """locust_stats_history.csv -> {name: [{"t", "users", "count", "fails", "p50", ...}]}, with
    `t` the timestamp; "Aggregated" is kept under that name."""
    series: dict[str, list[dict[str, Any]]] = {}
    if not path.exists():
        return series
    with path.open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            series.setdefault(row["Name"], []).append(
                {
                    "t": float(row["Timestamp"]),
                    "users": int(row["User Count"]),
                    "type": row["Type"],
                    "count": int(row["Total Request Count"]),
                    "fails": int(row["Total Failure Count"]),
                    "p50": _num(row["50%"]),
                    "p95": _num(row["95%"]),
                    "p99": _num(row["99%"]),
                }
            )
    return series


def read_samples(folder: Path) -> dict[str, Any] | None:
    """samples-*.csv (one line per request) -> {"t", "ms", "ok", "name"[, "type"]} arrays."""
    import numpy as np

    files = sorted(folder.glob("samples-*.csv"))
    if not files:
        return None
    t, ms, ok, names, types = [], [], [], [], {}
    for path in files:
        with path.open(encoding="utf-8") as f:
            for row in csv.DictReader(f):
                try:
                    when, took = float(row["time"]), float(row["ms"])
                except (KeyError, TypeError, ValueError):
                    continue  # a line cut short by a killed process
                t.append(when)
                ms.append(took)
                ok.append(row["ok"] == "1")
                names.append(row["name"])
                types[row["name"]] = row["type"]
    if not t:
        return None
    return {
        "t": np.array(t),
        "ms": np.array(ms),
        "ok": np.array(ok, dtype=bool),
        "name": np.array(names, dtype=object),
        "types": types,
    }


def read_loadavg(path: Path) -> list[tuple[float, float]]:
    """loadavg.csv (written during the run) -> [(time, 1-minute load average)]."""
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as f:
        return [(float(r["time"]), float(r["loadavg_1m"])) for r in csv.DictReader(f)]
