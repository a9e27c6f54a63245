"""What O2 + int8 costs in accuracy and gives in speed, on the sentiment model the project trains.

The `local` profile's `minilm-sentiment` (fp32) and `minilm-sentiment-int8` (O2 + dynamic int8)
are built from the one cached training run into the bench store, then scored on the same fixed
held-out sample as `tests/test_local_sentiment.py` and timed in process (length-sorted batches of
32). Training takes minutes, so the section runs only when the trained checkpoint is cached
(`make models PROFILE=local` caches it); otherwise it says how to get it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SOURCE = "trained:sentiment-minilm"
FP32, INT8 = "minilm-sentiment", "minilm-sentiment-int8"
SAMPLE_SIZE = 400


def trained_cache() -> Path:
    explicit = os.environ.get("TRAINED_MODELS_CACHE")
    if explicit:
        return Path(explicit)
    home = os.environ.get("BENTOML_HOME") or ROOT / ".bentoml"
    return Path(home) / "cache" / "trained"


def run(home: Path, rounds: int = 3) -> dict[str, Any]:
    """{"markdown", "checks"}: accuracy of both exports and their in-process speed."""
    from models.sources import resolve_source

    cache = trained_cache()
    if not resolve_source(SOURCE).cache_folder(cache).exists():
        return {
            "markdown": "Not measured: the trained sentiment checkpoint is not cached in "
            f"`{cache}`; `make models PROFILE=local` trains it once (minutes), then "
            "rerun the suite.",
            "checks": {},
        }
    import statistics

    from loadtests.bench import bench_models
    from loadtests.bench.in_process import PlainOrt
    from models.sentiment import LABELS, held_out_sample
    from service.runtime.tasks.classification import ClassificationParameters, TextClassifier

    env = {
        **os.environ,
        "BENTOML_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "TRAINED_MODELS_CACHE": str(cache),
    }
    subprocess.run(
        [sys.executable, "-m", "models", "build", "--profile", "local", FP32, INT8],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=1800,
    )
    stored = bench_models.stored(home)
    sample = held_out_sample(SAMPLE_SIZE)
    params = ClassificationParameters()
    accuracy, speed = {}, {}
    texts = [s.text for s in sample]
    for name in (FP32, INT8):
        folder = Path(stored[name]["path"])
        labels = [
            r[0]["label"]
            for r in TextClassifier.load(folder).classify([(t, params) for t in texts])
        ]
        accuracy[name] = sum(
            label == LABELS[s.label] for label, s in zip(labels, sample, strict=True)
        ) / len(sample)
    runners = {name: PlainOrt(Path(stored[name]["path"])) for name in (FP32, INT8)}
    rates: dict[str, list[float]] = {FP32: [], INT8: []}
    for _ in range(rounds):  # interleaved
        for name, runner in runners.items():
            rates[name].append(runner.sentences_per_second(texts[:256], 32))
    for name in rates:
        speed[name] = statistics.median(rates[name])
    loss = (accuracy[FP32] - accuracy[INT8]) * 100
    ratio = speed[INT8] / speed[FP32]
    markdown = "\n".join(
        [
            " ".join(
                (
                    "`local` sentiment model (all-MiniLM-L6-v2 fine-tuned here),",
                    f"{SAMPLE_SIZE} fixed held-out labelled sentences",
                    "(`models.sentiment.held_out_sample`), in process,",
                    "length-sorted batches of 32,",
                    f"median of {rounds} interleaved rounds:",
                )
            ),
            "",
            "| export | accuracy | sentences/s |",
            "|---|---|---|",
            f"| `{FP32}` (fp32) | {accuracy[FP32] * 100:.1f} % | {speed[FP32]:.1f} |",
            f"| `{INT8}` (O2 + dynamic int8) | {accuracy[INT8] * 100:.1f} % | {speed[INT8]:.1f} |",
            "",
            f"Accuracy loss {loss:.1f} points; speed-up {ratio:.2f}×.",
        ]
    )
    return {
        "markdown": markdown,
        "checks": {
            "sentiment O2+int8 accuracy loss (points, at most)": (round(loss, 2), 1.0, loss <= 1.0),
            "sentiment O2+int8 / fp32 in process (sorted b32)": (
                round(ratio, 3),
                1.8,
                ratio >= 1.8,
            ),
        },
    }
