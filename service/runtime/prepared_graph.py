"""A graph saved once in the form ORT can memory-map, so that its sessions share the weights.

An encoder with runners holds two ORT sessions of one graph (service/runtime/encoder_batches.py),
and each session loaded from `model.onnx` keeps its own copy of every weight: the initializers it
parsed and the pre-packed GEMM layouts its MatMul kernels made from them. ORT's Python API (1.32)
has no pre-packed weights container, and initializers shared with `add_initializer` are still
pre-packed once per session (measured: the second session kept costing ~35-60 % of the first).

What does share: ORT optimizes the graph once and saves it with its initializers *and* its
pre-packed blobs in an external data file (`session.save_external_prepacked_constant_initializers`);
sessions loading that file memory-map it, so both sessions read the same page-cache pages
(loadtests/results/memory-2026-12-07: DistilBERT-base's second session +17 MB proportional set
size instead of +272 MB, MiniLM +7 instead of +95; latency unchanged). RSS still counts a shared
page once per mapping; PSS counts it once. Decoders (generation, seq2seq) load the same way, so
that workers share them: SmolLM2-135M's second session +29-37 MB instead of +650, and two
`local` workers 2.4 -> 1.5 GB PSS in all (the 2026-12-08 section of that record).

The saved graph is specific to this ORT version and CPU (pre-packed layouts follow the kernels
the CPU gets), so it lives in a cache keyed by both and by the source files' size and mtime;
a saved graph whose source is gone is removed when the next one is built.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import onnxruntime as ort

from models.cpu import cpu_flags, cpu_model

log = logging.getLogger(__name__)

GRAPH = "model.onnx"
DATA = "model.onnx.data"
# Initializers smaller than this stay inside the graph (ORT's own threshold is 1 KiB).
MIN_EXTERNAL_BYTES = 1024


def cache_key(source: Path) -> str:
    """What the saved graph depends on: the source graph's folder, ORT and the CPU."""
    facts: dict[str, object] = {
        "source": str(source.resolve()),
        "onnxruntime": ort.__version__,
        "cpu": cpu_model(),
        "flags": sorted(cpu_flags()),
        "files": sorted(
            (f.name, f.stat().st_size, f.stat().st_mtime_ns)
            for f in source.parent.iterdir()
            if f.is_file() and f.name.startswith(source.stem)
        ),
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:24]


def prepared_graph(source: Path, cache: Path) -> Path:
    """`source` optimized and saved with memory-mappable weights under `cache` (built once; a
    worker that loses the race to build it uses the winner's)."""
    folder = cache / cache_key(source)
    graph = folder / GRAPH
    if graph.exists():
        return graph
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".building-", dir=cache))
    try:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        options.optimized_model_filepath = str(work / GRAPH)
        for key, value in (
            ("session.optimized_model_external_initializers_file_name", DATA),
            ("session.optimized_model_external_initializers_min_size_in_bytes", MIN_EXTERNAL_BYTES),
            ("session.save_external_prepacked_constant_initializers", 1),
        ):
            options.add_session_config_entry(key, str(value))
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        (work / "source.json").write_text(
            json.dumps({"source": str(source.resolve()), "onnxruntime": ort.__version__}) + "\n"
        )
        try:
            os.rename(work, folder)
        except OSError:
            if not graph.exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("saved %s with memory-mappable weights as %s", source, graph)
    prune(cache)
    return graph


def prune(cache: Path) -> list[Path]:
    """Remove the saved graphs whose source graph is gone (a model version replaced or deleted),
    so that the cache holds no more than the store does; returns what it removed."""
    removed = []
    for folder in cache.iterdir():
        try:
            source = Path(json.loads((folder / "source.json").read_text())["source"])
        except (OSError, ValueError, KeyError):
            continue  # a build under way, or not ours
        if not source.exists():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def shareable(source: Path, cache: Path | None) -> Path:
    """The graph to load for sessions that should share weights: the prepared one, or `source`
    itself when there is no cache or preparing fails (a read-only disk, an unusual graph)."""
    if cache is None:
        return source
    try:
        return prepared_graph(source, cache)
    except Exception as err:  # noqa: BLE001 - sharing is an optimization, never a failure
        log.warning("cannot prepare %s for shared weights (%s); loading it as it is", source, err)
        return source
