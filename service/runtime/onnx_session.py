"""One place that decides how an ONNX Runtime session is configured.

Thread counts matter more than anything else on a small CPU box: every session in a worker shares
the cores, so the defaults come from the serving configuration rather than ORT's "all cores".
"""

from __future__ import annotations

import os
from pathlib import Path

import onnxruntime as ort


def default_threads() -> int:
    """Intra-op threads per session: `ORT_INTRA_OP_THREADS` or every core the process may use."""
    env = os.environ.get("ORT_INTRA_OP_THREADS")
    if env:
        return max(1, int(env))
    return max(1, len(os.sched_getaffinity(0)))


def create_session(path: Path, threads: int | None = None, spinning: bool = True
                   ) -> ort.InferenceSession:
    """An ORT CPU session with sequential execution and a fixed intra-op thread pool.

    `spinning=False` lets idle pool threads sleep instead of spinning: encoder models run one
    batch now and then in a worker whose event loop (HTTP, gRPC) and tokenizer need the same
    cores, which spinning threads starve. Measured on the tiny classifier behind HTTP: 12.7 ->
    4.3 ms of server CPU per request at c=1, 55 -> 89 requests/s at c=16 (BENCHMARKS.md, "Levers").
    Decode loops call ORT back to back and keep ORT's default. `ORT_ALLOW_SPINNING=0|1`
    overrides both."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry(
        "session.intra_op.allow_spinning",
        os.environ.get("ORT_ALLOW_SPINNING", "1" if spinning else "0"))
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def input_names(session: ort.InferenceSession) -> set[str]:
    return {i.name for i in session.get_inputs()}
