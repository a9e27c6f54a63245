"""Memory and latency of an encoder's two ORT sessions, loaded as they are and from the
prepared graph (service/runtime/prepared_graph.py), for issue #21 "Memory". Run from the
repository root:

    PYTHONPATH=$PWD python loadtests/results/memory-2026-12-07/measure_sessions.py \
        sessions GRAPH.onnx...
    cd loadtests/results/memory-2026-12-07 && PYTHONPATH=$OLDPWD BENTOML_HOME=STORE \
        python measure_sessions.py server MODEL...

`sessions`: for each graph, a fresh process per variant opens the wide session (every core, as
served) and then the single-threaded runner session, runs a batch on each (so that mapped
weights are paged in) and hands freed heap back (`malloc_trim`, as the data plane does after
loading a model), and reports what each added to the process's RSS and PSS
(/proc/self/smaps_rollup; PSS counts a page that two mappings share once, RSS once per mapping);
then what running every token id through the wide session adds ("every token id": a
memory-mapped embedding table is paged in row by row as tokens first appear). Then one process
times both variants interleaved (medians of rounds): a lone input of 32 tokens on the wide
session and a batch of 8 x 32 tokens on the runner session.

`server`: the real server serving one model (`NLP_MODELS_SERVE`; "all": the whole `local`
profile), `models.share_weights` off and on (and "before": a tree without the setting, run from
that tree); the worker's RSS and PSS at ready (medians of $STARTS starts).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

THREADS = len(os.sched_getaffinity(0))


def smaps() -> dict[str, float]:
    values = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            values[key.lower()] = int(rest.split()[0]) / 1024
    return values


def open_two(graph: str, cache: str) -> None:
    """(child) The two sessions of one encoder; prints what each added."""
    from service.heap import release_freed_memory
    from service.runtime.onnx_session import configure_sessions, create_session

    configure_sessions(0, None, Path(cache) if cache else None)
    release_freed_memory()
    before = smaps()
    wide = create_session(Path(graph), THREADS, spinning=False, shared=True)
    wide.run(None, feed(wide, 8, 32))
    release_freed_memory()  # as the data plane does once a model has loaded
    middle = smaps()
    narrow = create_session(Path(graph), 1, spinning=False, shared=True)
    narrow.run(None, feed(narrow, 8, 32))
    release_freed_memory()
    after = smaps()
    # Every token id once: a mapped embedding table is paged in row by row as tokens appear.
    vocab = json.loads((Path(graph).parent / "config.json").read_text())["vocab_size"]
    for start in range(0, vocab, 8 * 256):
        ids = np.arange(start, start + 8 * 256) % vocab
        inputs = feed(wide, 8, 256)
        inputs["input_ids"] = ids.reshape(8, 256).astype(np.int64)
        wide.run(None, inputs)
    release_freed_memory()
    every = smaps()
    print(
        json.dumps(
            {
                f"{which} {key}": round(b[key] - a[key], 1)
                for which, a, b in (
                    ("first", before, middle),
                    ("second", middle, after),
                    ("every token id", after, every),
                )
                for key in ("rss", "pss")
            }
        )
    )


def feed(session, batch: int, tokens: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "input_ids": rng.integers(1000, 2000, (batch, tokens)),
        "attention_mask": np.ones((batch, tokens), np.int64),
        "token_type_ids": np.zeros((batch, tokens), np.int64),
    }
    return {i.name: arrays[i.name].astype(np.int64) for i in session.get_inputs()}


def latency(graph: Path, cache: Path, rounds: int = 7, runs: int = 10) -> dict[str, float]:
    """Medians (ms) of round medians, the two variants interleaved in one process."""
    from service.runtime.onnx_session import configure_sessions, create_session

    configure_sessions(0, None, cache)
    sessions = {
        variant: (
            create_session(graph, THREADS, spinning=False, shared=shared),
            create_session(graph, 1, spinning=False, shared=shared),
        )
        for variant, shared in (("as is", False), ("prepared", True))
    }
    lone, batch = feed(sessions["as is"][0], 1, 32), feed(sessions["as is"][0], 8, 32)
    for variant in sessions:  # the prepared graph computes what the original does
        expected = sessions["as is"][0].run(None, batch)[0]
        for session in sessions[variant]:
            np.testing.assert_allclose(session.run(None, batch)[0], expected, atol=1e-4)
    samples: dict[str, list[float]] = {}
    for _ in range(rounds):
        for variant, (wide, narrow) in sessions.items():
            for name, session, inputs in (("lone", wide, lone), ("batch 8", narrow, batch)):
                times = []
                for _ in range(runs):
                    started = time.perf_counter()
                    session.run(None, inputs)
                    times.append((time.perf_counter() - started) * 1e3)
                samples.setdefault(f"{variant} {name} ms", []).append(statistics.median(times))
    return {key: round(statistics.median(v), 2) for key, v in samples.items()}


def sessions(graphs: list[str]) -> None:
    from service.runtime.prepared_graph import prepared_graph

    for graph in graphs:
        cache = Path(tempfile.mkdtemp(prefix="prepared-"))
        # Built here, not in the measured process (whose heap would keep the build's memory).
        prepared_graph(Path(graph), cache)
        row: dict[str, object] = {"graph": graph}
        for variant, cache_arg in (("as is", ""), ("prepared", str(cache))):
            done = subprocess.run(
                [sys.executable, __file__, "open-two", graph, cache_arg],
                capture_output=True,
                text=True,
                check=True,
            )
            row[variant] = json.loads(done.stdout)
        row["latency"] = latency(Path(graph), cache)
        print(json.dumps(row), flush=True)


VARIANTS = {
    # A tree from before this change knows neither setting.
    "before": {},
    "off": {"NLP_MODELS_SHARE_WEIGHTS": "0"},
    "on": {"NLP_MODELS_SHARE_WEIGHTS": "1"},
}


def server(models: list[str]) -> None:
    """Worker RSS and PSS at ready per model ("all": the whole profile), for each variant in
    $VARIANTS (default "off,on"), each started $STARTS times (default 2)."""
    import psutil

    from loadtests.server_process import start_server

    home = Path(os.environ["BENTOML_HOME"])
    starts = int(os.environ.get("STARTS", "2"))
    for model in models:
        prepared = Path(tempfile.mkdtemp(prefix="prepared-"))
        for variant in os.environ.get("VARIANTS", "off,on").split(","):
            env = {"PROFILE": "local", **VARIANTS[variant]}
            if model != "all":
                env["NLP_MODELS_SERVE"] = model
            if variant == "on":
                env["NLP_MODELS_PREPARED_GRAPHS_DIR"] = str(prepared)
            samples: dict[str, list[float]] = {}
            # With sharing, the first start builds the prepared graphs and is not measured.
            for measured in [variant != "on"] + [True] * (starts - (variant != "on")):
                logs = Path(tempfile.mkdtemp())
                live = start_server(home, logs / "server.log", env, timeout=600.0)
                try:
                    time.sleep(2.0)
                    if not measured:
                        continue
                    root = psutil.Process(live.process.pid)
                    (worker,) = [
                        p
                        for p in root.children(recursive=True)
                        if "worker" in " ".join(p.cmdline())
                    ]
                    info = worker.memory_full_info()
                    samples.setdefault("worker rss MB", []).append(info.rss / 1e6)
                    samples.setdefault("worker pss MB", []).append(info.pss / 1e6)
                finally:
                    live.stop()
            row = {"model": model, "variant": variant}
            row.update({k: round(statistics.median(v), 1) for k, v in samples.items()})
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "open-two":
        open_two(*args)
    elif command == "sessions":
        sessions(args)
    else:
        server(args)
