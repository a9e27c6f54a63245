"""Interleaved rounds, median tables, cached model folders and the command line shared by the
generation and translation suites.

On a shared machine the load changes from one second to the next; running every contender once
per round, round after round, lets that noise hit all of them alike, and medians keep one bad
round from deciding a ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

Sample = dict[str, float]
# Where the suites write their JSON records unless told otherwise.
RESULTS = Path(__file__).resolve().parents[2] / ".cache" / "bench" / "results"


def interleaved(
    contenders: Mapping[str, Callable[[], Sample]], rounds: int, warmup: bool = True
) -> dict[str, list[Sample]]:
    """Call every contender once per round (after one uncounted warm-up call each)."""
    if warmup:
        for run in contenders.values():
            run()
    samples: dict[str, list[Sample]] = {name: [] for name in contenders}
    for round_index in range(rounds):
        for name, run in contenders.items():
            samples[name].append(run())
        print(
            f"  round {round_index + 1}/{rounds}: "
            + ", ".join(f"{name} {_headline(values[-1])}" for name, values in samples.items()),
            flush=True,
        )
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


def build_once(folder: Path, make: Callable[[Path], Any], marker: str = "model.onnx") -> Path:
    """`folder`, made by `make(partial)` unless it holds `marker` already; building into a
    `.partial` folder and renaming keeps an interrupted run from leaving one that looks built."""
    if not (folder / marker).exists():
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        make(partial)
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
    return folder


def save_record(out_dir: Path, file_name: str, **record: Any) -> None:
    """The suite's raw samples and checks as JSON beside the report (`make bench` keeps them)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / file_name).write_text(json.dumps(record, indent=2))


SuiteRun = Callable[[bool, Path, int | None, int | None], dict[str, Any]]


def suite_main(run: SuiteRun, description: str, argv: list[str] | None = None) -> int:
    """The command line the generation and translation suites share: run, print the report
    section and one line per goal."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = run(args.quick, args.out, args.rounds, args.threads)
    print(result["markdown"])
    for name, (value, goal, met) in result["checks"].items():
        print(f"{'ok  ' if met else 'MISS'} {name}: {value} (goal {goal})")
    return 0
