"""Run Locust headless as a subprocess, then write the report: plots, summary, SLO gates, knee.

    python -m loadtests run --host http://127.0.0.1:3000 [--grpc 127.0.0.1:3001] \\
        [--shape steady|step|spike|soak] [--duration 60] [--users 10] [--out DIR] \\
        [--slo loadtests/slo.yaml] [--serve tiny] [--workers N] [--no-gates]
    python -m loadtests report DIR [--slo loadtests/slo.yaml]    # rebuild a run's report

`run` starts nothing unless `--serve PROFILE` asks it to (then it builds that profile into the
model store and starts `bentoml serve` on free ports for the run's length). Locust always runs in
a child process: `import locust` monkey-patches the process with gevent, which breaks once
`ssl` is imported (requests, bentoml, pytest), and this process may have done that.

The report folder holds Locust's CSVs (`locust_stats.csv`, `locust_stats_history.csv` with
`--csv-full-history`, failures, exceptions) and HTML (`locust.html`), the raw samples
(`samples-*.csv`, one line per request), `throughput.png`, `latency.png`, `errors.png`
(+ `knee.png` for step ramps), `report.json` and a one-page `summary.md`.

Exit status: 0 when every SLO gate holds, 1 when one fails (each failure is printed with by how
much), 2 when the run itself failed (host unreachable, Locust crashed, no requests at all).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shlex
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
DEFAULT_SLO = ROOT / "loadtests" / "slo.yaml"
SHAPES = ("steady", "step", "spike", "soak")
# User class (loadtests/locustfile.py) -> the task the service must serve for it.
USER_CLASSES = {
    "ClassifyUser": "text-classification",
    "EmbedUser": "feature-extraction",
    "AnswerUser": "question-answering",
    "GenerateUser": "text-generation",
    "GenerateStreamUser": "text-generation",
    "TranslateUser": "translation",
    "OpenAIUser": "text-generation",
    "KServeGrpcUser": "text-classification",
}
AGGREGATE = "all requests"  # every request but the TTFT events (which are not requests)


# --- running --------------------------------------------------------------------------------

def _fetch_json(url: str, timeout: float = 10.0) -> Any:
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def _grpc_answers(address: str) -> bool:
    try:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(url=address)
        try:
            return bool(client.is_server_live(client_timeout=5.0))
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - any failure means "no gRPC here"
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_out(shape: str) -> Path:
    return ROOT / "reports" / "loadtest" / f"{shape}-{datetime.now():%Y%m%d-%H%M%S}"


def _machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {"cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "loadavg_1m": round(load[0], 2)}


def _tee(process: subprocess.Popen, log_path: Path, quiet: bool) -> None:
    with log_path.open("a", encoding="utf-8") as log:
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            log.flush()  # `tail -f` works during long runs
            if not quiet:
                sys.stdout.write(line)
                sys.stdout.flush()


def _sample_loadavg(path: Path, stop) -> None:
    """Every 2 s, the host's 1-minute load average: the report shows it per step, since other
    jobs on a shared machine move the knee."""
    with path.open("w", encoding="utf-8") as f:
        f.write("time,loadavg_1m\n")
        while not stop.wait(2.0):
            f.write(f"{time.time():.1f},{os.getloadavg()[0]:.2f}\n")
            f.flush()


def _worker_rss(path: Path) -> list[dict]:
    """Worker RSS growth from minute 2 to the end of the run (loadtests/worker_memory.py)."""
    from loadtests.worker_memory import rss_growth

    growth = [{"pid": g.pid, "start_mb": round(g.start_bytes / 2**20, 1),
               "end_mb": round(g.end_bytes / 2**20, 1), "growth": round(g.growth, 4),
               "samples": g.samples} for g in rss_growth(path)]
    for g in growth:
        print(f"loadtest: worker {g['pid']} RSS {g['start_mb']} MB at minute 2, "
              f"{g['end_mb']} MB at the end ({g['growth']:+.1%})", flush=True)
    return growth


def run(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else _default_out(args.shape)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("samples-*.csv"):
        stale.unlink()
    server = None
    host, grpc = args.host, args.grpc
    try:
        if args.serve:
            # Imported only here: it imports requests (hence ssl), harmless in this process.
            from loadtests.server_process import build_store, start_server

            home = Path(args.bentoml_home or os.environ.get("BENTOML_HOME") or ROOT / ".bentoml")
            print(f"loadtest: building the {args.serve} profile into {home}", flush=True)
            build_store(home, args.serve)
            for name in ("HOST", "PORT", "GRPC_PORT"):  # make's HOST may be the target URL
                os.environ.pop(name, None)
            # The server's log and private BentoML home (server_process) go in out/server/.
            (out / "server").mkdir(exist_ok=True)
            server = start_server(home, out / "server" / "server.log", {"PROFILE": args.serve})
            host = server.url
            if grpc is None and _grpc_answers(server.grpc_address):
                grpc = server.grpc_address
            print(f"loadtest: serving {args.serve} at {host} (gRPC {grpc or 'not answering'})",
                  flush=True)
        if not host:
            print("loadtest: give --host URL (or --serve PROFILE to start a server)",
                  file=sys.stderr)
            return 2
        host = host.rstrip("/")
        try:
            models = _fetch_json(f"{host}/models")
        except Exception as err:  # noqa: BLE001
            print(f"loadtest: cannot read {host}/models: {err}", file=sys.stderr)
            return 2
        served = {m["task"] for m in models}
        classes = [c for c, task in USER_CLASSES.items()
                   if task in served and (c != "KServeGrpcUser" or grpc)]
        if args.only:
            wanted = {c.strip() for c in args.only.split(",") if c.strip()}
            unknown = wanted - set(USER_CLASSES)
            if unknown:
                print(f"loadtest: unknown user classes {sorted(unknown)}; "
                      f"known: {', '.join(USER_CLASSES)}", file=sys.stderr)
                return 2
            classes = [c for c in classes if c in wanted]
        if not classes:
            print("loadtest: no user class has a served task", file=sys.stderr)
            return 2

        env = {
            **os.environ,
            "LOADTEST_SHAPE": args.shape,
            "LOADTEST_USERS": str(args.users),
            "LOADTEST_DURATION": str(args.duration),
            "LOADTEST_RPS_PER_USER": str(args.rps_per_user),
            "LOADTEST_SAMPLES_DIR": str(out),
            "LOADTEST_GRPC_HOST": grpc or "",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                        os.environ.get("PYTHONPATH")])),
        }
        if args.steps:
            env["LOADTEST_STEPS"] = str(args.steps)
        if args.start_users:
            env["LOADTEST_START_USERS"] = str(args.start_users)
        if args.spawn_rate:
            env["LOADTEST_SPAWN_RATE"] = str(args.spawn_rate)
        locust = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE)]
        if args.warmup > 0:
            # Not measured: first inferences of each input shape, connection set-up, caches.
            users = args.start_users or max(len(classes), args.users // 4)
            print(f"loadtest: warming up for {args.warmup:g}s with {users} users", flush=True)
            warm_env = {**env, "LOADTEST_SHAPE": "steady", "LOADTEST_USERS": str(users),
                        "LOADTEST_DURATION": str(args.warmup), "LOADTEST_SAMPLES_DIR": ""}
            with (out / "warmup.log").open("w") as log:
                subprocess.run([*locust, "--headless", "--host", host, "--only-summary",
                                "--exit-code-on-error", "0", "--stop-timeout", "3s", *classes],
                               cwd=ROOT, env=warm_env, stdout=log, stderr=subprocess.STDOUT,
                               timeout=args.warmup + 120, check=False)
        master = [*locust, "--headless", "--host", host, "--csv", str(out / "locust"),
                  "--csv-full-history", "--html", str(out / "locust.html"), "--only-summary",
                  "--exit-code-on-error", "0", "--stop-timeout", f"{math.ceil(args.stop_timeout)}s",
                  "--loglevel", "INFO"]
        workers: list[subprocess.Popen] = []
        if args.workers:
            port = _free_port()
            master += ["--master", "--master-bind-port", str(port),
                       "--expect-workers", str(args.workers), "--expect-workers-max-wait", "60"]
            for i in range(args.workers):
                log = (out / f"worker-{i}.log").open("w")
                workers.append(subprocess.Popen(
                    [*locust, "--worker", "--master-host", "127.0.0.1", "--master-port",
                     str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        master += classes

        meta = {
            "command": " ".join(shlex.quote(a) for a in ["python", "-m", "loadtests",
                                                          *args.argv]),
            "host": host, "grpc": grpc, "serve": args.serve, "shape": args.shape,
            "users": args.users, "duration_s": args.duration, "steps": args.steps,
            "start_users": args.start_users, "warmup_s": args.warmup,
            "rps_per_user": args.rps_per_user, "workers": args.workers, "classes": classes,
            "models": [{k: m.get(k) for k in ("task", "name", "default")} for m in models],
            "locust_version": metadata.version("locust"),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine_before": _machine(), "slo": str(args.slo),
        }
        (out / "meta.json").write_text(json.dumps(meta, indent=2))
        (out / "locust.log").write_text("$ " + " ".join(shlex.quote(a) for a in master) + "\n")
        print(f"loadtest: {args.shape} for {args.duration:g}s, up to {args.users} users "
              f"({', '.join(classes)}) against {host}", flush=True)
        stop = threading.Event()
        threading.Thread(target=_sample_loadavg, args=(out / "loadavg.csv", stop),
                         daemon=True).start()
        server_pid = server.process.pid if server is not None else args.server_pid
        stop_rss = None
        if server_pid:
            from loadtests.worker_memory import start_sampling

            stop_rss = start_sampling(server_pid, out / "worker_rss.csv")
        process = subprocess.Popen(master, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        deadline = args.duration + args.stop_timeout + 120
        started = time.monotonic()
        try:
            _tee(process, out / "locust.log", args.quiet)
            rc = process.wait(timeout=max(1.0, deadline - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            process.kill()
            rc = process.wait()
            print(f"loadtest: Locust overran {deadline:g}s and was killed", file=sys.stderr)
        finally:
            stop.set()
            if stop_rss is not None:
                stop_rss.set()
            for worker in workers:
                try:
                    worker.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    worker.kill()
        meta.update(locust_exit=rc, finished=datetime.now(UTC).isoformat(timespec="seconds"),
                    machine_after=_machine())
        if stop_rss is not None:
            meta["worker_rss"] = _worker_rss(out / "worker_rss.csv")
        (out / "meta.json").write_text(json.dumps(meta, indent=2))
    finally:
        if server is not None:
            server.stop()
    if not (out / "locust_stats.csv").exists():
        print(f"loadtest: Locust exited with {rc} and wrote no statistics; see "
              f"{out / 'locust.log'}", file=sys.stderr)
        return 2
    return report(out, Path(args.slo) if args.slo else None, gates=not args.no_gates)


# --- reading Locust's output ----------------------------------------------------------------

@dataclass
class Metrics:
    """One request name over a span of time."""

    requests: int = 0
    failures: int = 0
    rps: float = 0.0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    exact: bool = True  # from raw samples (else Locust's rounded/windowed figures)

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


@dataclass
class Phase:
    """A stretch of constant user count (a step of the ramp, the spike, ...)."""

    users: int
    start: float  # seconds since the run started: measured window (settling time excluded)
    end: float
    tasks: dict[str, Metrics] = field(default_factory=dict)
    total: Metrics = field(default_factory=Metrics)
    loadavg: float | None = None  # the host's mean 1-minute load average in the window


def _num(value: str) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def read_stats(path: Path) -> dict[str, dict[str, Any]]:
    """locust_stats.csv -> {name: {"type", "requests", "failures", "rps", "p50", "p95", ...}}."""
    rows: dict[str, dict[str, Any]] = {}
    with path.open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["Name"] == "Aggregated":
                continue
            rows[row["Name"]] = {
                "type": row["Type"], "requests": int(row["Request Count"]),
                "failures": int(row["Failure Count"]), "rps": _num(row["Requests/s"]) or 0.0,
                "p50": _num(row["50%"]), "p95": _num(row["95%"]), "p99": _num(row["99%"]),
            }
    return rows


def read_history(path: Path) -> dict[str, list[dict[str, Any]]]:
    """locust_stats_history.csv -> {name: [{"t", "users", "count", "fails", "p50", ...}]}, with
    `t` the timestamp; "Aggregated" is kept under that name."""
    series: dict[str, list[dict[str, Any]]] = {}
    if not path.exists():
        return series
    with path.open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            series.setdefault(row["Name"], []).append({
                "t": float(row["Timestamp"]), "users": int(row["User Count"]),
                "type": row["Type"], "count": int(row["Total Request Count"]),
                "fails": int(row["Total Failure Count"]), "p50": _num(row["50%"]),
                "p95": _num(row["95%"]), "p99": _num(row["99%"]),
            })
    return series


def read_samples(folder: Path) -> dict[str, Any] | None:
    """samples-*.csv (one line per request) -> {"t", "ms", "ok", "name"[, "type"]} arrays."""
    import numpy as np

    files = sorted(folder.glob("samples-*.csv"))
    if not files:
        return None
    t, ms, ok, names, types = [], [], [], [], {}
    for path in files:
        with path.open(encoding="utf-8") as f:
            for row in csv.DictReader(f):
                try:
                    t.append(float(row["time"]))
                    ms.append(float(row["ms"]))
                    ok.append(row["ok"] == "1")
                except (KeyError, TypeError, ValueError):
                    continue  # a line cut short by a killed process
                names.append(row["name"])
                types[row["name"]] = row["type"]
    if not t:
        return None
    return {"t": np.array(t), "ms": np.array(ms), "ok": np.array(ok, dtype=bool),
            "name": np.array(names, dtype=object), "types": types}


def _percentile(values, q: float) -> float | None:
    import numpy as np

    if len(values) == 0:
        return None
    return float(np.percentile(values, q, method="inverted_cdf"))  # nearest rank


def _metrics_from_samples(samples: dict[str, Any], mask, seconds: float) -> Metrics:
    ms, ok = samples["ms"][mask], samples["ok"][mask]
    return Metrics(requests=int(len(ms)), failures=int((~ok).sum()),
                   rps=len(ms) / seconds if seconds > 0 else 0.0,
                   p50=_percentile(ms, 50), p95=_percentile(ms, 95), p99=_percentile(ms, 99))


def _is_ttft(name: str, types: dict[str, str]) -> bool:
    return types.get(name) == "TTFT"


# --- analysis -------------------------------------------------------------------------------

def overall_metrics(stats: dict[str, dict[str, Any]], samples: dict[str, Any] | None,
                    span: tuple[float, float] | None) -> tuple[dict[str, Metrics], Metrics]:
    """Whole-run metrics per request name and for all requests (TTFT events excluded)."""
    types = {name: row["type"] for name, row in stats.items()}
    tasks: dict[str, Metrics] = {}
    if samples is not None:
        start, end = span or (float(samples["t"].min()), float(samples["t"].max()))
        seconds = max(end - start, 1e-9)
        for name in sorted(set(samples["name"])):
            tasks[name] = _metrics_from_samples(samples, samples["name"] == name, seconds)
        requests = ~_name_mask(samples, [n for n in tasks if _is_ttft(n, samples["types"])])
        total = _metrics_from_samples(samples, requests, seconds)
    else:
        for name, row in stats.items():
            tasks[name] = Metrics(row["requests"], row["failures"], row["rps"], row["p50"],
                                  row["p95"], row["p99"], exact=False)
        plain = [m for n, m in tasks.items() if types.get(n) != "TTFT"]
        total = Metrics(sum(m.requests for m in plain), sum(m.failures for m in plain),
                        sum(m.rps for m in plain), exact=False)
    return tasks, total


def _name_mask(samples: dict[str, Any], names: list[str]):
    import numpy as np

    return np.isin(samples["name"], names) if names else np.zeros(len(samples["name"]), bool)


def find_phases(history: dict[str, list[dict[str, Any]]], min_seconds: float = 4.0
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


def _history_delta(rows: list[dict[str, Any]], t0: float, start: float, end: float) -> Metrics:
    """Metrics of one name over [start, end) from the cumulative history (p95: Locust's 10 s
    window at the end of the span)."""
    before = [r for r in rows if r["t"] - t0 <= start]
    inside = [r for r in rows if r["t"] - t0 <= end]
    if not inside:
        return Metrics(exact=False)
    first = before[-1] if before else {"count": 0, "fails": 0}
    last = inside[-1]
    count, fails = last["count"] - first["count"], last["fails"] - first["fails"]
    return Metrics(count, fails, count / max(end - start, 1e-9), last["p50"], last["p95"],
                   last["p99"], exact=False)


def read_loadavg(path: Path) -> list[tuple[float, float]]:
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as f:
        return [(float(r["time"]), float(r["loadavg_1m"])) for r in csv.DictReader(f)]


def fill_phases(phases: list[Phase], t0: float, names: list[str], ttft: set[str],
                samples: dict[str, Any] | None,
                history: dict[str, list[dict[str, Any]]],
                loadavg: list[tuple[float, float]] | None = None) -> None:
    for phase in phases:
        seconds = phase.end - phase.start
        inside = [v for t, v in loadavg or [] if phase.start <= t - t0 < phase.end]
        phase.loadavg = sum(inside) / len(inside) if inside else None
        if samples is not None:
            rel = samples["t"] - t0
            window = (rel >= phase.start) & (rel < phase.end)
            for name in names:
                phase.tasks[name] = _metrics_from_samples(
                    samples, window & (samples["name"] == name), seconds)
            phase.total = _metrics_from_samples(
                samples, window & ~_name_mask(samples, sorted(ttft)), seconds)
        else:
            for name in names:
                phase.tasks[name] = _history_delta(history.get(name, []), t0, phase.start,
                                                   phase.end)
            plain = [phase.tasks[n] for n in names if n not in ttft]
            phase.total = Metrics(sum(m.requests for m in plain), sum(m.failures for m in plain),
                                  sum(m.rps for m in plain), exact=False)


# --- SLO ------------------------------------------------------------------------------------

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
    if path is None or not path.exists():
        return {"tasks": {}, "aggregate": {}, "defaults": {}}
    slo = yaml.safe_load(path.read_text()) or {}
    slo.setdefault("tasks", {})
    slo.setdefault("aggregate", {})
    slo.setdefault("defaults", {})
    return slo


def task_slo(slo: dict[str, Any], name: str) -> dict[str, float]:
    if name == AGGREGATE:
        return {**slo["defaults"], **(slo["aggregate"] or {})}
    if name not in slo["tasks"]:
        return {}
    return {**slo["defaults"], **(slo["tasks"][name] or {})}


def check(subject: str, limits: dict[str, float], m: Metrics | None) -> list[Gate]:
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
        limits.get("max_error_rate", 1.0))


def knees(phases: list[Phase], slo: dict[str, Any], names: list[str]
          ) -> dict[str, dict[str, Any]]:
    """Per request name (and AGGREGATE: every gated name at once), the knee of a step ramp:
    the last step, counting from the first, whose p95 met the SLO (error rate within budget)."""
    out: dict[str, dict[str, Any]] = {}
    gated = [n for n in names if "p95_ms" in task_slo(slo, n)]
    for name in [*gated, AGGREGATE]:
        knee, broke = None, None
        for index, phase in enumerate(phases):
            if name == AGGREGATE:
                ok = all(phase_passes(phase.tasks.get(n), task_slo(slo, n)) for n in gated
                         if n in phase.tasks and phase.tasks[n].requests)
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


# --- plots ----------------------------------------------------------------------------------

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


def plots(out: Path, history: dict[str, list[dict[str, Any]]], t0: float, ttft: set[str],
          names: list[str], slo: dict[str, Any], phases: list[Phase], shape: str,
          rps_per_user: float, knee: dict[str, dict[str, Any]]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    requests = [n for n in names if n not in ttft]
    users_rows = history.get("Aggregated", [])
    users_t = [r["t"] - t0 for r in users_rows]
    users_n = [r["users"] for r in users_rows]

    # Throughput per task + all requests, users on the right axis.
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
    twin.step(users_t, users_n, where="post", color="grey", linestyle=":", label="users")
    twin.set_ylabel("users (grey dotted)")
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=90)
    plt.close(fig)
    written.append("throughput.png")

    # p50/p95/p99 per task, SLO p95 dashed.
    cols = 3
    rows_n = max(1, math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows_n, cols, figsize=(13, 2.8 * rows_n), squeeze=False,
                             sharex=True)
    for k, name in enumerate(names):
        ax = axes[k // cols][k % cols]
        # Before a name's first request its window percentiles read 0: leave those out.
        series = [r for r in history.get(name, []) if r["p50"] is not None and r["count"] > 0]
        ts = [r["t"] - t0 for r in series]
        for q, color in (("p50", "tab:green"), ("p95", "tab:orange"), ("p99", "tab:red")):
            ax.plot(ts, [r[q] for r in series], label=q, color=color, linewidth=1.1)
        limit = task_slo(slo, name).get("p95_ms")
        if limit:
            ax.axhline(float(limit), color="tab:orange", linestyle="--", linewidth=1,
                       label="SLO p95")
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("ms", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if k == 0:
            ax.legend(fontsize=7)
    for k in range(len(names), rows_n * cols):
        axes[k // cols][k % cols].axis("off")
    fig.suptitle("Latency per task: p50/p95/p99 over Locust's 10 s window", fontsize=11)
    fig.supxlabel("seconds since start", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=90)
    plt.close(fig)
    written.append("latency.png")

    # Error rate per task.
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
        ax.axhline(float(budget) * 100, color="tab:red", linestyle="--", linewidth=1,
                   label="error budget (SLO)")
    ax.set_title("Error rate per task" + ("" if any_failure else " (no failures)"))
    ax.set_ylim(bottom=0, top=max(1.0, ax.get_ylim()[1]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    fig.tight_layout()
    fig.savefig(out / "errors.png", dpi=90)
    plt.close(fig)
    written.append("errors.png")

    # Step ramp: p95 per step against the offered rate, knee marked.
    if shape == "step" and len(phases) >= 2:
        gated = [n for n in names if n in knee and n != AGGREGATE]
        rows_n = max(1, math.ceil(len(gated) / cols))
        fig, axes = plt.subplots(rows_n, cols, figsize=(13, 2.8 * rows_n), squeeze=False)
        offered = [p.users * rps_per_user for p in phases]
        for k, name in enumerate(gated):
            ax = axes[k // cols][k % cols]
            p95 = [p.tasks[name].p95 if name in p.tasks else None for p in phases]
            ax.plot(offered, [v if v is not None else float("nan") for v in p95], "o-",
                    color="tab:orange", label="p95 of the step")
            limit = float(task_slo(slo, name)["p95_ms"])
            ax.axhline(limit, color="tab:orange", linestyle="--", linewidth=1, label="SLO p95")
            index = knee[name]["knee"]
            if index is not None:
                ax.axvline(offered[index], color="tab:green", linewidth=1.2,
                           label=f"knee {offered[index]:g} req/s offered")
            ax.set_title(name, fontsize=9)
            top = max([limit, *[v for v in p95 if v is not None]])
            ax.set_ylim(0, top * 1.15)
            ax.set_ylabel("ms", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
        for k in range(len(gated), rows_n * cols):
            axes[k // cols][k % cols].axis("off")
        fig.suptitle("Step ramp: p95 of each step against the offered rate "
                     "(users x req/s per user, all tasks)", fontsize=11)
        fig.tight_layout()
        fig.savefig(out / "knee.png", dpi=90)
        plt.close(fig)
        written.append("knee.png")
    return written


# --- report ---------------------------------------------------------------------------------

def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.0f}" if v >= 10 else f"{v:.1f}"


def report(out: Path, slo_path: Path | None, gates: bool = True,
           overrides: dict[str, Any] | None = None) -> int:
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
    loadavg = read_loadavg(out / "loadavg.csv")
    fill_phases(phases, t0, names, ttft, samples, history, loadavg)
    knee = knees(phases, slo, names) if shape == "step" else {}
    drift: list[Phase] = []
    if shape == "soak" and phases:
        hold = max(phases, key=lambda p: p.end - p.start)
        tenth = (hold.end - hold.start) / 10
        drift = [Phase(hold.users, hold.start, hold.start + tenth),
                 Phase(hold.users, hold.end - tenth, hold.end)]
        fill_phases(drift, t0, names, ttft, samples, history)

    # Gates: the whole run; for a step ramp, the knee step (the capacity within the SLO).
    results: list[Gate] = []
    if gates:
        for name in [*sorted(slo["tasks"]), AGGREGATE]:
            limits = task_slo(slo, name)
            if shape == "step" and phases:
                # The task's knee step (a task without a p95 gate: the service's); no knee:
                # the first step, which then fails.
                index = knee.get(name, knee[AGGREGATE])["knee"] or 0
                m = phases[index].total if name == AGGREGATE else phases[index].tasks.get(name)
            else:
                m = total if name == AGGREGATE else tasks.get(name)
            results.extend(check(name, limits, m))
    failed = [g for g in results if not g.passed]

    written = plots(out, history, t0, ttft, names, slo, phases, shape, rps_per_user, knee)
    summary = _summary(meta, slo, slo_path, tasks, total, phases, knee, names, ttft, results,
                       written, samples is not None, shape, rps_per_user, drift)
    (out / "summary.md").write_text(summary)
    (out / "report.json").write_text(json.dumps({
        "shape": shape, "passed": not failed,
        "tasks": {n: vars(m) for n, m in tasks.items()}, "total": vars(total),
        "phases": [{"users": p.users, "start": p.start, "end": p.end, "loadavg": p.loadavg,
                    "total": vars(p.total), "tasks": {n: vars(m) for n, m in p.tasks.items()}}
                   for p in phases],
        "knee": knee,
        "gates": [vars(g) for g in results],
    }, indent=2, default=str))

    for gate in results:
        if not gate.passed:
            print(f"SLO gate FAILED: {gate.describe()}")
    verdict = ("SLO gates not applied" if not gates else "all SLO gates met" if not failed
               else f"{len(failed)} SLO gate(s) failed")
    print(f"loadtest: report in {out} ({verdict})")
    return 1 if failed else 0


def _summary(meta, slo, slo_path, tasks, total, phases, knee, names, ttft, results, written,
             exact, shape, rps_per_user, drift) -> str:
    failed = [g for g in results if not g.passed]
    lines = [f"# Load test: {shape}" + (f", {meta['serve']} profile" if meta.get("serve") else ""),
             ""]
    if results:
        lines.append("**Result: all SLO gates met.**" if not failed else
                     f"**Result: {len(failed)} SLO gate(s) failed.**")
    else:
        lines.append("**Result: SLO gates not applied.**")
    before, after = meta.get("machine_before", {}), meta.get("machine_after", {})
    lines += [
        "",
        f"- Command: `{meta.get('command', '?')}`",
        f"- Target: {meta.get('host', '?')}" + (f", gRPC {meta['grpc']}" if meta.get("grpc")
                                                 else ", no gRPC"),
        f"- Shape {shape}: {meta.get('duration_s', '?')} s, up to {meta.get('users', '?')} users "
        f"at {rps_per_user:g} req/s each (closed loop: a user waits for its answer)"
        + (f", after {meta['warmup_s']:g} s of unmeasured warm-up" if meta.get("warmup_s")
           else "")
        + (f", {meta['workers']} Locust workers" if meta.get("workers") else ""),
        f"- User classes: {', '.join(meta.get('classes', []))}",
        "- Models: " + ", ".join(f"{m['name']} ({m['task']})" for m in meta.get("models", [])
                                  if m.get("default")),
        f"- Machine: {before.get('cpus', '?')} CPUs, {before.get('platform', '?')}; load average "
        f"{before.get('loadavg_1m', '?')} before, {after.get('loadavg_1m', '?')} after; the "
        "load generator (Locust) shares these cores with the server",
        f"- Started {meta.get('started', '?')}; Locust {meta.get('locust_version', '?')}; SLO file "
        f"`{_rel(slo_path)}` version {slo.get('version', '?')}",
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
        lines.append(f"| {name} | {kind or _type_of(name)} | {m.requests} | "
                     f"{m.failures} ({m.error_rate:.1%}) | {m.rps:.2f} | {_ms(m.p50)} | "
                     f"{_ms(m.p95)} | {_ms(m.p99)} | {limit if limit is not None else '—'} |")
    lines.append(f"| **{AGGREGATE}** | | {total.requests} | {total.failures} "
                 f"({total.error_rate:.1%}) | {total.rps:.2f} | {_ms(total.p50)} | "
                 f"{_ms(total.p95)} | {_ms(total.p99)} | |")

    if results:
        where = ("judged at each task's knee step, or the first step when there is none"
                 if shape == "step" else "judged over the whole run")
        lines += ["", f"## SLO gates, {where}", ""]
        for gate in results:
            mark = "skip" if gate.skipped else ("pass" if gate.passed else "**FAIL**")
            lines.append(f"- {mark}: {gate.describe()}")

    if shape == "step" and phases:
        lines += ["", "## Knee per task", "",
                  "The knee: the highest step of the ramp (counting up from the first) whose "
                  "p95 stayed under the task's SLO with errors within budget. Offered rate = "
                  "users x req/s per user, all tasks together; the task's own rate is what it "
                  "measured in that step.", "",
                  "| request | SLO p95 ms | knee: users (offered req/s) | task req/s at knee | "
                  "p95 at knee ms | next step: users, p95 ms, errors |",
                  "|---|---:|---|---:|---:|---|"]
        for name, k in knee.items():
            limit = task_slo(slo, name).get("p95_ms", "—") if name != AGGREGATE else "each"
            index, miss = k["knee"], k["first_miss"]
            m = (phases[index].total if name == AGGREGATE else phases[index].tasks[name]
                 ) if index is not None else None
            nxt = (phases[miss].total if name == AGGREGATE else phases[miss].tasks.get(name)
                   ) if miss is not None else None
            knee_text = (f"{phases[index].users} ({phases[index].users * rps_per_user:g})"
                         if index is not None else "none: the first step missed")
            next_text = (f"{phases[miss].users}, {_ms(nxt.p95)}, {nxt.error_rate:.1%}"
                         if miss is not None and nxt is not None else
                         "— (never missed: raise --users)")
            label = f"**{name}** (every gated task)" if name == AGGREGATE else name
            lines.append(f"| {label} | {limit} | {knee_text} | "
                         f"{m.rps if m else 0:.2f} | {_ms(m.p95) if m else '—'} | {next_text} |")

    if shape in ("step", "spike") and phases:
        gated = [n for n in names if n not in ttft or "p95_ms" in task_slo(slo, n)]
        lines += ["", "## Phases (constant user count; first fifth of each, at most 5 s, "
                  "left out; host load: the machine's mean 1-minute load average, 2 cores)", "",
                  "| users | window s | host load | req/s | errors | " + " | ".join(
                      f"{n} p95" for n in gated) + " |",
                  "|---:|---|---:|---:|---:|" + "---:|" * len(gated)]
        for p in phases:
            load = "—" if p.loadavg is None else f"{p.loadavg:.1f}"
            lines.append(f"| {p.users} | {p.start:.0f}–{p.end:.0f} | {load} | "
                         f"{p.total.rps:.1f} | {p.total.error_rate:.1%} | " + " | ".join(
                             _ms(p.tasks[n].p95) if n in p.tasks else "—" for n in gated) + " |")

    if drift:
        first, last = drift
        lines += ["", f"## Drift: first vs last tenth of the hold at {first.users} users "
                  f"({first.start:.0f}–{first.end:.0f} s vs {last.start:.0f}–{last.end:.0f} s)",
                  "", "| request | req/s first | req/s last | p95 first ms | p95 last ms | "
                  "errors first | errors last |", "|---|---:|---:|---:|---:|---:|---:|"]
        for name in names:
            a, b = first.tasks.get(name), last.tasks.get(name)
            if a is None or b is None:
                continue
            lines.append(f"| {name} | {a.rps:.2f} | {b.rps:.2f} | {_ms(a.p95)} | {_ms(b.p95)} "
                         f"| {a.error_rate:.1%} | {b.error_rate:.1%} |")

    lines += ["", "## Plots", ""] + [f"![{Path(w).stem}]({w})" for w in written]
    lines.append("")
    return "\n".join(lines)


def _type_of(name: str) -> str:
    return "grpc" if name.startswith("ModelInfer") else ("SSE" if name.endswith("stream")
                                                         else "POST")


def _rel(path: Path | None) -> str:
    if path is None:
        return "none"
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


# --- CLI ------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m loadtests", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run Locust headless, write the report, apply the SLO gates")
    r.add_argument("--host", help="base URL of the service, e.g. http://127.0.0.1:3000")
    r.add_argument("--grpc", help="HOST:PORT of the KServe v2 gRPC endpoint (adds the gRPC user)")
    r.add_argument("--shape", choices=SHAPES, default="steady")
    r.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    r.add_argument("--users", type=int, default=10, help="peak users (default 10)")
    r.add_argument("--rps-per-user", type=float, default=1.0,
                   help="requests/s each user aims at (default 1)")
    r.add_argument("--steps", type=int, default=0, help="step shape: steps (default 1 per 30 s)")
    r.add_argument("--start-users", type=int, default=0,
                   help="step shape: users of the first step (default users/steps)")
    r.add_argument("--spawn-rate", type=float, default=0.0, help="users/s (default: the shape's)")
    r.add_argument("--out", help="report folder (default reports/loadtest/SHAPE-TIMESTAMP)")
    r.add_argument("--slo", default=str(DEFAULT_SLO), help="SLO gates (default loadtests/slo.yaml)")
    r.add_argument("--no-gates", action="store_true", help="report only; exit 0 unless the "
                   "run itself failed")
    r.add_argument("--serve", metavar="PROFILE", help="build PROFILE and start a server for the "
                   "run (otherwise nothing is started)")
    r.add_argument("--bentoml-home", help="model store for --serve (default $BENTOML_HOME or "
                   ".bentoml)")
    r.add_argument("--server-pid", type=int, default=0,
                   help="pid of the `bentoml serve` process: sample its workers' RSS every 5 s "
                   "into worker_rss.csv (automatic with --serve)")
    r.add_argument("--only", help="comma-separated user classes to run (default: all served)")
    r.add_argument("--workers", type=int, default=0, help="distributed: N local Locust "
                   "workers under one master")
    r.add_argument("--warmup", type=float, default=0.0, help="seconds of unmeasured load "
                   "first (--start-users, else a quarter of --users; default 0)")
    r.add_argument("--stop-timeout", type=float, default=3.0,
                   help="seconds users get to finish at the end (default 3)")
    r.add_argument("--quiet", action="store_true", help="don't echo Locust's output")

    p = sub.add_parser("report", help="rebuild the report of a finished run")
    p.add_argument("out", help="the run's report folder")
    p.add_argument("--slo", default=str(DEFAULT_SLO))
    p.add_argument("--no-gates", action="store_true")
    p.add_argument("--shape", choices=SHAPES, help="the run's shape when it has no meta.json "
                   "(e.g. a docker-compose run)")
    p.add_argument("--rps-per-user", type=float, help="likewise: LOADTEST_RPS_PER_USER")

    args = parser.parse_args(argv)
    if args.command == "run":
        args.argv = argv
        return run(args)
    return report(Path(args.out), Path(args.slo) if args.slo else None, gates=not args.no_gates,
                  overrides={"shape": args.shape, "rps_per_user": args.rps_per_user})


if __name__ == "__main__":
    sys.exit(main())
