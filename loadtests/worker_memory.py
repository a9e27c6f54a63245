"""Resident memory (RSS) of the service's worker processes over a load run: the soak's leak check.

The workers are the children of the `bentoml serve` process that run the service (BentoML starts
them as `python -m _bentoml_impl.worker.service ...`); they hold the models, so a leak shows up
there. A restarted worker has a new pid: growth is judged per pid, over the samples of each.
"""

from __future__ import annotations

import csv
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

WORKER_MARK = "_bentoml_impl.worker"


def worker_processes(server_pid: int) -> list[psutil.Process]:
    """The service's worker processes under the `bentoml serve` process `server_pid`."""
    try:
        children = psutil.Process(server_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    workers = []
    for child in children:
        try:
            if any(WORKER_MARK in part for part in child.cmdline()):
                workers.append(child)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return workers


def sample_rss(server_pid: int, path: Path, stop: threading.Event, every: float = 5.0) -> None:
    """Append `time,pid,rss_bytes` for every worker to `path` every `every` seconds until
    `stop` is set."""
    with Path(path).open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow(["time", "pid", "rss_bytes"])
        while True:
            now = time.time()
            for worker in worker_processes(server_pid):
                try:
                    out.writerow([f"{now:.1f}", worker.pid, worker.memory_info().rss])
                except psutil.NoSuchProcess:
                    continue
            f.flush()
            if stop.wait(every):
                return


def start_sampling(server_pid: int, path: Path, every: float = 5.0) -> threading.Event:
    """Sample in a daemon thread; set the returned event to stop."""
    stop = threading.Event()
    threading.Thread(target=sample_rss, args=(server_pid, path, stop, every), daemon=True).start()
    return stop


@dataclass(frozen=True)
class RssGrowth:
    pid: int
    start_bytes: int  # median of the first minute of samples after `after_s`
    end_bytes: int  # median of the last minute of samples
    samples: int

    @property
    def growth(self) -> float:
        return self.end_bytes / self.start_bytes - 1.0


def rss_growth(path: Path, after_s: float = 120.0, window_s: float = 60.0) -> list[RssGrowth]:
    """Per worker: RSS at the end of the run against RSS `after_s` seconds into it (medians of
    `window_s`-long windows, so one allocation burst does not decide)."""
    rows: dict[int, list[tuple[float, int]]] = {}
    with Path(path).open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            rows.setdefault(int(row["pid"]), []).append((float(row["time"]), int(row["rss_bytes"])))
    if not rows:
        return []
    t0 = min(t for samples in rows.values() for t, _ in samples)
    result = []
    for pid, samples in rows.items():
        later = [(t, rss) for t, rss in samples if t - t0 >= after_s]
        if len(later) < 2:
            continue
        first, last = later[0][0], later[-1][0]
        start = [rss for t, rss in later if t < first + window_s]
        end = [rss for t, rss in later if t > last - window_s]
        result.append(RssGrowth(pid, _median(start), _median(end), len(later)))
    return result


def _median(values: list[int]) -> int:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]
