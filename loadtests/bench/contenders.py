"""The benchmark's contenders, one row each: what it is called, how it starts and the key its
measurements are filed under in results.json.

The suite, the goals and BENCHMARKS.md all read measurements by these keys; naming them here
once keeps a typo from silently reading an empty series (a missing key's median is NaN).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.bench import peer_servers

CPU_MS = "-cpu-ms"  # suffix of the key of a measurement's CPU milliseconds per item


def _plain_ort(**options: Any) -> Callable[[Path], Any]:
    def start(model_dir: Path) -> Any:
        from loadtests.bench.in_process import PlainOrt

        return PlainOrt(model_dir, **options)

    return start


@dataclass(frozen=True)
class Contender:
    """One side of the suite's comparisons."""

    name: str
    starts: str  # how it runs, in words
    measures: str  # results.json key: a template over {model} or {task}, {batch} or {c}
    # In-process ONNX Runtime contenders: opens a session on a stored model's folder.
    start: Callable[[Path], Any] | None = None
    protocol: str | None = None  # served contenders: how the load generator talks to it

    def key(self, **where: Any) -> str:
        """The results key of one measurement, e.g. `key(model=m, batch=32)`."""
        return self.measures.format(**where)


ORT = Contender(
    "plain ONNX Runtime, sorted batches",
    "in this process, ORT's default (spinning) intra-op threads",
    "{model}/limit/b{batch}",
    start=_plain_ort(),
)
ORT_ARRIVAL = Contender(
    "plain ONNX Runtime, arrival-order batches",
    "the ORT session above, batches cut in arrival order",
    "{model}/limit/b{batch}-arrival",
)
ORT_NO_SPIN = Contender(
    "plain ONNX Runtime, threads not spinning",
    "in this process, intra-op threads that sleep when idle",
    "{model}/limit/b{batch}-no-spin",
    start=_plain_ort(spinning=False),
)
ORT_RUNNERS = Contender(
    "plain ONNX Runtime, 1-thread runs side by side",
    "in this process, one single-threaded session run from one thread per core",
    "{model}/limit/b{batch}-runners",
    start=_plain_ort(threads=1, spinning=False),
)
LATENCY_FLOOR = Contender(
    "batch-1 latency floor",
    "the better of ORT and ORT_NO_SPIN, one item per call",
    "{model}/limit/b1-latency",
)
TORCH = Contender(
    "PyTorch pipeline",
    "in this process, `transformers.pipeline` on the checkpoint, one call per item",
    "{task}/torch/b1",
)
FASTAPI = Contender(
    "FastAPI + PyTorch pipeline",
    "a hand-written FastAPI server (`fastapi_baseline.py`), closed loop",
    "{task}/fastapi/c{c}",
    protocol="http",
)
OURS_HTTP = Contender(
    "ours over HTTP",
    "`bentoml serve`, one worker, closed loop (`load_generator.py`)",
    "{model}/http/c{c}",
    protocol="http",
)
OURS_GRPC = Contender(
    "ours over gRPC",
    "the same server's KServe v2 gRPC endpoint, closed loop",
    "{model}/grpc/c{c}",
    protocol="grpc",
)


def _peer_contender(peer: Any) -> Contender:
    return Contender(
        f"peer: {peer.title}",
        f"`loadtests/bench/peers/{peer.module}` in its own venv "
        f"(`requirements/peers/{peer.name}.txt`), closed loop",
        f"{{model}}/peer-{peer.name}/c{{c}}",
        protocol="http",
    )


# The peers (issue #21): other serving frameworks on the same ONNX model and sentences, over
# HTTP at c=1 and c=16 (`peer_servers.py`; full suite, classification fp32 only), by peer name.
PEERS = {peer.name: _peer_contender(peer) for peer in peer_servers.PEERS}
BATCHING_PEERS = tuple(PEERS[peer.name] for peer in peer_servers.PEERS if peer.batching)
FASTAPI_ORT = PEERS["fastapi-ort"]
PEER_CONCURRENCIES = (1, 16)

# The quick suite's encoder task lines (`suite.task_lines`), filed by line: one route's
# payload over HTTP against the same model rows in process (a similarity line and the embeddings
# workload share a model, so these keys name the line, not the model).
TASK_HTTP = Contender(
    "ours over HTTP, one task route",
    "`bentoml serve`, closed loop, the route's payload (several model rows per request)",
    "line/{line}/http/c{c}",
    protocol="http",
)
TASK_ORT = Contender(
    "plain ONNX Runtime on the task's rows, sorted batches",
    "in this process, the rows the served requests compute (pairs encoded as pairs)",
    "line/{line}/limit/b{batch}",
    start=_plain_ort(),
)
TASK_ORT_NO_SPIN = Contender(
    "plain ONNX Runtime on the task's rows, threads not spinning",
    "as TASK_ORT, intra-op threads that sleep when idle",
    "line/{line}/limit/b{batch}-no-spin",
    start=_plain_ort(spinning=False),
)

# The in-process ORT sessions the suite opens per served model.
SESSIONS = (ORT, ORT_NO_SPIN, ORT_RUNNERS)
SERVED = (OURS_HTTP, OURS_GRPC)
TASK_SESSIONS = (TASK_ORT, TASK_ORT_NO_SPIN)
# The FastAPI baseline's concurrency levels.
BASELINE_CONCURRENCIES = (1, 16)


def in_process_limit(samples: Any, model: str) -> float:
    """The hardware limit the goals divide by: the better of ORT's default and non-spinning
    threads, sorted batches of 32 (items/s; NaN when neither was measured)."""
    return max(
        samples.median(ORT.key(model=model, batch=32)),
        samples.median(ORT_NO_SPIN.key(model=model, batch=32)),
    )


def task_line_limit(samples: Any, line: str) -> float:
    """A task line's in-process figure: model rows/s, the better of ORT's default and
    non-spinning threads, sorted batches of 32 (NaN when neither was measured)."""
    return max(
        samples.median(TASK_ORT.key(line=line, batch=32)),
        samples.median(TASK_ORT_NO_SPIN.key(line=line, batch=32)),
    )
