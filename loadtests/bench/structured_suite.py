"""Structured generation's cost: decoding under a JSON schema vs free decoding, same model, same
prompts, one run.

    python -m loadtests.bench.structured_suite            # SmolLM2-135M-Instruct (served graph)
    python -m loadtests.bench.structured_suite --quick    # tiny Llama, seconds

Contenders, interleaved round after round through the in-process `DataPlane` (the scheduler and
its decode thread, as an HTTP request minus the socket), greedy, at most 64 new tokens: free
decoding and decoding under a typical 10-field JSON schema, one stream and 8 concurrent streams.
The rate counted is decode tokens/s after the first token (the schema's answers and the free
ones end at different lengths, so the prefill is left out of both). Also timed: compiling that
schema for the model's tokenizer, uncached (a new `title` each time), median of 20.

Goals (issue #19): constrained decoding ≤ 10 % slower per token, one stream and 8 streams
(checked as constrained ÷ free speed ≥ 0.91); compiling the schema ≤ 50 ms (checked as 50 ms ÷
compile time ≥ 1).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from loadtests.bench.generation_suite import (  # noqa: E402
    SERVED,
    STREAMS,
    ServedGeneration,
    bench_prompts,
    catalog_graph,
    model_folders,
)
from loadtests.bench.interleave import (  # noqa: E402
    check,
    interleaved,
    load_average,
    median,
    save_record,
    suite_main,
    table,
)

NEW_TOKENS = 64
COMPILES = 20
SLOWDOWN_GOAL = 1 / 1.10  # constrained speed ÷ free speed
COMPILE_GOAL_S = 0.050
# A typical 10-field schema (the one loadtests/results/grammar-engines-2026-12-07 measured).
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0},
        "email": {"type": "string", "format": "email"},
        "city": {"type": "string"},
        "country": {"type": "string", "enum": ["FR", "DE", "US", "GB"]},
        "score": {"type": "number"},
        "active": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
        "joined": {"type": "string", "format": "date"},
        "notes": {"type": ["string", "null"]},
    },
    "additionalProperties": False,
}
SCHEMA["required"] = list(SCHEMA["properties"])
FREE, CONSTRAINED = "free", "JSON schema"


def compile_seconds(folder: Path) -> list[float]:
    """Uncached compiles of SCHEMA for the model's tokenizer (its llguidance tokenizer built
    once beforehand, as the model's warm-up does)."""
    from service.runtime.constraints import Grammar
    from service.runtime.tasks.generation import TextGenerator

    compiler = TextGenerator.load(folder, threads=1).grammars
    assert compiler is not None
    compiler.tokenizer  # noqa: B018 (built before timing, as at warm-up)
    times = []
    for run in range(COMPILES):
        grammar = Grammar(type="json", value={**SCHEMA, "title": f"run{run}"})
        started = time.perf_counter()
        compiler.constraint(grammar)
        times.append(time.perf_counter() - started)
    return times


def run(
    quick: bool, out_dir: Path, rounds: int | None = None, threads: int | None = None
) -> dict[str, Any]:
    from service.runtime.constraints import Grammar
    from service.runtime.tasks.generation import GenerationParameters

    threads = threads or len(os.sched_getaffinity(0))
    rounds = rounds or (2 if quick else 5)
    load_before = load_average()
    label, checkpoint, onnx_dir = model_folders(quick)
    folder = catalog_graph(quick, checkpoint, onnx_dir, SERVED[quick])
    prompts = bench_prompts(STREAMS)
    free = GenerationParameters(max_new_tokens=NEW_TOKENS)
    constrained = free.model_copy(update={"grammar": Grammar(type="json", value=SCHEMA)})
    streams = ServedGeneration(folder, threads, name="bench-structured")
    try:
        samples = interleaved(
            {
                f"{FREE}, 1 stream": lambda: streams.streams(prompts[:1], free),
                f"{CONSTRAINED}, 1 stream": lambda: streams.streams(prompts[:1], constrained),
                f"{FREE}, {STREAMS} streams": lambda: streams.streams(prompts, free),
                f"{CONSTRAINED}, {STREAMS} streams": lambda: streams.streams(prompts, constrained),
            },
            rounds,
        )
    finally:
        streams.close()
    compiles = compile_seconds(folder)
    compile_median = statistics.median(compiles)
    rate = {name: median(values, "decode tok/s") for name, values in samples.items()}
    one = rate[f"{CONSTRAINED}, 1 stream"] / rate[f"{FREE}, 1 stream"]
    many = rate[f"{CONSTRAINED}, {STREAMS} streams"] / rate[f"{FREE}, {STREAMS} streams"]
    checks = {
        "structured_one_stream_speed_vs_free": check(one, round(SLOWDOWN_GOAL, 3)),
        "structured_8_streams_speed_vs_free": check(many, round(SLOWDOWN_GOAL, 3)),
        "structured_compile_50ms_over_median": check(COMPILE_GOAL_S / compile_median, 1.0),
    }
    rows = [
        [name, f"{rate[name]:.1f}", int(median(values, "tokens"))]
        for name, values in samples.items()
    ]
    command = "python -m loadtests.bench.structured_suite" + (" --quick" if quick else "")
    markdown = "\n".join(
        [
            f"Model: {label}, served graph `{SERVED[quick]}`; greedy, at most {NEW_TOKENS} new "
            f"tokens, {threads} threads, median of {rounds} interleaved rounds; machine load "
            f"(1/5/15 min) {load_before} before, {load_average()} after.",
            "",
            table(["contender", "decode tokens/s", "tokens per run"], rows),
            "",
            f"- one stream: constrained {one:.3f}× the free speed "
            f"(goal ≥ {SLOWDOWN_GOAL:.3f}×, i.e. ≤ 10 % slower per token)",
            f"- {STREAMS} streams: constrained {many:.3f}× the free speed (same goal)",
            f"- compiling the 10-field schema, uncached: median {compile_median * 1000:.2f} ms, "
            f"max {max(compiles) * 1000:.2f} ms over {COMPILES} (goal ≤ 50 ms)",
            "",
            f"Command: `{command}`",
        ]
    )
    save_record(
        out_dir,
        "structured.json",
        model=label,
        threads=threads,
        rounds=rounds,
        samples=samples,
        compile_seconds=compiles,
        checks=checks,
    )
    return {"markdown": markdown, "checks": checks}


def main(argv: list[str] | None = None) -> int:
    return suite_main(run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
