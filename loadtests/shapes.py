"""Load shapes for the locustfile, selected by name: steady, step (step ramp), spike, soak.

The locustfile exposes exactly one of these (Locust runs the first shape class it finds), chosen
by `LOADTEST_SHAPE`; `python -m loadtests run --shape NAME` sets it. Every shape reads its size
from the environment, so Locust's master and its workers agree on it:

    LOADTEST_USERS       peak number of users (default 10)
    LOADTEST_DURATION    seconds the shape runs, ramps included (default 60)
    LOADTEST_STEPS       step: number of steps (default: one per 30 s, 3 to 20)
    LOADTEST_START_USERS step: users of the first step (default users/steps); the steps rise
                         evenly from there to LOADTEST_USERS
    LOADTEST_SPAWN_RATE  users started per second when the count changes (default: the shape's)

Every user paces itself (`constant_throughput`, `LOADTEST_RPS_PER_USER` requests/s, default 1),
so a number of users is an offered request rate: the step ramp's steps are rate steps.
"""

from __future__ import annotations

import math
import os

from locust import LoadTestShape


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


def step_plan(
    users: int, duration: float, steps: int = 0, start: int = 0
) -> list[tuple[float, int]]:
    """[(start_s, users)] of the step ramp: `steps` equally long steps, the users rising evenly
    from `start` (default users/steps) to `users`."""
    if steps <= 0:
        steps = min(20, max(3, int(duration // 30)))
    steps = max(1, min(steps, users))
    first = start if start > 0 else max(1, math.ceil(users / steps))
    first = min(first, users)
    length = duration / steps
    if steps == 1:
        return [(0.0, users)]
    return [(i * length, round(first + (users - first) * i / (steps - 1))) for i in range(steps)]


class _Shape(LoadTestShape):
    abstract = True
    name = ""

    def __init__(self) -> None:
        super().__init__()
        self.users = max(1, _env_int("LOADTEST_USERS", 10))
        self.duration = max(1.0, _env_float("LOADTEST_DURATION", 60.0))
        self.spawn_rate = _env_float("LOADTEST_SPAWN_RATE", 0.0)

    def rate(self, default: float) -> float:
        return self.spawn_rate if self.spawn_rate > 0 else max(1.0, default)


class SteadyShape(_Shape):
    """Ramp to LOADTEST_USERS over a tenth of the run (at most 10 s), then hold."""

    name = "steady"

    def tick(self):
        t = self.get_run_time()
        if t >= self.duration:
            return None
        ramp = min(10.0, self.duration / 10)
        return self.users, self.rate(self.users / max(ramp, 1.0))


class StepShape(_Shape):
    """Step ramp: LOADTEST_STEPS equally long steps, users rising evenly from
    LOADTEST_START_USERS to LOADTEST_USERS; the report finds the knee (the last step whose p95
    met the SLO)."""

    name = "step"

    def __init__(self) -> None:
        super().__init__()
        self.plan = step_plan(
            self.users,
            self.duration,
            _env_int("LOADTEST_STEPS", 0),
            _env_int("LOADTEST_START_USERS", 0),
        )

    def tick(self):
        t = self.get_run_time()
        if t >= self.duration:
            return None
        users = next(u for start, u in reversed(self.plan) if t >= start)
        # Reach each step within about a second: the step's window should be all at its rate.
        return users, self.rate(self.users)


class SpikeShape(_Shape):
    """A quarter of LOADTEST_USERS, a sudden spike to all of them from 40% to 55% of the run,
    then back: shows queueing, shedding (429/503) and recovery."""

    name = "spike"

    def tick(self):
        t = self.get_run_time()
        if t >= self.duration:
            return None
        base = max(1, self.users // 4)
        if 0.40 * self.duration <= t < 0.55 * self.duration:
            return self.users, self.rate(self.users)
        return base, self.rate(self.users)


class SoakShape(_Shape):
    """Ramp to LOADTEST_USERS over 5% of the run (at most 60 s) and hold for the rest; meant for
    long runs (an hour or more): the report compares the first and last tenth (drift, leaks)."""

    name = "soak"

    def tick(self):
        t = self.get_run_time()
        if t >= self.duration:
            return None
        ramp = min(60.0, self.duration / 20)
        return self.users, self.rate(self.users / max(ramp, 1.0))


SHAPES: dict[str, type[_Shape]] = {
    cls.name: cls for cls in (SteadyShape, StepShape, SpikeShape, SoakShape)
}


def get(name: str) -> type[_Shape]:
    try:
        return SHAPES[name]
    except KeyError:
        raise ValueError(f"unknown shape {name!r}; one of {', '.join(SHAPES)}") from None
