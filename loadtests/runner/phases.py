"""Phases: stretches of constant user count (a step of the ramp, the spike, the soak's hold),
each measured without its settling time, so that one step's numbers are not the ramp's."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loadtests.runner.metrics import Metrics, from_samples, history_delta, name_mask, summed


@dataclass
class Phase:
    """A stretch of constant user count (a step of the ramp, the spike, ...)."""

    users: int
    start: float  # seconds since the run started: measured window (settling time excluded)
    end: float
    tasks: dict[str, Metrics] = field(default_factory=dict)
    total: Metrics = field(default_factory=Metrics)
    loadavg: float | None = None  # the host's mean 1-minute load average in the window


def find_phases(
    history: dict[str, list[dict[str, Any]]], min_seconds: float = 4.0
) -> tuple[float, list[Phase]]:
    """Stretches of constant user count in the history (steps, spike, plateaus): returns the
    run's start time and the phases, each with its settling time (the first fifth, at most
    5 s) cut off."""
    rows = history.get("Aggregated", [])
    if not rows:
        return 0.0, []
    t0 = rows[0]["t"]
    phases: list[Phase] = []
    i = 0
    while i < len(rows):
        j = i
        while j + 1 < len(rows) and rows[j + 1]["users"] == rows[i]["users"]:
            j += 1
        # The second in which the count changes belongs to neither side.
        start, end = rows[i]["t"] - t0, rows[j]["t"] - t0
        if rows[i]["users"] > 0 and end - start >= min_seconds:
            settle = min(5.0, 0.2 * (end - start))
            phases.append(Phase(users=rows[i]["users"], start=start + settle, end=end))
        i = j + 1
    return t0, phases


def fill_phases(
    phases: list[Phase],
    t0: float,
    names: list[str],
    ttft: set[str],
    samples: dict[str, Any] | None,
    history: dict[str, list[dict[str, Any]]],
    loadavg: list[tuple[float, float]] | None = None,
) -> None:
    """Measure each phase's window: per request name, all requests, the host's load."""
    for phase in phases:
        seconds = phase.end - phase.start
        inside = [v for t, v in loadavg or [] if phase.start <= t - t0 < phase.end]
        phase.loadavg = sum(inside) / len(inside) if inside else None
        if samples is not None:
            rel = samples["t"] - t0
            window = (rel >= phase.start) & (rel < phase.end)
            for name in names:
                phase.tasks[name] = from_samples(
                    samples, window & (samples["name"] == name), seconds
                )
            phase.total = from_samples(samples, window & ~name_mask(samples, sorted(ttft)), seconds)
        else:
            for name in names:
                phase.tasks[name] = history_delta(history.get(name, []), t0, phase.start, phase.end)
            phase.total = summed(phase.tasks[n] for n in names if n not in ttft)


def drift_windows(phases: list[Phase]) -> list[Phase]:
    """A soak's first and last tenth of its longest phase (the hold), unmeasured: comparing
    them shows whether latency or errors crept up while the load stayed the same."""
    if not phases:
        return []
    hold = max(phases, key=lambda p: p.end - p.start)
    tenth = (hold.end - hold.start) / 10
    return [
        Phase(hold.users, hold.start, hold.start + tenth),
        Phase(hold.users, hold.end - tenth, hold.end),
    ]
