"""The report's PNGs: throughput, latency and errors over time, and for a step ramp each
step's p95 against the offered rate with the knee marked. Matplotlib is imported only here and
only when plotting (Agg backend: no display on a server)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from loadtests.runner.metrics import AGGREGATE
from loadtests.runner.phases import Phase
from loadtests.runner.slo import task_slo

COLUMNS = 3  # panels per row of the per-task grids
History = dict[str, list[dict[str, Any]]]


def _rate_series(rows: list[dict[str, Any]], t0: float, window: float = 5.0):
    """(t, requests/s, error rate) over a trailing window, from cumulative counts."""
    ts = [r["t"] - t0 for r in rows]
    rates, errors = [], []
    j = 0
    for i, r in enumerate(rows):
        while ts[i] - ts[j] > window:
            j += 1
        span = ts[i] - ts[j]
        count = r["count"] - rows[j]["count"]
        fails = r["fails"] - rows[j]["fails"]
        rates.append(count / span if span > 0 else 0.0)
        errors.append(fails / count if count > 0 else 0.0)
    return ts, rates, errors


def _panels(plt, count: int, **kwargs):
    """A figure with one small panel per task, COLUMNS to a row; the unused ones hidden."""
    rows_n = max(1, math.ceil(count / COLUMNS))
    fig, axes = plt.subplots(rows_n, COLUMNS, figsize=(13, 2.8 * rows_n), squeeze=False, **kwargs)
    for k in range(count, rows_n * COLUMNS):
        axes[k // COLUMNS][k % COLUMNS].axis("off")
    return fig, [axes[k // COLUMNS][k % COLUMNS] for k in range(count)]


def _small_panel(ax, title: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_ylabel("ms", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def _save(plt, fig, out: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out / name, dpi=90)
    plt.close(fig)
    return name


def _throughput(plt, out: Path, history: History, t0: float, requests: list[str]) -> str:
    """Throughput per task + all requests, users on the right axis."""
    users_rows = history.get("Aggregated", [])
    fig, ax = plt.subplots(figsize=(11, 5.5))
    total: dict[float, float] = {}
    for name in requests:
        ts, rates, _ = _rate_series(history.get(name, []), t0)
        ax.plot(ts, rates, label=name, linewidth=1.2)
        for t, r in zip(ts, rates, strict=True):
            total[t] = total.get(t, 0.0) + r
    if total:
        keys = sorted(total)
        ax.plot(keys, [total[k] for k in keys], label=AGGREGATE, color="black", linewidth=2)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("requests/s (5 s window)")
    ax.set_title("Throughput per task")
    ax.grid(alpha=0.3)
    twin = ax.twinx()
    twin.step(
        [r["t"] - t0 for r in users_rows],
        [r["users"] for r in users_rows],
        where="post",
        color="grey",
        linestyle=":",
        label="users",
    )
    twin.set_ylabel("users (grey dotted)")
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    return _save(plt, fig, out, "throughput.png")


def _latency(
    plt, out: Path, history: History, t0: float, names: list[str], slo: dict[str, Any]
) -> str:
    """p50/p95/p99 per task, SLO p95 dashed."""
    fig, axes = _panels(plt, len(names), sharex=True)
    for k, (name, ax) in enumerate(zip(names, axes, strict=True)):
        # Before a name's first request its window percentiles read 0: leave those out.
        series = [r for r in history.get(name, []) if r["p50"] is not None and r["count"] > 0]
        ts = [r["t"] - t0 for r in series]
        for q, color in (("p50", "tab:green"), ("p95", "tab:orange"), ("p99", "tab:red")):
            ax.plot(ts, [r[q] for r in series], label=q, color=color, linewidth=1.1)
        limit = task_slo(slo, name).get("p95_ms")
        if limit:
            ax.axhline(
                float(limit), color="tab:orange", linestyle="--", linewidth=1, label="SLO p95"
            )
        _small_panel(ax, name)
        if k == 0:
            ax.legend(fontsize=7)
    fig.suptitle("Latency per task: p50/p95/p99 over Locust's 10 s window", fontsize=11)
    fig.supxlabel("seconds since start", fontsize=9)
    return _save(plt, fig, out, "latency.png")


def _errors(
    plt, out: Path, history: History, t0: float, requests: list[str], slo: dict[str, Any]
) -> str:
    """Error rate per task, the error budget dashed."""
    fig, ax = plt.subplots(figsize=(11, 4.5))
    any_failure = False
    for name in requests:
        rows = history.get(name, [])
        ts, _, errors = _rate_series(rows, t0)
        any_failure |= bool(rows) and rows[-1]["fails"] > 0
        ax.plot(ts, [e * 100 for e in errors], label=name, linewidth=1.2)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("failed requests, % (5 s window)")
    budget = slo["defaults"].get("max_error_rate")
    if budget is not None:
        ax.axhline(
            float(budget) * 100,
            color="tab:red",
            linestyle="--",
            linewidth=1,
            label="error budget (SLO)",
        )
    ax.set_title("Error rate per task" + ("" if any_failure else " (no failures)"))
    ax.set_ylim(bottom=0, top=max(1.0, ax.get_ylim()[1]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    return _save(plt, fig, out, "errors.png")


def _knee(
    plt,
    out: Path,
    names: list[str],
    slo: dict[str, Any],
    phases: list[Phase],
    rps_per_user: float,
    knee: dict[str, dict[str, Any]],
) -> str:
    """Step ramp: p95 per step against the offered rate, knee marked."""
    gated = [n for n in names if n in knee and n != AGGREGATE]
    fig, axes = _panels(plt, len(gated))
    offered = [p.users * rps_per_user for p in phases]
    for name, ax in zip(gated, axes, strict=True):
        p95 = [p.tasks[name].p95 if name in p.tasks else None for p in phases]
        ax.plot(
            offered,
            [v if v is not None else float("nan") for v in p95],
            "o-",
            color="tab:orange",
            label="p95 of the step",
        )
        limit = float(task_slo(slo, name)["p95_ms"])
        ax.axhline(limit, color="tab:orange", linestyle="--", linewidth=1, label="SLO p95")
        index = knee[name]["knee"]
        if index is not None:
            ax.axvline(
                offered[index],
                color="tab:green",
                linewidth=1.2,
                label=f"knee {offered[index]:g} req/s offered",
            )
        top = max([limit, *[v for v in p95 if v is not None]])
        ax.set_ylim(0, top * 1.15)
        _small_panel(ax, name)
        ax.legend(fontsize=6)
    fig.suptitle(
        "Step ramp: p95 of each step against the offered rate (users x req/s per user, all tasks)",
        fontsize=11,
    )
    return _save(plt, fig, out, "knee.png")


def plots(
    out: Path,
    history: History,
    t0: float,
    ttft: set[str],
    names: list[str],
    slo: dict[str, Any],
    phases: list[Phase],
    shape: str,
    rps_per_user: float,
    knee: dict[str, dict[str, Any]],
) -> list[str]:
    """Write the PNGs into `out`; returns their file names in the order the summary shows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    requests = [n for n in names if n not in ttft]
    written = [
        _throughput(plt, out, history, t0, requests),
        _latency(plt, out, history, t0, names, slo),
        _errors(plt, out, history, t0, requests, slo),
    ]
    if shape == "step" and len(phases) >= 2:
        written.append(_knee(plt, out, names, slo, phases, rps_per_user, knee))
    return written
