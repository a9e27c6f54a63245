"""BENCHMARKS.md keeps one column per CPU class (issue #21): a run files its goals under its own
class and the table shows every class's last run, so a run on an AVX2 EPYC does not erase what
an AMX Xeon measured."""

from __future__ import annotations

import json

from loadtests.bench import report


def results(cpu_class: str, date: str) -> dict:
    return {
        "machine": {
            "cpu_class": cpu_class,
            "cpu": f"CPU of class {cpu_class}",
            "cpu_flags": ["avx2"],
            "date": date,
            "load_average_before": [0.1, 0.1, 0.1],
        },
        "command": "python -m loadtests.bench.suite",
    }


def test_each_cpu_class_keeps_its_last_run(tmp_path):
    old = {"a ratio": (1.2, 1.0, True), "old goal (ms)": (3.0, 1.0, False)}
    report.record_cpu_class(results("amx", "2026-11-27 03:57 UTC"), old, tmp_path)
    first = {"a ratio": (0.8, 1.0, False), "new goal": (2.0, 1.5, True)}
    report.record_cpu_class(results("avx2", "2026-12-01 10:00 UTC"), first, tmp_path)
    latest = {"a ratio": (0.95, 1.0, False), "new goal": (1.7, 1.5, True)}
    text = "\n".join(
        report._by_cpu_class_section(results("avx2", "2026-12-08 00:10 UTC"), latest, tmp_path)
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["amx.json", "avx2.json"]
    assert json.loads((tmp_path / "avx2.json").read_text())["checks"]["a ratio"][0] == 0.95
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()}
    header = next(line for line in text.splitlines() if line.startswith("| goal"))
    assert "amx (2026-11-27" in header and "avx2 (2026-12-08" in header
    assert rows["a ratio"] == "| a ratio | ≥ 1 | 1.2 | **0.95** |"
    assert rows["new goal"] == "| new goal | ≥ 1.5 | — | 1.7 |"
    assert rows["old goal (ms)"] == "| old goal (ms) | ≤ 1 | **3** | — |"
