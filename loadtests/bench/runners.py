"""In-process figures behind `models.encoder_runners` and the fp32 decoding ceiling (levers.md).

    python -m loadtests.bench.runners --rounds 3                 # DistilBERT-base fp32, b4..b32
    python -m loadtests.bench.runners --model bench-distilbert-base-sst-o2-int8 --batches 8
    python -m loadtests.bench.runners --bandwidth                # memory read GB/s, 1 and 2 threads

For each batch size, 256 corpus sentences sorted by length: one session with 2 intra-op threads
(not spinning, spinning), the same session called by 2 threads at once, and two single-threaded
calls side by side (`PlainOrt.measure_side_by_side`), medians of interleaved rounds; then the
batch-1 latency of 1 vs 2 threads and the RSS a second session costs. The bench models are
those `make bench` builds (`.cache/bench/home`).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path

from loadtests.bench import bench_models
from loadtests.bench.in_process import PlainOrt
from loadtests.bench.suite import DEFAULT_HOME, corpus_sentences


def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


def bandwidth(megabytes: int = 540) -> None:
    """Best of 5 `numpy.dot` over two float32 vectors of `megabytes` each, on 1 and 2 threads:
    a read bandwidth no decoder whose weights are that large can beat per token."""
    import numpy as np

    a = np.ones(megabytes * 10**6 // 4, dtype=np.float32)
    b = np.ones_like(a)
    half = a.size // 2
    for parts in ([(a, b)], [(a[:half], b[:half]), (a[half:], b[half:])]):
        best = 0.0
        for _ in range(5):
            threads = [threading.Thread(target=np.dot, args=p) for p in parts]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            best = max(best, 2 * a.nbytes / (time.perf_counter() - started) / 1e9)
        print(
            f"{len(parts)} thread(s): {best:.1f} GB/s read -> at most "
            f"{best * 1e9 / (megabytes * 1e6):.1f} reads of {megabytes} MB per second"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=bench_models.CLASSIFIER.name)
    parser.add_argument("--batches", default="4,8,16,32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME)
    parser.add_argument("--bandwidth", action="store_true")
    args = parser.parse_args(argv)
    if args.bandwidth:
        bandwidth()
        return
    bench_models.build(args.home, tuple(m for m in bench_models.ALL if m.name == args.model))
    folder = Path(bench_models.stored(args.home)[args.model]["path"])
    texts = corpus_sentences()[:256]
    before = _rss_mb()
    two = PlainOrt(folder, threads=2, spinning=False)
    with_one = _rss_mb()
    one = PlainOrt(folder, threads=1, spinning=False)
    second = _rss_mb() - with_one
    spinning = PlainOrt(folder, threads=2, spinning=True)
    contenders = {
        "one session, 2 threads, not spinning": lambda b: two.measure(texts, b),
        "one session, 2 threads, spinning": lambda b: spinning.measure(texts, b),
        "one session, 2 threads, called by 2 threads at once": lambda b: two.measure_side_by_side(
            texts, b
        ),
        "two single-threaded calls side by side": lambda b: one.measure_side_by_side(texts, b),
    }
    batches = [int(b) for b in args.batches.split(",")]
    samples: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for run in contenders.values():
        run(8)  # warm-up
    for _ in range(args.rounds):
        for size in batches:
            for name, run in contenders.items():
                samples.setdefault((name, size), []).append(run(size))
    print(
        f"{args.model}, {len(texts)} sentences sorted by length, median of {args.rounds} "
        "interleaved rounds: items/s (CPU ms per item)\n"
    )
    print("| contender | " + " | ".join(f"batch {b}" for b in batches) + " |")
    print("|---|" + "---|" * len(batches))
    for name in contenders:
        cells = [
            f"{statistics.median(r for r, _ in samples[(name, b)]):.1f} "
            f"({statistics.median(c for _, c in samples[(name, b)]):.1f})"
            for b in batches
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    items = two.encode(texts[:64])
    for label, model in (("2 threads", two), ("1 thread", one)):
        latencies = []
        for item in items:
            started = time.perf_counter()
            model.run([item])
            latencies.append((time.perf_counter() - started) * 1000)
        print(f"\nbatch-1 latency p50, {label}: {statistics.median(latencies):.2f} ms", end="")
    print(f"\n\nRSS: first session +{with_one - before:.0f} MB, second session +{second:.0f} MB")


if __name__ == "__main__":
    main()
