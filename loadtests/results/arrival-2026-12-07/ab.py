"""A/B of server trees: each started once on the same bench store, short closed-loop runs of the
suite's load generator alternating between them (the order reversed every other pair).

    python ab.py before=/tmp/before after=/tmp/after --pairs 8 --seconds 4

Each NAME=TREE is a checkout of this repository (a git worktree at some commit); the servers
serve `bench-all-minilm-l6-v2` from `.cache/bench/home` (built by `make bench-quick`), as
`make bench-quick` does (`NLP_BATCHING_MAX_QUEUE_MS=0`). Printed: every pair, then medians and
the per-pair throughput ratios to the first tree.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from loadtests.bench.load_generator import measure  # noqa: E402
from loadtests.server_process import free_port, private_home, wait_until_ok  # noqa: E402

HOME = ROOT / ".cache" / "bench" / "home"
MODEL = "bench-all-minilm-l6-v2"
CORPUS = ROOT / "models" / "data" / "sentences_en.tsv"


def start(tree: str, logs: Path) -> tuple[subprocess.Popen, str]:
    port, grpc_port = free_port(), free_port()
    env = {
        **os.environ,
        "BENTOML_HOME": str(private_home(HOME, logs / f"home-{port}")),
        "HF_HUB_OFFLINE": "1",
        "PORT": str(port),
        "GRPC_PORT": str(grpc_port),
        "BENTOML_DO_NOT_TRACK": "True",
        "NLP_MODELS_SERVE": MODEL,
        "NLP_BATCHING_MAX_QUEUE_MS": "0",
        "PYTHONPATH": tree,
    }
    log = logs / f"{port}.log"
    command = [sys.executable, "-m", "bentoml", "serve", "service.service:NLPService"]
    process = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        cwd=tree,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert wait_until_ok(f"http://127.0.0.1:{port}/readyz", process, 180), log.read_text()[-3000:]
    return process, f"http://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", help="NAME=TREE")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--c", type=int, nargs="+", default=[16, 1])
    parser.add_argument("--route", default="/embed")
    parser.add_argument("--logs", type=Path, default=Path("/tmp/ab-logs"))
    args = parser.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)
    texts = [
        line.split("\t")[-1] for line in CORPUS.read_text(encoding="utf-8").splitlines()[1:400]
    ]
    servers = {}
    for spec in args.trees:
        name, tree = spec.split("=", 1)
        servers[name] = start(tree, args.logs)
    names = list(servers)
    results: dict[tuple[str, int], list[tuple[float, float]]] = {
        (n, c): [] for n in names for c in args.c
    }
    try:
        for name in names:  # warm-up, not counted
            for c in args.c:
                measure("http", servers[name][1], args.route, MODEL, texts, c, 2)
        for pair in range(args.pairs):
            order = names if pair % 2 == 0 else names[::-1]
            for c in args.c:
                for name in order:
                    run = measure(
                        "http", servers[name][1], args.route, MODEL, texts, c, args.seconds
                    )
                    latencies = sorted(run["latencies_ms"])
                    results[(name, c)].append((run["throughput"], latencies[len(latencies) // 2]))
            print(
                f"pair {pair + 1}: "
                + ", ".join(
                    f"{n} c{c} {results[(n, c)][-1][0]:.1f}/s p50 {results[(n, c)][-1][1]:.2f}"
                    for n in names
                    for c in args.c
                ),
                flush=True,
            )
    finally:
        for process, _ in servers.values():
            os.killpg(process.pid, 15)
    print("load", Path("/proc/loadavg").read_text().strip())
    for c in args.c:
        for n in names:
            runs = results[(n, c)]
            print(
                f"c={c} {n}: median {statistics.median(r[0] for r in runs):.1f} req/s, "
                f"p50 median {statistics.median(r[1] for r in runs):.2f} ms"
            )
        for n in names[1:]:
            ratios = [
                x[0] / y[0] for x, y in zip(results[(n, c)], results[(names[0], c)], strict=True)
            ]
            print(
                f"c={c} {n}/{names[0]} throughput per pair: "
                + " ".join(f"{r:.2f}" for r in ratios)
                + f"  median {statistics.median(ratios):.3f}"
            )


if __name__ == "__main__":
    main()
