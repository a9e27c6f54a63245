"""One place that decides how an ONNX Runtime session is configured.

Thread counts matter more than anything else on a small CPU box: every session in a worker shares
the cores, so the defaults come from the serving configuration rather than ORT's "all cores".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from service.runtime.prepared_graph import shareable


@dataclass
class SessionDefaults:
    """What the settings say about every session (`models.threads`, `models.allow_spinning`),
    set once per worker by `configure_sessions` before any model loads."""

    threads: int = 0  # 0: every core the process may use
    allow_spinning: bool | None = None  # None: each caller's choice
    # Where graphs saved with memory-mappable weights live (service/runtime/prepared_graph.py);
    # None: sessions asked to share weights load their graph as it is.
    prepared_cache: Path | None = None


DEFAULTS = SessionDefaults()


def configure_sessions(
    threads: int = 0, allow_spinning: bool | None = None, prepared_cache: Path | None = None
) -> None:
    DEFAULTS.threads, DEFAULTS.allow_spinning = threads, allow_spinning
    DEFAULTS.prepared_cache = prepared_cache


def default_threads() -> int:
    """Intra-op threads per session: `models.threads` or every core the process may use."""
    if DEFAULTS.threads:
        return DEFAULTS.threads
    return max(1, len(os.sched_getaffinity(0)))


def create_session(
    path: Path, threads: int | None = None, spinning: bool = True, shared: bool = True
) -> ort.InferenceSession:
    """An ORT CPU session with sequential execution and a fixed intra-op thread pool.

    `spinning=False` lets idle pool threads sleep instead of spinning: encoder models run one
    batch now and then in a worker whose event loop (HTTP, gRPC) and tokenizer need the same
    cores, which spinning threads starve. Measured on the tiny classifier behind HTTP: 12.7 ->
    4.3 ms of server CPU per request at c=1, 55 -> 89 requests/s at c=16 (BENCHMARKS.md, "Levers").
    Decode loops call ORT back to back and keep ORT's default. The setting
    `models.allow_spinning` (`ORT_ALLOW_SPINNING=0|1`) overrides both.

    The graph loads from the prepared-graph cache when one is configured (`models.share_weights`),
    so that every session of it, in every worker, maps the same weights; `shared=False` loads it
    as it is (measurements and tests that compare the two)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry(
        "session.intra_op.allow_spinning",
        "1" if (spinning if DEFAULTS.allow_spinning is None else DEFAULTS.allow_spinning) else "0",
    )
    if shared:
        path = shareable(Path(path), DEFAULTS.prepared_cache)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
