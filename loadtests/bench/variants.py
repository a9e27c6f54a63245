"""A/B of serving settings: one server per variant (environment overrides), measured interleaved.

How the levers in BENCHMARKS.md were decided: every variant serves the same bench models, all are
up at once, and rounds alternate between them and the in-process limit, so that the noise of a
shared machine hits each alike. Server CPU per request (from /proc, the whole process tree) is
printed next to throughput: contention distorts it far less than wall-clock rates.

    python -m loadtests.bench.variants \\
        '{"spinning": {"ORT_ALLOW_SPINNING": "1"}, "default": {}}' \\
        --models bench-distilbert-base-sst,bench-distilbert-base-sst-o2-int8 --concurrency 1,16
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from loadtests.bench import bench_models
from loadtests.bench.in_process import PlainOrt
from loadtests.bench.load_generator import run_load
from loadtests.bench.suite import DEFAULT_HOME, SERVER_ENV, corpus_sentences, process_tree_cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", help='JSON: {"label": {"ENV": "value", ...}, ...}')
    parser.add_argument("--models", default=bench_models.CLASSIFIER.name)
    parser.add_argument("--route", default="/classify")
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--protocols", default="http")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sentences", type=int, default=128)
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME)
    args = parser.parse_args(argv)
    from loadtests.server_process import start_server

    variants: dict[str, dict[str, str]] = json.loads(args.variants)
    models = args.models.split(",")
    work = args.home.parent / "work-variants"
    work.mkdir(parents=True, exist_ok=True)
    texts = corpus_sentences()[: args.sentences]
    texts_file = work / "texts.json"
    texts_file.write_text(json.dumps(texts))
    bench_models.build(args.home, tuple(m for m in bench_models.ALL if m.name in models))
    stored = bench_models.stored(args.home)
    results: dict[str, list] = {}
    servers = {}
    try:
        for label, env in variants.items():
            servers[label] = start_server(
                args.home,
                work / f"{label}.log",
                extra_env={"NLP_MODELS_SERVE": ",".join(models), **SERVER_ENV, **env},
            )
        limits = {m: PlainOrt(Path(stored[m]["path"]), spinning=False) for m in models}
        for server in servers.values():
            for m in models:
                run_load("http", server.url, texts_file, 4, 1.0, args.route, m)
        for round_index in range(args.rounds):
            for m in models:
                rate, cpu_ms = limits[m].measure(texts, 32)
                results.setdefault(f"{m} in process sorted b32", []).append((rate, None, cpu_ms))
                for label, server in servers.items():
                    for c in (int(x) for x in args.concurrency.split(",")):
                        for protocol in args.protocols.split(","):
                            target = server.url if protocol == "http" else server.grpc_address
                            before = process_tree_cpu(server.process.pid)
                            out = run_load(
                                protocol, target, texts_file, c, args.seconds, args.route, m
                            )
                            cpu = process_tree_cpu(server.process.pid) - before
                            lat = sorted(out["latencies_ms"])
                            results.setdefault(f"{m} {label} {protocol} c={c}", []).append(
                                (
                                    out["throughput"],
                                    lat[len(lat) // 2] if lat else None,
                                    cpu / max(out["requests"], 1) * 1000,
                                )
                            )
            print(f"round {round_index + 1}/{args.rounds} done", flush=True)
    finally:
        for server in servers.values():
            server.stop()
    print("| setting | items/s | p50 ms | CPU ms per item | per round (items/s) |")
    print("|---|---|---|---|---|")
    for key, runs in results.items():
        rate = statistics.median(r[0] for r in runs)
        p50s = [r[1] for r in runs if r[1] is not None]
        p50 = f"{statistics.median(p50s):.1f}" if p50s else ""
        cpu = statistics.median(r[2] for r in runs)
        print(f"| {key} | {rate:.1f} | {p50} | {cpu:.2f} | {[round(r[0], 1) for r in runs]} |")


if __name__ == "__main__":
    main()
