"""Which batching settings to serve with: measured on a DistilBERT-base-size classifier.

Exports a random-weight DistilBERT (`DistilBertConfig()` defaults, 66M parameters; the project's
tiny WordPiece vocabulary, so sentences are somewhat longer in tokens than with bert-base's),
then, in one run:
  1. in process (the limit): `TextClassifier.classify` on length-sorted batches of 32 and one
     sentence at a time;
  2. served: one `bentoml serve` per batching setting, all up at once, measured in interleaved
     rounds under a closed-loop asyncio load of real sentences (aiohttp, one sentence per
     request) at concurrency 1 and 16.
Prints a Markdown table of sentences/s and latency percentiles.

    python -m loadtests.bench.batching [--seconds 10] [--rounds 3] [--home /tmp/bench-home]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODEL = "bench-distilbert-base"
SETTINGS = [  # (label, environment)
    ("no batching (max 1)", {"NLP_BATCHING_MAX_BATCH_SIZE": "1", "NLP_BATCHING_MAX_WAIT_MS": "0"}),
    ("max 8, wait 0 ms", {"NLP_BATCHING_MAX_BATCH_SIZE": "8", "NLP_BATCHING_MAX_WAIT_MS": "0"}),
    ("max 32, wait 0 ms", {"NLP_BATCHING_MAX_BATCH_SIZE": "32", "NLP_BATCHING_MAX_WAIT_MS": "0"}),
    ("max 32, wait 2 ms", {"NLP_BATCHING_MAX_BATCH_SIZE": "32", "NLP_BATCHING_MAX_WAIT_MS": "2"}),
    ("max 32, wait 10 ms", {"NLP_BATCHING_MAX_BATCH_SIZE": "32", "NLP_BATCHING_MAX_WAIT_MS": "10"}),
]


def sentences(n: int = 2000) -> list[str]:
    from models.tiny import corpus_sentences

    return corpus_sentences()[:n]


def export_model(home: Path) -> None:
    """A DistilBERT-base-size random classifier in the store under `bench-distilbert-base`."""
    env = {**os.environ, "BENTOML_HOME": str(home)}
    listed = subprocess.run(
        [sys.executable, "-m", "models", "list"], env=env, capture_output=True, text=True
    )
    if MODEL in listed.stdout:
        return
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    from models.tiny import _wordpiece_tokenizer

    checkpoint = home / "checkpoints" / MODEL
    tokenizer = _wordpiece_tokenizer(checkpoint, distil=True)
    tokenizer.model_max_length = 512
    tokenizer.save_pretrained(checkpoint)
    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=len(tokenizer), num_labels=2)
    DistilBertForSequenceClassification(config).eval().save_pretrained(checkpoint)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "models",
            "export",
            "--task",
            "text-classification",
            "--source",
            f"dir:{checkpoint}",
            "--name",
            MODEL,
        ],
        env=env,
        check=True,
    )


def in_process(home: Path, texts: list[str]) -> dict[str, float]:
    env_home = os.environ.get("BENTOML_HOME")
    os.environ["BENTOML_HOME"] = str(home)
    from models import store
    from service.runtime.tasks.classification import ClassificationParameters, TextClassifier

    _, path, _ = store.resolve(MODEL)
    if env_home:
        os.environ["BENTOML_HOME"] = env_home
    model = TextClassifier.load(path)
    params = ClassificationParameters()
    model.classify([(t, params) for t in texts[:64]])  # warm-up
    rates: dict[str, list[float]] = {}
    chunk = texts[:500]
    for _ in range(3):  # interleaved rounds
        for label, size in (("in process, sorted batches of 32", 32), ("in process, batch 1", 1)):
            start = time.perf_counter()
            for i in range(0, len(chunk), size):
                model.classify([(t, params) for t in chunk[i : i + size]])
            rates.setdefault(label, []).append(len(chunk) / (time.perf_counter() - start))
    return {label: statistics.median(values) for label, values in rates.items()}


async def closed_loop(
    url: str, texts: list[str], concurrency: int, seconds: float
) -> tuple[float, list[float]]:
    import aiohttp

    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    counter = iter(range(10**9))

    async def worker(session: aiohttp.ClientSession) -> None:
        while time.perf_counter() < deadline:
            text = texts[next(counter) % len(texts)]
            start = time.perf_counter()
            async with session.post(f"{url}/classify", json={"inputs": text}) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}")
            latencies.append(time.perf_counter() - start)

    started = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return len(latencies) / (time.perf_counter() - started), latencies


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000 if len(values) > 2 else float("nan")


def main(argv: list[str] | None = None) -> None:
    from loadtests.server_process import start_server

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--home", type=Path, default=Path("/tmp/bench-home"))
    args = parser.parse_args(argv)
    args.home.mkdir(parents=True, exist_ok=True)
    export_model(args.home)
    texts = sentences()
    limit = in_process(args.home, texts)
    # Every setting gets its own server, all up at once (idle ones cost nothing), and the
    # measurements interleave round by round, so that noise hits all settings alike.
    servers = {}
    try:
        for label, env in SETTINGS:
            servers[label] = start_server(
                args.home,
                args.home / f"server-{len(servers)}.log",
                extra_env={**env, "NLP_MODELS_SERVE": MODEL},
            )
        for server in servers.values():
            asyncio.run(closed_loop(server.url, texts, 4, 2.0))  # warm-up
        samples: dict[tuple[str, int], list[tuple[float, list[float]]]] = {}
        for _ in range(args.rounds):
            for label, server in servers.items():
                for concurrency in (1, 16):
                    samples.setdefault((label, concurrency), []).append(
                        asyncio.run(closed_loop(server.url, texts, concurrency, args.seconds))
                    )
    finally:
        for server in servers.values():
            server.stop()
    print(
        f"\n{MODEL}: {len(texts)} corpus sentences, {os.cpu_count()} cores; served: median of "
        f"{args.rounds} interleaved rounds of {args.seconds:.0f} s"
    )
    print("| setting | sentences/s | p50 ms | p95 ms |")
    print("|---|---|---|---|")
    for label, rate in limit.items():
        print(f"| {label} | {rate:.0f} | | |")
    for (label, concurrency), runs in samples.items():
        rate = statistics.median(r for r, _ in runs)
        p50 = statistics.median(percentile(lat, 50) for _, lat in runs)
        p95 = statistics.median(percentile(lat, 95) for _, lat in runs)
        print(f"| served, {label}, c={concurrency} | {rate:.0f} | {p50:.1f} | {p95:.1f} |")


if __name__ == "__main__":
    main()
