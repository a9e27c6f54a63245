"""A run's report from its folder: read the CSVs, measure the run and its phases, apply the SLO
gates, then write the plots, summary.md and report.json. Works on any finished run folder, so
`python -m loadtests report DIR` can rebuild it after the SLO file changed."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from loadtests.runner.csv_files import read_history, read_loadavg, read_samples, read_stats
from loadtests.runner.metrics import overall_metrics
from loadtests.runner.phases import drift_windows, fill_phases, find_phases
from loadtests.runner.plots import plots
from loadtests.runner.slo import gates as slo_gates
from loadtests.runner.slo import knees, load_slo
from loadtests.runner.summary import summary


def report(
    out: Path, slo_path: Path | None, gates: bool = True, overrides: dict[str, Any] | None = None
) -> int:
    """Write the report into `out`; exit status 0 (gates met), 1 (a gate failed), 2 (no
    requests were made)."""
    meta_path = out / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta.update({k: v for k, v in (overrides or {}).items() if v is not None})
    shape = meta.get("shape", "steady")
    rps_per_user = float(meta.get("rps_per_user", 1.0))
    slo = load_slo(slo_path)
    stats = read_stats(out / "locust_stats.csv")
    history = read_history(out / "locust_stats_history.csv")
    samples = read_samples(out)
    types = {name: row["type"] for name, row in stats.items()}
    if samples is not None:
        types.update(samples["types"])
    names = sorted(types, key=lambda n: (n.replace(" TTFT", "~"), n))
    ttft = {n for n, t in types.items() if t == "TTFT"}
    t0, phases = find_phases(history)
    aggregated = history.get("Aggregated", [])
    span = (aggregated[0]["t"], aggregated[-1]["t"] + 1.0) if aggregated else None
    tasks, total = overall_metrics(stats, samples, span)
    if total.requests == 0:
        print("loadtest: no requests were made", file=sys.stderr)
        return 2
    fill_phases(phases, t0, names, ttft, samples, history, read_loadavg(out / "loadavg.csv"))
    knee = knees(phases, slo, names) if shape == "step" else {}
    drift = drift_windows(phases) if shape == "soak" else []
    fill_phases(drift, t0, names, ttft, samples, history)

    results = slo_gates(slo, shape, phases, knee, tasks, total) if gates else []
    failed = [g for g in results if not g.passed]

    written = plots(out, history, t0, ttft, names, slo, phases, shape, rps_per_user, knee)
    (out / "summary.md").write_text(
        summary(
            meta,
            slo,
            slo_path,
            tasks,
            total,
            phases,
            knee,
            names,
            ttft,
            results,
            written,
            samples is not None,
            shape,
            rps_per_user,
            drift,
        )
    )
    (out / "report.json").write_text(
        json.dumps(
            {
                "shape": shape,
                "passed": not failed,
                "tasks": {n: vars(m) for n, m in tasks.items()},
                "total": vars(total),
                "phases": [
                    {
                        "users": p.users,
                        "start": p.start,
                        "end": p.end,
                        "loadavg": p.loadavg,
                        "total": vars(p.total),
                        "tasks": {n: vars(m) for n, m in p.tasks.items()},
                    }
                    for p in phases
                ],
                "knee": knee,
                "gates": [vars(g) for g in results],
            },
            indent=2,
            default=str,
        )
    )

    for gate in failed:
        print(f"SLO gate FAILED: {gate.describe()}")
    verdict = (
        "SLO gates not applied"
        if not gates
        else "all SLO gates met"
        if not failed
        else f"{len(failed)} SLO gate(s) failed"
    )
    print(f"loadtest: report in {out} ({verdict})")
    return 1 if failed else 0
