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
import sys
from pathlib import Path

from loadtests.runner.locust_run import run
from loadtests.runner.paths import DEFAULT_SLO
from loadtests.runner.report import report

SHAPES = ("steady", "step", "spike", "soak")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m loadtests",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run Locust headless, write the report, apply the SLO gates")
    r.add_argument("--host", help="base URL of the service, e.g. http://127.0.0.1:3000")
    r.add_argument("--grpc", help="HOST:PORT of the KServe v2 gRPC endpoint (adds the gRPC user)")
    r.add_argument("--shape", choices=SHAPES, default="steady")
    r.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    r.add_argument("--users", type=int, default=10, help="peak users (default 10)")
    r.add_argument(
        "--rps-per-user", type=float, default=1.0, help="requests/s each user aims at (default 1)"
    )
    r.add_argument("--steps", type=int, default=0, help="step shape: steps (default 1 per 30 s)")
    r.add_argument(
        "--start-users",
        type=int,
        default=0,
        help="step shape: users of the first step (default users/steps)",
    )
    r.add_argument("--spawn-rate", type=float, default=0.0, help="users/s (default: the shape's)")
    r.add_argument("--out", help="report folder (default reports/loadtest/SHAPE-TIMESTAMP)")
    r.add_argument("--slo", default=str(DEFAULT_SLO), help="SLO gates (default loadtests/slo.yaml)")
    r.add_argument(
        "--no-gates", action="store_true", help="report only; exit 0 unless the run itself failed"
    )
    r.add_argument(
        "--serve",
        metavar="PROFILE",
        help="build PROFILE and start a server for the run (otherwise nothing is started)",
    )
    r.add_argument(
        "--bentoml-home", help="model store for --serve (default $BENTOML_HOME or .bentoml)"
    )
    r.add_argument(
        "--server-pid",
        type=int,
        default=0,
        help="pid of the `bentoml serve` process: sample its workers' RSS every 5 s "
        "into worker_rss.csv (automatic with --serve)",
    )
    r.add_argument("--only", help="comma-separated user classes to run (default: all served)")
    r.add_argument(
        "--workers",
        type=int,
        default=0,
        help="distributed: N local Locust workers under one master",
    )
    r.add_argument(
        "--warmup",
        type=float,
        default=0.0,
        help="seconds of unmeasured load "
        "first (--start-users, else a quarter of --users; default 0)",
    )
    r.add_argument(
        "--stop-timeout",
        type=float,
        default=3.0,
        help="seconds users get to finish at the end (default 3)",
    )
    r.add_argument("--quiet", action="store_true", help="don't echo Locust's output")

    p = sub.add_parser("report", help="rebuild the report of a finished run")
    p.add_argument("out", help="the run's report folder")
    p.add_argument("--slo", default=str(DEFAULT_SLO))
    p.add_argument("--no-gates", action="store_true")
    p.add_argument(
        "--shape",
        choices=SHAPES,
        help="the run's shape when it has no meta.json (e.g. a docker-compose run)",
    )
    p.add_argument("--rps-per-user", type=float, help="likewise: LOADTEST_RPS_PER_USER")

    args = parser.parse_args(argv)
    if args.command == "run":
        args.argv = argv
        return run(args)
    return report(
        Path(args.out),
        Path(args.slo) if args.slo else None,
        gates=not args.no_gates,
        overrides={"shape": args.shape, "rps_per_user": args.rps_per_user},
    )
