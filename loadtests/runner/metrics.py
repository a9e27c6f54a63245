"""Request metrics over a span of time, exact from the raw samples when the run has them, else
from Locust's rounded and windowed figures (a run from elsewhere, e.g. docker-compose)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

AGGREGATE = "all requests"  # every request but the TTFT events (which are not requests)


@dataclass
class Metrics:
    """One request name over a span of time."""

    requests: int = 0
    failures: int = 0
    rps: float = 0.0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    exact: bool = True  # from raw samples (else Locust's rounded/windowed figures)

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


def summed(parts: Iterable[Metrics]) -> Metrics:
    """Counts and rates added up; no percentiles (they do not add)."""
    parts = list(parts)
    return Metrics(
        sum(m.requests for m in parts),
        sum(m.failures for m in parts),
        sum(m.rps for m in parts),
        exact=False,
    )


def _percentile(values, q: float) -> float | None:
    import numpy as np

    if len(values) == 0:
        return None
    return float(np.percentile(values, q, method="inverted_cdf"))  # nearest rank


def from_samples(samples: dict[str, Any], mask, seconds: float) -> Metrics:
    """The samples selected by `mask`, over `seconds`."""
    ms, ok = samples["ms"][mask], samples["ok"][mask]
    return Metrics(
        requests=int(len(ms)),
        failures=int((~ok).sum()),
        rps=len(ms) / seconds if seconds > 0 else 0.0,
        p50=_percentile(ms, 50),
        p95=_percentile(ms, 95),
        p99=_percentile(ms, 99),
    )


def name_mask(samples: dict[str, Any], names: list[str]):
    """The samples whose request name is one of `names`."""
    import numpy as np

    return np.isin(samples["name"], names) if names else np.zeros(len(samples["name"]), bool)


def overall_metrics(
    stats: dict[str, dict[str, Any]],
    samples: dict[str, Any] | None,
    span: tuple[float, float] | None,
) -> tuple[dict[str, Metrics], Metrics]:
    """Whole-run metrics per request name and for all requests (TTFT events excluded)."""
    types = {name: row["type"] for name, row in stats.items()}
    tasks: dict[str, Metrics] = {}
    if samples is not None:
        start, end = span or (float(samples["t"].min()), float(samples["t"].max()))
        seconds = max(end - start, 1e-9)
        for name in sorted(set(samples["name"])):
            tasks[name] = from_samples(samples, samples["name"] == name, seconds)
        ttft = [n for n in tasks if samples["types"].get(n) == "TTFT"]
        total = from_samples(samples, ~name_mask(samples, ttft), seconds)
    else:
        for name, row in stats.items():
            tasks[name] = Metrics(
                row["requests"],
                row["failures"],
                row["rps"],
                row["p50"],
                row["p95"],
                row["p99"],
                exact=False,
            )
        total = summed(m for n, m in tasks.items() if types.get(n) != "TTFT")
    return tasks, total


def history_delta(rows: list[dict[str, Any]], t0: float, start: float, end: float) -> Metrics:
    """Metrics of one name over [start, end) from the cumulative history (p95: Locust's 10 s
    window at the end of the span)."""
    before = [r for r in rows if r["t"] - t0 <= start]
    inside = [r for r in rows if r["t"] - t0 <= end]
    if not inside:
        return Metrics(exact=False)
    first = before[-1] if before else {"count": 0, "fails": 0}
    last = inside[-1]
    count, fails = last["count"] - first["count"], last["fails"] - first["fails"]
    return Metrics(
        count,
        fails,
        count / max(end - start, 1e-9),
        last["p50"],
        last["p95"],
        last["p99"],
        exact=False,
    )
