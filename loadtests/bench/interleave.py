"""Interleaved rounds and median tables, shared by the generation and translation suites.

On a shared machine the load changes from one second to the next; running every contender once
per round, round after round, lets that noise hit all of them alike, and medians keep one bad
round from deciding a ratio.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Mapping
from typing import Any

Sample = dict[str, float]


def interleaved(contenders: Mapping[str, Callable[[], Sample]], rounds: int,
                warmup: bool = True) -> dict[str, list[Sample]]:
    """Call every contender once per round (after one uncounted warm-up call each)."""
    if warmup:
        for run in contenders.values():
            run()
    samples: dict[str, list[Sample]] = {name: [] for name in contenders}
    for round_index in range(rounds):
        for name, run in contenders.items():
            samples[name].append(run())
        print(f"  round {round_index + 1}/{rounds}: " + ", ".join(
            f"{name} {_headline(values[-1])}" for name, values in samples.items()), flush=True)
    return samples


def _headline(sample: Sample) -> str:
    key = next(iter(sample))
    return f"{sample[key]:.2f} {key}"


def median(samples: list[Sample], key: str) -> float:
    values = [s[key] for s in samples if key in s and s[key] == s[key]]  # NaN: not measured
    return statistics.median(values) if values else float("nan")


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f}"


def check(value: float, goal: float) -> tuple[float, float, bool]:
    return (round(value, 3), goal, bool(value >= goal))
