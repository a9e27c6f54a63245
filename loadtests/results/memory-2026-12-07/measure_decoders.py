"""A decoder's memory and speed, loaded as it is or from its prepared (memory-mapped) graph.

    cd REPO && PYTHONPATH=$PWD python loadtests/results/memory-2026-12-07/measure_decoders.py \
        generation FOLDER as_is|prepared CACHE
    cd REPO && PYTHONPATH=$PWD python loadtests/results/memory-2026-12-07/measure_decoders.py \
        seq2seq FOLDER as_is|prepared CACHE

generation: `TextGenerator` on an exported decoder-only folder (SmolLM2), 2 threads. MB added by
the first load and by a second `TextGenerator` of the same folder (RSS and PSS, after one
generation each and `malloc_trim`), tokens/s of 5 greedy generations of up to 64 tokens.
seq2seq: the translation suite's served path (a `DataPlane` holding the folder), 2 threads; MB
added by loading it, sentences/s at batch 1 (4 sentences one by one) and batch 8, median of 3.
CACHE: the prepared-graph folder (generation) or the BentoML home whose cache/ort-prepared the
data plane uses (seq2seq). `as_is` loads the graphs as the code before 2026-12-08 did. One
variant per process; alternate them.
"""

from __future__ import annotations

import ctypes
import json
import os
import statistics
import sys
import time
from pathlib import Path


def smaps() -> dict[str, float]:
    out = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if parts[0] in ("Rss:", "Pss:"):
            out[parts[0][:-1].lower()] = int(parts[1]) / 1024
    return out


def trim() -> None:
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def generation(folder: Path, variant: str, cache: Path) -> dict:
    from service.runtime import onnx_session
    from service.runtime.tasks.generation import GenerationParameters, TextGenerator

    onnx_session.configure_sessions(threads=2, prepared_cache=cache)
    if variant == "as_is":  # as the code before 2026-12-08 loaded it
        onnx_session.shareable = lambda path, _cache: path
    base = smaps()
    started = time.perf_counter()
    first_model = TextGenerator.load(folder, threads=2)
    load_s = time.perf_counter() - started
    params = GenerationParameters(max_new_tokens=64)
    prompt = "The history of the printing press begins"
    result = first_model.generate([prompt], params)[0]
    trim()
    first = smaps()
    rates = []
    for _ in range(5):
        started = time.perf_counter()
        again = first_model.generate([prompt], params)[0]
        rates.append(again.generated_tokens / (time.perf_counter() - started))
    second_model = TextGenerator.load(folder, threads=2)
    second_model.generate([prompt], params)
    trim()
    second = smaps()
    return {
        "load_s": round(load_s, 2),
        "first_rss": round(first["rss"] - base["rss"], 1),
        "first_pss": round(first["pss"] - base["pss"], 1),
        "second_rss": round(second["rss"] - first["rss"], 1),
        "second_pss": round(second["pss"] - first["pss"], 1),
        "tok_s_median": round(statistics.median(rates), 2),
        "rates": [round(x, 1) for x in rates],
        "tokens": result.generated_tokens,
        "text": result.generated_text[:80],
    }


def seq2seq(folder: Path, variant: str, cache: Path) -> dict:
    from loadtests.bench.suite import corpus_sentences
    from loadtests.bench.translation_suite import ServedTranslation

    if variant == "as_is":
        import service.runtime.onnx_session as onnx_session

        onnx_session.shareable = lambda path, _cache: path
    os.environ["BENTOML_HOME"] = str(cache)  # the data plane's prepared cache goes under it
    texts = [t for t in corpus_sentences() if len(t.split()) >= 8][:16]
    base = smaps()
    started = time.perf_counter()
    served = ServedTranslation(folder, 2, "m")
    load_s = time.perf_counter() - started
    served.translate(texts[:2])
    trim()
    loaded = smaps()
    batch1, batch8 = [], []
    for _ in range(3):
        batch1.append(statistics.mean(served.translate([t])["sent/s"] for t in texts[:4]))
        batch8.append(served.translate(texts[8:16])["sent/s"])
    ids = served.token_ids(texts[0])
    served.close()
    return {
        "load_s": round(load_s, 2),
        "rss": round(loaded["rss"] - base["rss"], 1),
        "pss": round(loaded["pss"] - base["pss"], 1),
        "b1": round(statistics.median(batch1), 2),
        "b8": round(statistics.median(batch8), 2),
        "ids": ids[:12],
    }


if __name__ == "__main__":
    kind, folder, variant, cache = sys.argv[1], Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    measure = generation if kind == "generation" else seq2seq
    print(json.dumps({"kind": kind, "variant": variant, **measure(folder, variant, cache)}))
