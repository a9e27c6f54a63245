"""summary.md: the one page a reader opens first. Each section is its own function, written
only when the run's shape has something to say there (a knee table only for a step ramp...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loadtests.runner.metrics import AGGREGATE, Metrics
from loadtests.runner.paths import relative
from loadtests.runner.phases import Phase
from loadtests.runner.slo import Gate, phase_metrics, task_slo
from loadtests.runner.user_classes import request_type


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.0f}" if v >= 10 else f"{v:.1f}"


def _header(
    meta: dict[str, Any],
    slo: dict[str, Any],
    slo_path: Path | None,
    results: list[Gate],
    shape: str,
    rps_per_user: float,
) -> list[str]:
    failed = [g for g in results if not g.passed]
    lines = [
        f"# Load test: {shape}" + (f", {meta['serve']} profile" if meta.get("serve") else ""),
        "",
    ]
    if results:
        lines.append(
            "**Result: all SLO gates met.**"
            if not failed
            else f"**Result: {len(failed)} SLO gate(s) failed.**"
        )
    else:
        lines.append("**Result: SLO gates not applied.**")
    before, after = meta.get("machine_before", {}), meta.get("machine_after", {})
    return lines + [
        "",
        f"- Command: `{meta.get('command', '?')}`",
        f"- Target: {meta.get('host', '?')}"
        + (f", gRPC {meta['grpc']}" if meta.get("grpc") else ", no gRPC"),
        f"- Shape {shape}: {meta.get('duration_s', '?')} s, up to {meta.get('users', '?')} users "
        f"at {rps_per_user:g} req/s each (closed loop: a user waits for its answer)"
        + (f", after {meta['warmup_s']:g} s of unmeasured warm-up" if meta.get("warmup_s") else "")
        + (f", {meta['workers']} Locust workers" if meta.get("workers") else ""),
        f"- User classes: {', '.join(meta.get('classes', []))}",
        "- Models: "
        + ", ".join(
            f"{m['name']} ({m['task']})" for m in meta.get("models", []) if m.get("default")
        ),
        f"- Machine: {before.get('cpus', '?')} CPUs, {before.get('platform', '?')}; load average "
        f"{before.get('loadavg_1m', '?')} before, {after.get('loadavg_1m', '?')} after; the "
        "load generator (Locust) shares these cores with the server",
        f"- Started {meta.get('started', '?')}; Locust {meta.get('locust_version', '?')}; SLO file "
        f"`{relative(slo_path)}` version {slo.get('version', '?')}",
    ]


def _per_request(
    slo: dict[str, Any],
    tasks: dict[str, Metrics],
    total: Metrics,
    names: list[str],
    ttft: set[str],
    exact: bool,
) -> list[str]:
    lines = [
        "",
        "## Per request" + ("" if exact else " (Locust's rounded percentiles)"),
        "",
        "| request | type | requests | failed | req/s | p50 ms | p95 ms | p99 ms | SLO p95 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        m = tasks.get(name)
        if m is None:
            continue
        limit = task_slo(slo, name).get("p95_ms")
        kind = "TTFT" if name in ttft else ""
        lines.append(
            f"| {name} | {kind or request_type(name)} | {m.requests} | "
            f"{m.failures} ({m.error_rate:.1%}) | {m.rps:.2f} | {_ms(m.p50)} | "
            f"{_ms(m.p95)} | {_ms(m.p99)} | {limit if limit is not None else '—'} |"
        )
    lines.append(
        f"| **{AGGREGATE}** | | {total.requests} | {total.failures} "
        f"({total.error_rate:.1%}) | {total.rps:.2f} | {_ms(total.p50)} | "
        f"{_ms(total.p95)} | {_ms(total.p99)} | |"
    )
    return lines


def _gates(results: list[Gate], shape: str) -> list[str]:
    if not results:
        return []
    where = (
        "judged at each task's knee step, or the first step when there is none"
        if shape == "step"
        else "judged over the whole run"
    )
    lines = ["", f"## SLO gates, {where}", ""]
    for gate in results:
        mark = "skip" if gate.skipped else ("pass" if gate.passed else "**FAIL**")
        lines.append(f"- {mark}: {gate.describe()}")
    return lines


def _knees(
    slo: dict[str, Any], phases: list[Phase], knee: dict[str, dict[str, Any]], rps_per_user: float
) -> list[str]:
    lines = [
        "",
        "## Knee per task",
        "",
        "The knee: the highest step of the ramp (counting up from the first) whose "
        "p95 stayed under the task's SLO with errors within budget. Offered rate = "
        "users x req/s per user, all tasks together; the task's own rate is what it "
        "measured in that step.",
        "",
        "| request | SLO p95 ms | knee: users (offered req/s) | task req/s at knee | "
        "p95 at knee ms | next step: users, p95 ms, errors |",
        "|---|---:|---|---:|---:|---|",
    ]
    for name, k in knee.items():
        limit = task_slo(slo, name).get("p95_ms", "—") if name != AGGREGATE else "each"
        index, miss = k["knee"], k["first_miss"]
        m = phase_metrics(phases[index], name) if index is not None else None
        nxt = phase_metrics(phases[miss], name) if miss is not None else None
        knee_text = (
            f"{phases[index].users} ({phases[index].users * rps_per_user:g})"
            if index is not None
            else "none: the first step missed"
        )
        next_text = (
            f"{phases[miss].users}, {_ms(nxt.p95)}, {nxt.error_rate:.1%}"
            if miss is not None and nxt is not None
            else "— (never missed: raise --users)"
        )
        label = f"**{name}** (every gated task)" if name == AGGREGATE else name
        lines.append(
            f"| {label} | {limit} | {knee_text} | "
            f"{m.rps if m else 0:.2f} | {_ms(m.p95) if m else '—'} | {next_text} |"
        )
    return lines


def _phases(
    slo: dict[str, Any], phases: list[Phase], names: list[str], ttft: set[str]
) -> list[str]:
    gated = [n for n in names if n not in ttft or "p95_ms" in task_slo(slo, n)]
    lines = [
        "",
        "## Phases (constant user count; first fifth of each, at most 5 s, "
        "left out; host load: the machine's mean 1-minute load average, 2 cores)",
        "",
        "| users | window s | host load | req/s | errors | "
        + " | ".join(f"{n} p95" for n in gated)
        + " |",
        "|---:|---|---:|---:|---:|" + "---:|" * len(gated),
    ]
    for p in phases:
        load = "—" if p.loadavg is None else f"{p.loadavg:.1f}"
        lines.append(
            f"| {p.users} | {p.start:.0f}–{p.end:.0f} | {load} | "
            f"{p.total.rps:.1f} | {p.total.error_rate:.1%} | "
            + " | ".join(_ms(p.tasks[n].p95) if n in p.tasks else "—" for n in gated)
            + " |"
        )
    return lines


def _drift(drift: list[Phase], names: list[str]) -> list[str]:
    first, last = drift
    lines = [
        "",
        f"## Drift: first vs last tenth of the hold at {first.users} users "
        f"({first.start:.0f}–{first.end:.0f} s vs {last.start:.0f}–{last.end:.0f} s)",
        "",
        "| request | req/s first | req/s last | p95 first ms | p95 last ms | "
        "errors first | errors last |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        a, b = first.tasks.get(name), last.tasks.get(name)
        if a is None or b is None:
            continue
        lines.append(
            f"| {name} | {a.rps:.2f} | {b.rps:.2f} | {_ms(a.p95)} | {_ms(b.p95)} "
            f"| {a.error_rate:.1%} | {b.error_rate:.1%} |"
        )
    return lines


def summary(
    meta: dict[str, Any],
    slo: dict[str, Any],
    slo_path: Path | None,
    tasks: dict[str, Metrics],
    total: Metrics,
    phases: list[Phase],
    knee: dict[str, dict[str, Any]],
    names: list[str],
    ttft: set[str],
    results: list[Gate],
    written: list[str],
    exact: bool,
    shape: str,
    rps_per_user: float,
    drift: list[Phase],
) -> str:
    """The Markdown of summary.md."""
    lines = _header(meta, slo, slo_path, results, shape, rps_per_user)
    lines += _per_request(slo, tasks, total, names, ttft, exact)
    lines += _gates(results, shape)
    if shape == "step" and phases:
        lines += _knees(slo, phases, knee, rps_per_user)
    if shape in ("step", "spike") and phases:
        lines += _phases(slo, phases, names, ttft)
    if drift:
        lines += _drift(drift, names)
    lines += ["", "## Plots", ""] + [f"![{Path(w).stem}]({w})" for w in written]
    lines.append("")
    return "\n".join(lines)
