"""A short look at ours against the peers, without the rest of `make bench`: classification fp32
(DistilBERT-base) over HTTP at c=1 and c=16, interleaved rounds, the suite's own functions (the
same load generator, sentences, servers, contender keys and goals).

    python -m loadtests.bench.peers_compare --rounds 2 --seconds 10 [--home BENCH_HOME]

Our server gets a BentoML home of its own under `.cache/bench/` whose `models` links to the
bench store's (`--home`, default the suite's), so nothing is written into the store.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from loadtests.bench import suite
from loadtests.bench.bench_models import CLASSIFIER
from loadtests.bench.contenders import OURS_HTTP, PEER_CONCURRENCIES, PEERS

ROOT = Path(__file__).resolve().parents[2]


def run(home: Path, rounds: int, seconds: float, out: Path) -> dict[str, Any]:
    from loadtests.bench import bench_models
    from loadtests.bench.load_generator import run_load
    from loadtests.server_process import private_home, start_server

    work = ROOT / ".cache" / "bench" / "peers-compare"
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    own_home = private_home(home, ROOT / ".cache" / "bench" / "home-peers-compare")
    fp32 = CLASSIFIER.name
    model_dir = Path(bench_models.stored(own_home)[fp32]["path"])
    texts = work / "texts.json"
    texts.write_text(json.dumps(suite.corpus_sentences()[:256]))
    load_before = os.getloadavg()
    samples = suite.Samples()
    servers: list[Any] = []
    try:
        ours = start_server(
            own_home, logs / "ours.log", extra_env={"NLP_MODELS_SERVE": fp32, **suite.SERVER_ENV}
        )
        servers.append(ours)
        peers, facts = suite.start_peers(model_dir, logs)
        servers += peers.values()
        # (contender, url, pid, load-generator prefix, whether the body names the model)
        sides = [(OURS_HTTP, ours.url, ours.process.pid, None, fp32)]
        sides += [(PEERS[n], p.url, p.process.pid, p.prefix, None) for n, p in peers.items()]
        for _, url, _, prefix, model in sides:  # warm-up, unmeasured
            run_load("http", url, texts, 4, 1.0, "/classify", model, prefix)
        for index in range(rounds):
            print(f"round {index + 1}/{rounds}", flush=True)
            # Each round starts one contender further on, so that none is always measured
            # first or last when the machine's other load comes and goes.
            shift = index % len(sides)
            for contender, url, pid, prefix, model in sides[shift:] + sides[:shift]:
                for c in PEER_CONCURRENCIES:
                    cpu_before = suite.process_tree_cpu(pid)
                    got = run_load("http", url, texts, c, seconds, "/classify", model, prefix)
                    samples.add(
                        contender.key(model=fp32, c=c),
                        suite.summarize_load(got, suite.process_tree_cpu(pid) - cpu_before),
                    )
    finally:
        for server in servers:
            server.stop()
    checks = {
        name: value
        for name, value in suite.goals(samples, False, []).items()
        if "peer" in name or "FastAPI+ORT" in name
    }
    results = {
        "machine": suite.machine_facts(load_before),
        "rounds": rounds,
        "seconds": seconds,
        "peers": facts,
        "samples": samples.values,
        "checks": checks,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=suite.DEFAULT_HOME, help="bench store home")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "peers-compare")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results = run(args.home, args.rounds, args.seconds, args.out)
    fp32 = CLASSIFIER.name
    samples = suite.Samples(results["samples"])
    print(
        f"{'contender':<22} {'c':>3} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'CPU ms/req':>11}"
        "  req/s by round"
    )
    for name, contender in [("ours", OURS_HTTP), *PEERS.items()]:
        for c in PEER_CONCURRENCIES:
            key = contender.key(model=fp32, c=c)
            if not samples.has(key):
                continue
            med = lambda f, k=key: samples.median(k, lambda v: v[f])  # noqa: E731
            cpu = samples.median(key, lambda v: v["server_cpu_s"] / max(v["requests"], 1) * 1000)
            print(
                f"{name:<22} {c:>3} {med('throughput'):>8.1f} {med('p50_ms'):>8.1f} "
                f"{med('p95_ms'):>8.1f} {cpu:>11.1f}  "
                + " ".join(f"{point['throughput']:.1f}" for point in samples.values[key])
            )
    for name, (value, goal, ok) in results["checks"].items():
        print(f"{'ok  ' if ok else 'MISS'} {name}: {value} (goal {goal})")
    for name, facts in results["peers"].items():
        print(f"peer {name}: {json.dumps(facts)}")
    print(f"machine: {json.dumps(results['machine'])}")
    print(f"wall {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
