"""The host around a run: its facts before and after, its load average every 2 s and the
server workers' RSS growth. A shared 2-core machine moves the numbers; these say how much."""

from __future__ import annotations

import os
import platform
import threading
import time
from pathlib import Path
from typing import Any


def facts() -> dict[str, Any]:
    """CPUs, platform, Python and the 1-minute load average, for meta.json."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_1m": round(load[0], 2),
    }


def sample_loadavg(path: Path, stop: threading.Event) -> None:
    """Every 2 s, the host's 1-minute load average: the report shows it per step, since other
    jobs on a shared machine move the knee."""
    with path.open("w", encoding="utf-8") as f:
        f.write("time,loadavg_1m\n")
        while not stop.wait(2.0):
            f.write(f"{time.time():.1f},{os.getloadavg()[0]:.2f}\n")
            f.flush()


def worker_rss(path: Path) -> list[dict]:
    """Worker RSS growth from minute 2 to the end of the run (loadtests/worker_memory.py)."""
    from loadtests.worker_memory import rss_growth

    growth = [
        {
            "pid": g.pid,
            "start_mb": round(g.start_bytes / 2**20, 1),
            "end_mb": round(g.end_bytes / 2**20, 1),
            "growth": round(g.growth, 4),
            "samples": g.samples,
        }
        for g in rss_growth(path)
    ]
    for g in growth:
        print(
            f"loadtest: worker {g['pid']} RSS {g['start_mb']} MB at minute 2, "
            f"{g['end_mb']} MB at the end ({g['growth']:+.1%})",
            flush=True,
        )
    return growth
