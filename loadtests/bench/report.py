"""BENCHMARKS.md and its plots, from one suite run's samples (medians of interleaved rounds)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from loadtests.bench import contenders

ASSETS = Path("docs") / "bench"
LEVERS = Path(__file__).with_name("levers.md")
# The last full run's goals on each CPU class it has run on (one JSON file per class), so a
# run on one machine kind does not erase what another kind measured.
BY_CPU_CLASS = ASSETS / "by-cpu-class"


def _bound(goal_name: str) -> str:
    """How a goal reads its target: at most for times and "(at most)" ratios, else at least."""
    return "≤" if goal_name.endswith(("(ms)", "(s)", "at most)")) else "≥"


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}"


def write(
    results: dict[str, Any],
    samples: Any,
    plan: list[Any],
    cfg: Any,
    checks: dict[str, tuple[float, float, bool]],
    extra: list[dict[str, Any]],
    out_dir: Path,
    lines: list[Any] | None = None,
) -> str:
    """Write `out_dir/BENCHMARKS.md` and `out_dir/docs/bench/*.png`; return the Markdown
    (`lines`: the encoder task lines, one table row each)."""
    plots = _plots(samples, plan, cfg, out_dir / ASSETS)
    machine = results["machine"]
    text = [
        "# Benchmarks",
        "",
        "Written by the benchmark suite (`loadtests/bench/suite.py`); do not edit by hand — rerun:",
        "",
        "```bash",
        results["command"] + "    # `make bench`" if not cfg.quick else results["command"],
        "```",
        "",
        f"- **Date**: {machine['date']}; suite wall time {results['elapsed_s'] / 60:.1f} min.",
        f"- **CPU**: {machine['cpu']}, {machine['cores']} cores available, class "
        f"{machine.get('cpu_class', 'unrecorded')} (flags: "
        f"{', '.join(machine.get('cpu_flags', machine['int8_flags'])) or 'none'}); load average "
        f"{machine['load_average_before']} before, {machine['load_average_after']} after.",
        f"- **Software**: Python {machine['python']}, "
        + ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
        + ".",
        f"- **Method**: {cfg.rounds} interleaved rounds, medians quoted; closed-loop runs of "
        f"{cfg.seconds:g} s per point; in-process figures over the first "
        + ", ".join(f"{w.in_process_items} ({w.task})" for w in plan)
        + " corpus sentences (`models/data/sentences_en.tsv`, real English of varied length), "
        "served runs cycle through the same ones, one per request. Server: "
        "`bentoml serve`, one worker, default configuration except admission control off "
        "(`NLP_BATCHING_MAX_QUEUE_MS=0`, so that c=64 measures throughput, not refusals).",
        "- **Load generator**: an asyncio closed loop in its own process "
        "(`loadtests/bench/load_generator.py`: aiohttp keep-alive for HTTP, grpc.aio with the "
        "service's KServe v2 stubs for gRPC) on the same cores as the server; its CPU time is in "
        "the tables (`client CPU`, seconds per 1,000 requests, next to the server's).",
        "",
        "## Goals (ratios within this run)",
        "",
        "| goal | measured | target | met |",
        "|---|---|---|---|",
    ]
    for name, (value, goal, ok) in checks.items():
        bound = _bound(name)
        text.append(f"| {name} | {value:g} | {bound} {goal:g} | {'yes' if ok else '**no**'} |")
    text.append("")
    for w in plan:
        text += _workload_section(w, samples, cfg)
    if lines:
        text += _task_lines_section(lines, results.get("task_lines", {}), samples)
    if results.get("peers"):
        text += _peers_section(results["peers"])
    text += _cold_start_section(samples)
    for section in extra:
        text += [f"## {section['title']}", "", section["markdown"].strip(), ""]
    if plots:
        text += ["## Plots", ""]
        text += [f"![{p.stem}]({(ASSETS / p.name).as_posix()})" for p in plots]
        text.append("")
    if not cfg.quick:
        text += _by_cpu_class_section(results, checks, out_dir / BY_CPU_CLASS)
    if LEVERS.exists() and not cfg.quick:
        text += [LEVERS.read_text().strip(), ""]
    markdown = "\n".join(text)
    (out_dir / "BENCHMARKS.md").write_text(markdown)
    return markdown


def record_cpu_class(
    results: dict[str, Any], checks: dict[str, tuple[float, float, bool]], folder: Path
) -> None:
    """File this run's goals under its CPU class (replacing that class's previous run)."""
    import json

    machine = results["machine"]
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "cpu_class": machine.get("cpu_class", "unrecorded"),
        "cpu": machine["cpu"],
        "cpu_flags": machine.get("cpu_flags", machine.get("int8_flags", [])),
        "date": machine["date"],
        "load_average_before": machine["load_average_before"],
        "command": results["command"],
        "checks": {name: list(value) for name, value in checks.items()},
    }
    (folder / f"{record['cpu_class']}.json").write_text(json.dumps(record, indent=1) + "\n")


def _by_cpu_class_section(
    results: dict[str, Any], checks: dict[str, tuple[float, float, bool]], folder: Path
) -> list[str]:
    """One column per CPU class the suite has run on: each goal's last measured value there."""
    import json

    record_cpu_class(results, checks, folder)
    records = [json.loads(f.read_text()) for f in sorted(folder.glob("*.json"))]
    names = list(checks) + [name for r in records for name in r["checks"] if name not in checks]
    names = list(dict.fromkeys(names))
    text = [
        "## Goals by CPU class",
        "",
        "The last full run on each CPU class this machine kind has come with (`"
        + BY_CPU_CLASS.as_posix()
        + "/<class>.json`); — where a run predates a goal. Bold: missed.",
        "",
        "| goal | target | "
        + " | ".join(f"{r['cpu_class']} ({r['date'][:10]}, {r['cpu']})" for r in records)
        + " |",
        "|---|---|" + "---|" * len(records),
    ]
    for name in names:
        goal = next(r["checks"][name][1] for r in records if name in r["checks"])
        bound = _bound(name)
        cells = []
        for r in records:
            if name not in r["checks"]:
                cells.append("—")
                continue
            value, _, met = r["checks"][name]
            cells.append(f"{value:g}" if met else f"**{value:g}**")
        text.append(f"| {name} | {bound} {goal:g} | " + " | ".join(cells) + " |")
    notes = [f"- {r['cpu_class']}: {r['note']}" for r in records if r.get("note")]
    return [*text, "", *notes, *([""] if notes else [])]


def _load_row(label: str, samples: Any, key: str) -> str | None:
    if not samples.has(key):
        return None

    def med(field: str) -> float:
        return samples.median(key, lambda v: v[field] if v[field] is not None else float("nan"))

    requests = med("requests")
    per_k = lambda field: med(field) / max(requests, 1) * 1000  # noqa: E731
    errors = sum(v["errors"] for v in samples.values[key])
    return (
        f"| {label} | {_fmt(med('throughput'))} | {_fmt(med('p50_ms'))} | "
        f"{_fmt(med('p95_ms'))} | {_fmt(med('p99_ms'))} | {_fmt(per_k('client_cpu_s'), 2)} | "
        f"{_fmt(per_k('server_cpu_s'), 2)} | {errors} |"
    )


def _workload_section(w: Any, samples: Any, cfg: Any) -> list[str]:
    lines = [
        f"## {w.label[0].upper()}{w.label[1:]}",
        "",
        "In process (plain ONNX Runtime on the served graph; items/s):",
        "",
        "| model | "
        + " | ".join(f"sorted batch {b}" for b in cfg.batch_sizes)
        + (" | arrival-order batch 32" if not cfg.quick else "")
        + " | sorted batch 32, threads not spinning"
        " | sorted batch 8, two 1-thread runs side by side | batch-1 latency p50 ms"
        " | CPU ms per item (sorted 32, default / not spinning; side by side) |",
        "|---|" + "---|" * (len(cfg.batch_sizes) + (0 if cfg.quick else 1) + 4),
    ]
    for name in w.served:
        ort = contenders.ORT.key(model=name, batch=32)
        no_spin = contenders.ORT_NO_SPIN.key(model=name, batch=32)
        runners = contenders.ORT_RUNNERS.key(model=name, batch=8)
        cells = [
            _fmt(samples.median(contenders.ORT.key(model=name, batch=b))) for b in cfg.batch_sizes
        ]
        if not cfg.quick:
            cells.append(_fmt(samples.median(contenders.ORT_ARRIVAL.key(model=name, batch=32))))
        cells.append(_fmt(samples.median(contenders.LATENCY_FLOOR.key(model=name)), 2))
        cells[len(cfg.batch_sizes) + (0 if cfg.quick else 1) : 0] = [
            _fmt(samples.median(no_spin)),
            _fmt(samples.median(runners)),
        ]
        cells.append(
            _fmt(samples.median(ort + contenders.CPU_MS), 2)
            + " / "
            + _fmt(samples.median(no_spin + contenders.CPU_MS), 2)
            + "; "
            + _fmt(samples.median(runners + contenders.CPU_MS), 2)
        )
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    if samples.has(contenders.TORCH.key(task=w.task)):
        lines += [
            "",
            f"PyTorch pipeline in process, one call per item: "
            f"{_fmt(samples.median(contenders.TORCH.key(task=w.task)))} items/s.",
            "",
        ]
    lines += [
        "",
        "Served, closed loop (requests/s of one item each; client/server CPU in seconds "
        "per 1,000 requests):",
        "",
        "| contender | req/s | p50 ms | p95 ms | p99 ms | client CPU | server CPU | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in w.served:
        for served in (contenders.OURS_HTTP, contenders.OURS_GRPC):
            for c in w.concurrencies(served):
                row = _load_row(
                    f"ours `{name}` {served.protocol.upper()} c={c}",
                    samples,
                    served.key(model=name, c=c),
                )
                if row:
                    lines.append(row)
    for c in contenders.BASELINE_CONCURRENCIES:
        row = _load_row(
            f"FastAPI + PyTorch pipeline c={c}", samples, contenders.FASTAPI.key(task=w.task, c=c)
        )
        if row:
            lines.append(row)
    for name in w.served:
        for peer in contenders.PEERS.values():
            for c in contenders.PEER_CONCURRENCIES:
                row = _load_row(f"{peer.name} c={c}", samples, peer.key(model=name, c=c))
                if row:
                    lines.append(row)
    return [*lines, ""]


def _peers_section(peers: dict[str, dict[str, Any]]) -> list[str]:
    """What each peer is, from which lock, and what it cost idle, or why it did not start."""
    lines = [
        "## Peers",
        "",
        "Other serving frameworks on the same ONNX folder, sentences and load generator "
        "(`loadtests/bench/peer_servers.py`; rows `peer: ...` in the classification table; "
        "each in a venv of its own from its lock; all up for the whole run, so their idle cost "
        "is listed):",
        "",
        "| peer | module | lock | batching | start s | idle server CPU s/s | status |",
        "|---|---|---|---|---|---|---|",
    ]
    for facts in peers.values():
        status = f"error: {facts['error'][:300]}" if "error" in facts else "measured"
        status = " ".join(status.replace("|", "/").split())  # one table cell
        lines.append(
            f"| {facts['title']} | `{facts['module']}` | `{facts['lock']}` | "
            f"{'yes' if facts['batching'] else 'no'} | {_fmt(facts.get('start_s'))} | "
            f"{_fmt(facts.get('idle_cpu_s_per_s'), 3)} | {status} |"
        )
    return [*lines, ""]


def _task_lines_section(lines: list[Any], facts: dict[str, Any], samples: Any) -> list[str]:
    """One row per encoder task: requests/s over HTTP at c=16 in the route's payload, the model
    rows they carry, against plain ORT in process on the same rows (sorted batch 32)."""
    text = [
        "## Encoder tasks: served (HTTP c=16) against in process",
        "",
        "The real all-MiniLM-L6-v2 encoder under each task's head (seeded random weights; "
        "similarity is the embeddings model), served in the route's own payload, cycling "
        "through the first corpus sentences; in process: plain ONNX Runtime on exactly the "
        "model rows those requests compute (pairs encoded as pairs: query/text, "
        "sequence/`This example is {label}.`), length-sorted batches of 32, the better of "
        "spinning and sleeping threads. Served rows/s = req/s x rows per request.",
        "",
        "| task | route | one request | rows/request | req/s | served rows/s | p50 ms | "
        "in-process rows/s | served / in-process | server CPU | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for line in lines:
        fact = facts.get(line.name) or {}
        key = contenders.TASK_HTTP.key(line=line.name, c=line.concurrency)
        if not samples.has(key) or not fact:
            continue
        per_request = fact["rows_per_request"]
        req_s = samples.median(key, lambda v: v["throughput"])
        requests = samples.median(key, lambda v: v["requests"])
        server_cpu = samples.median(
            key, lambda v: v["server_cpu_s"] if v["server_cpu_s"] is not None else float("nan")
        )
        limit = contenders.task_line_limit(samples, line.name)
        errors = sum(v["errors"] for v in samples.values[key])
        text.append(
            f"| {line.name} (`{line.model.name}`) | `{line.route}` | {line.shape} | "
            f"{per_request:g} | {_fmt(req_s)} | {_fmt(req_s * per_request)} | "
            f"{_fmt(samples.median(key, lambda v: v['p50_ms']))} | {_fmt(limit)} | "
            f"{_fmt(req_s * per_request / limit, 2)} | "
            f"{_fmt(server_cpu / max(requests, 1) * 1000, 2)} | {errors} |"
        )
    text += [
        "",
        "Server CPU: seconds per 1,000 requests. The ratio is what the goal table's task "
        "floors read.",
        "",
    ]
    return text


def _cold_start_section(samples: Any) -> list[str]:
    lines = [
        "## Cold start and memory",
        "",
        f"Process start (`bentoml serve`) to `/readyz` 200, tiny profile: "
        f"{_fmt(samples.median('cold_start_tiny_s'), 2)} s (median of "
        f"{len(samples.values.get('cold_start_tiny_s', []))}).",
        "",
    ]
    if samples.has("cold_start_local_s"):
        lines += [
            f"`local` profile (every model `make serve` serves: SmolLM2 fp32 and int4, "
            f"MiniLM, the sentiment classifier and its O2/int8 variants, the untrained "
            f"stand-ins): {_fmt(samples.median('cold_start_local_s'), 2)} s (median of "
            f"{len(samples.values['cold_start_local_s'])}).",
            "",
        ]
    else:
        lines += [
            "`local` profile: not measured (its models are not built in the project's "
            "store; `make models PROFILE=local`, then rerun).",
            "",
        ]
    lines += ["| server | " + "process | RSS MB |", "|---|---|---|"]
    for key, label in (
        ("memory_tiny", "tiny profile, after start"),
        ("memory_local", "local profile, after start"),
        ("memory_idle", "bench models, after start"),
        ("memory_after_load", "bench models, after the run"),
    ):
        for proc, _ in (samples.values.get(key) or [{}])[-1].items():
            lines.append(
                f"| {label} | {proc} | "
                f"{_fmt(samples.median(key, lambda v, p=proc: v.get(p, float('nan'))), 0)}"
                " |"
            )
    return [*lines, ""]


def _plots(samples: Any, plan: list[Any], cfg: Any, assets: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assets.mkdir(parents=True, exist_ok=True)
    written = []
    for w in plan:
        slug = w.task
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for name in w.served:
            for served, style in ((contenders.OURS_HTTP, "-o"), (contenders.OURS_GRPC, "--s")):
                keys = [(c, served.key(model=name, c=c)) for c in w.concurrencies(served)]
                points = [
                    (c, samples.median(k, lambda v: v["throughput"]))
                    for c, k in keys
                    if samples.has(k)
                ]
                if points:
                    ax.plot(
                        *zip(*points, strict=True), style, label=f"ours {name} {served.protocol}"
                    )
            limit = contenders.in_process_limit(samples, name)
            if not math.isnan(limit):
                ax.axhline(limit, linestyle=":", color="grey")
                ax.annotate(
                    f"in-process limit {name}",
                    (w.http_concurrencies[0], limit),
                    fontsize=7,
                    va="bottom",
                )
        baseline = {
            c: contenders.FASTAPI.key(task=w.task, c=c) for c in contenders.BASELINE_CONCURRENCIES
        }
        base = [
            (c, samples.median(key, lambda v: v["throughput"]))
            for c, key in baseline.items()
            if samples.has(key)
        ]
        if base:
            ax.plot(*zip(*base, strict=True), "-^", label="FastAPI + PyTorch")
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(w.http_concurrencies), [str(c) for c in w.http_concurrencies])
        ax.set_xlabel("concurrency (closed loop)")
        ax.set_ylabel("requests/s")
        ax.set_title(f"{w.label}: throughput vs concurrency")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        path = assets / f"{slug}-throughput.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

        fig, ax = plt.subplots(figsize=(7, 4.2))
        labels, width = [], 0.25
        series = {"p50": [], "p95": [], "p99": []}
        for name in w.served:
            for c in w.http_concurrencies:
                key = contenders.OURS_HTTP.key(model=name, c=c)
                if not samples.has(key):
                    continue
                labels.append(f"{name.replace('bench-', '')}\nc={c}")
                for q in series:
                    series[q].append(samples.median(key, lambda v, q=q: v[f"{q}_ms"]))
        for offset, (q, values) in enumerate(series.items()):
            ax.bar([i + (offset - 1) * width for i in range(len(values))], values, width, label=q)
        ax.set_xticks(range(len(labels)), labels, fontsize=6)
        ax.set_yscale("log")
        ax.set_ylabel("latency ms (HTTP)")
        ax.set_title(f"{w.label}: latency percentiles")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, axis="y")
        path = assets / f"{slug}-latency.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
