"""`run`: Locust headless in a child process against a service (started here with `--serve`),
with the host's load and the server's worker RSS sampled alongside, then the report.

Locust always runs in a child process: `import locust` monkey-patches the process with gevent,
which breaks once `ssl` is imported (requests, bentoml, pytest), and this process may have
done that."""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from loadtests.runner import machine
from loadtests.runner.paths import LOCUSTFILE, ROOT, default_out
from loadtests.runner.report import report
from loadtests.runner.user_classes import USER_CLASSES, served_classes


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


def _tee(process: subprocess.Popen, log_path: Path, quiet: bool) -> None:
    with log_path.open("a", encoding="utf-8") as log:
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            log.flush()  # `tail -f` works during long runs
            if not quiet:
                sys.stdout.write(line)
                sys.stdout.flush()


def _serve(args: argparse.Namespace, out: Path):
    """Build `--serve`'s profile and start `bentoml serve` for the run."""
    # Imported only here: it imports requests (hence ssl), harmless in this process.
    from loadtests.server_process import build_store, start_server

    home = Path(args.bentoml_home or os.environ.get("BENTOML_HOME") or ROOT / ".bentoml")
    print(f"loadtest: building the {args.serve} profile into {home}", flush=True)
    build_store(home, args.serve)
    for name in ("HOST", "PORT", "GRPC_PORT"):  # make's HOST may be the target URL
        os.environ.pop(name, None)
    # The server's log and private BentoML home (server_process) go in out/server/.
    (out / "server").mkdir(exist_ok=True)
    return start_server(home, out / "server" / "server.log", {"PROFILE": args.serve})


def _user_classes(
    args: argparse.Namespace, models: list[dict], grpc: str | None
) -> list[str] | None:
    """The user classes to run: those the service has a task for, narrowed by `--only`; None
    (after saying why) when `--only` names an unknown class."""
    classes = served_classes({m["task"] for m in models}, grpc)
    if args.only:
        wanted = {c.strip() for c in args.only.split(",") if c.strip()}
        unknown = wanted - set(USER_CLASSES)
        if unknown:
            print(
                f"loadtest: unknown user classes {sorted(unknown)}; "
                f"known: {', '.join(USER_CLASSES)}",
                file=sys.stderr,
            )
            return None
        classes = [c for c in classes if c in wanted]
    return classes


def _locust_env(args: argparse.Namespace, out: Path, grpc: str | None) -> dict[str, str]:
    """The locustfile's settings (it reads LOADTEST_* from its environment)."""
    env = {
        **os.environ,
        "LOADTEST_SHAPE": args.shape,
        "LOADTEST_USERS": str(args.users),
        "LOADTEST_DURATION": str(args.duration),
        "LOADTEST_RPS_PER_USER": str(args.rps_per_user),
        "LOADTEST_SAMPLES_DIR": str(out),
        "LOADTEST_GRPC_HOST": grpc or "",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    if args.steps:
        env["LOADTEST_STEPS"] = str(args.steps)
    if args.start_users:
        env["LOADTEST_START_USERS"] = str(args.start_users)
    if args.spawn_rate:
        env["LOADTEST_SPAWN_RATE"] = str(args.spawn_rate)
    return env


def _warm_up(
    args: argparse.Namespace,
    out: Path,
    locust: list[str],
    host: str,
    classes: list[str],
    env: dict[str, str],
) -> None:
    """Unmeasured load first: first inferences of each input shape, connection set-up, caches."""
    users = args.start_users or max(len(classes), args.users // 4)
    print(f"loadtest: warming up for {args.warmup:g}s with {users} users", flush=True)
    warm_env = {
        **env,
        "LOADTEST_SHAPE": "steady",
        "LOADTEST_USERS": str(users),
        "LOADTEST_DURATION": str(args.warmup),
        "LOADTEST_SAMPLES_DIR": "",
    }
    with (out / "warmup.log").open("w") as log:
        subprocess.run(
            [
                *locust,
                "--headless",
                "--host",
                host,
                "--only-summary",
                "--exit-code-on-error",
                "0",
                "--stop-timeout",
                "3s",
                *classes,
            ],
            cwd=ROOT,
            env=warm_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=args.warmup + 120,
            check=False,
        )


def _start_workers(
    args: argparse.Namespace, out: Path, locust: list[str], env: dict[str, str]
) -> tuple[list[str], list[subprocess.Popen]]:
    """`--workers N`: N local Locust workers; returns the master's extra arguments too."""
    from loadtests.server_process import free_port

    port = free_port()
    master = [
        "--master",
        "--master-bind-port",
        str(port),
        "--expect-workers",
        str(args.workers),
        "--expect-workers-max-wait",
        "60",
    ]
    workers = []
    for i in range(args.workers):
        log = (out / f"worker-{i}.log").open("w")
        workers.append(
            subprocess.Popen(
                [*locust, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    return master, workers


def _meta(
    args: argparse.Namespace, host: str, grpc: str | None, classes: list[str], models: list[dict]
) -> dict[str, Any]:
    """What meta.json records before the run (the summary's header reads it)."""
    return {
        "command": " ".join(shlex.quote(a) for a in ["python", "-m", "loadtests", *args.argv]),
        "host": host,
        "grpc": grpc,
        "serve": args.serve,
        "shape": args.shape,
        "users": args.users,
        "duration_s": args.duration,
        "steps": args.steps,
        "start_users": args.start_users,
        "warmup_s": args.warmup,
        "rps_per_user": args.rps_per_user,
        "workers": args.workers,
        "classes": classes,
        "models": [{k: m.get(k) for k in ("task", "name", "default")} for m in models],
        "locust_version": metadata.version("locust"),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine_before": machine.facts(),
        "slo": str(args.slo),
    }


def _run_master(
    args: argparse.Namespace,
    out: Path,
    master: list[str],
    env: dict[str, str],
    workers: list[subprocess.Popen],
    server_pid: int | None,
) -> tuple[int, bool]:
    """Run Locust's master to the end (killed when it overruns), sampling the host's load and
    the server's RSS meanwhile; returns its exit status and whether RSS was sampled."""
    stop = threading.Event()
    threading.Thread(
        target=machine.sample_loadavg, args=(out / "loadavg.csv", stop), daemon=True
    ).start()
    stop_rss = None
    if server_pid:
        from loadtests.worker_memory import start_sampling

        stop_rss = start_sampling(server_pid, out / "worker_rss.csv")
    process = subprocess.Popen(
        master, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
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
    return rc, stop_rss is not None


def run(args: argparse.Namespace) -> int:
    """The `run` command; its exit status is the report's (2: the run itself failed)."""
    out = Path(args.out) if args.out else default_out(args.shape)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("samples-*.csv"):
        stale.unlink()
    server = None
    host, grpc = args.host, args.grpc
    try:
        if args.serve:
            server = _serve(args, out)
            host = server.url
            if grpc is None and _grpc_answers(server.grpc_address):
                grpc = server.grpc_address
            print(
                f"loadtest: serving {args.serve} at {host} (gRPC {grpc or 'not answering'})",
                flush=True,
            )
        if not host:
            print(
                "loadtest: give --host URL (or --serve PROFILE to start a server)", file=sys.stderr
            )
            return 2
        host = host.rstrip("/")
        try:
            models = _fetch_json(f"{host}/models")
        except Exception as err:  # noqa: BLE001
            print(f"loadtest: cannot read {host}/models: {err}", file=sys.stderr)
            return 2
        classes = _user_classes(args, models, grpc)
        if classes is None:
            return 2
        if not classes:
            print("loadtest: no user class has a served task", file=sys.stderr)
            return 2

        env = _locust_env(args, out, grpc)
        locust = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE)]
        if args.warmup > 0:
            _warm_up(args, out, locust, host, classes, env)
        master = [
            *locust,
            "--headless",
            "--host",
            host,
            "--csv",
            str(out / "locust"),
            "--csv-full-history",
            "--html",
            str(out / "locust.html"),
            "--only-summary",
            "--exit-code-on-error",
            "0",
            "--stop-timeout",
            f"{math.ceil(args.stop_timeout)}s",
            "--loglevel",
            "INFO",
        ]
        workers: list[subprocess.Popen] = []
        if args.workers:
            extra, workers = _start_workers(args, out, locust, env)
            master += extra
        master += classes

        meta = _meta(args, host, grpc, classes, models)
        (out / "meta.json").write_text(json.dumps(meta, indent=2))
        (out / "locust.log").write_text("$ " + " ".join(shlex.quote(a) for a in master) + "\n")
        print(
            f"loadtest: {args.shape} for {args.duration:g}s, up to {args.users} users "
            f"({', '.join(classes)}) against {host}",
            flush=True,
        )
        server_pid = server.process.pid if server is not None else args.server_pid
        rc, sampled_rss = _run_master(args, out, master, env, workers, server_pid)
        meta.update(
            locust_exit=rc,
            finished=datetime.now(UTC).isoformat(timespec="seconds"),
            machine_after=machine.facts(),
        )
        if sampled_rss:
            meta["worker_rss"] = machine.worker_rss(out / "worker_rss.csv")
        (out / "meta.json").write_text(json.dumps(meta, indent=2))
    finally:
        if server is not None:
            server.stop()
    if not (out / "locust_stats.csv").exists():
        print(
            f"loadtest: Locust exited with {rc} and wrote no statistics; see {out / 'locust.log'}",
            file=sys.stderr,
        )
        return 2
    return report(out, Path(args.slo) if args.slo else None, gates=not args.no_gates)
