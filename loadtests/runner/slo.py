"""The SLO file (loadtests/slo.yaml), its gates and the knee of a step ramp.

A gate that fails says by how much, so that a red run tells what to look at; the knee is the
capacity within the SLO, the figure a step ramp exists to find."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from loadtests.runner.metrics import AGGREGATE, Metrics
from loadtests.runner.phases import Phase


@dataclass
class Gate:
    subject: str  # request name or AGGREGATE
    kind: str  # p95_ms | max_error_rate | min_rps
    limit: float
    value: float | None
    passed: bool
    skipped: str = ""

    def describe(self) -> str:
        if self.skipped:
            return f"{self.subject}: {self.kind} {self.limit:g} skipped ({self.skipped})"
        v, g = self.value or 0.0, self.limit
        if self.kind == "p95_ms":
            text = f"{self.subject}: p95 {v:.1f} ms, limit {g:g} ms"
            if not self.passed:
                text += f" (over by {v - g:.1f} ms, +{_pct(v - g, g)})"
        elif self.kind == "max_error_rate":
            text = f"{self.subject}: error rate {v:.2%}, limit {g:.2%}"
            if not self.passed:
                text += f" (over by {(v - g) * 100:.2f} points)"
        else:
            text = f"{self.subject}: throughput {v:.2f} req/s, minimum {g:g} req/s"
            if not self.passed:
                text += f" (short by {g - v:.2f} req/s, -{_pct(g - v, g)})"
        return text


def _pct(part: float, whole: float) -> str:
    return f"{part / whole:.0%}" if whole else "inf%"


def load_slo(path: Path | None) -> dict[str, Any]:
    """The SLO file with its three sections present (no file: no gates)."""
    if path is None or not path.exists():
        return {"tasks": {}, "aggregate": {}, "defaults": {}}
    slo = yaml.safe_load(path.read_text()) or {}
    slo.setdefault("tasks", {})
    slo.setdefault("aggregate", {})
    slo.setdefault("defaults", {})
    return slo


def task_slo(slo: dict[str, Any], name: str) -> dict[str, float]:
    """A request name's limits over the defaults; a name the file does not list has none."""
    if name == AGGREGATE:
        return {**slo["defaults"], **(slo["aggregate"] or {})}
    if name not in slo["tasks"]:
        return {}
    return {**slo["defaults"], **(slo["tasks"][name] or {})}


def check(subject: str, limits: dict[str, float], m: Metrics | None) -> list[Gate]:
    """One gate per limit; a subject without requests is skipped, not failed."""
    gates = []
    for kind in ("p95_ms", "max_error_rate", "min_rps"):
        if kind not in limits:
            continue
        limit = float(limits[kind])
        if m is None or m.requests == 0:
            gates.append(Gate(subject, kind, limit, None, True, skipped="no requests"))
            continue
        if kind == "p95_ms":
            value = m.p95 if m.p95 is not None else math.inf
            passed = value <= limit
        elif kind == "max_error_rate":
            value = m.error_rate
            passed = value <= limit
        else:
            value = m.rps
            passed = value >= limit
        gates.append(Gate(subject, kind, limit, value, passed))
    return gates


def phase_passes(m: Metrics | None, limits: dict[str, float]) -> bool:
    """A step is within the SLO when it has requests, its p95 is under the limit and its error
    rate within the budget."""
    if m is None or m.requests == 0 or m.p95 is None or "p95_ms" not in limits:
        return False
    return m.p95 <= float(limits["p95_ms"]) and m.error_rate <= float(
        limits.get("max_error_rate", 1.0)
    )


def knees(phases: list[Phase], slo: dict[str, Any], names: list[str]) -> dict[str, dict[str, Any]]:
    """Per request name (and AGGREGATE: every gated name at once), the knee of a step ramp:
    the last step, counting from the first, whose p95 met the SLO (error rate within budget)."""
    out: dict[str, dict[str, Any]] = {}
    gated = [n for n in names if "p95_ms" in task_slo(slo, n)]
    for name in [*gated, AGGREGATE]:
        knee, broke = None, None
        for index, phase in enumerate(phases):
            if name == AGGREGATE:
                ok = all(
                    phase_passes(phase.tasks.get(n), task_slo(slo, n))
                    for n in gated
                    if n in phase.tasks and phase.tasks[n].requests
                )
            else:
                m = phase.tasks.get(name)
                if m is None or m.requests == 0:
                    continue  # no request of this task in the step: no evidence either way
                ok = phase_passes(m, task_slo(slo, name))
            if ok:
                knee = index
            else:
                broke = index
                break
        out[name] = {"knee": knee, "first_miss": broke}
    return out


def phase_metrics(phase: Phase, name: str) -> Metrics | None:
    """A phase's metrics of one request name, or of all requests for AGGREGATE."""
    return phase.total if name == AGGREGATE else phase.tasks.get(name)


def gates(
    slo: dict[str, Any],
    shape: str,
    phases: list[Phase],
    knee: dict[str, dict[str, Any]],
    tasks: dict[str, Metrics],
    total: Metrics,
) -> list[Gate]:
    """Every gate of the SLO file, judged over the whole run; for a step ramp, at the knee step
    (the capacity within the SLO)."""
    results: list[Gate] = []
    for name in [*sorted(slo["tasks"]), AGGREGATE]:
        limits = task_slo(slo, name)
        if shape == "step" and phases:
            # The task's knee step (a task without a p95 gate: the service's); no knee:
            # the first step, which then fails.
            index = knee.get(name, knee[AGGREGATE])["knee"] or 0
            m = phase_metrics(phases[index], name)
        else:
            m = total if name == AGGREGATE else tasks.get(name)
        results.extend(check(name, limits, m))
    return results
