"""Adaptive batching: requests that arrive while a model is busy run together in its next batch.

Why our own and not BentoML's batchable APIs: a batchable API takes exactly one argument (no
per-request `parameters`), can only be reached through its own HTTP route (not from the HF-payload
routes or from our gRPC server in the same process) and its dispatcher polls every millisecond and
cancels queued work by a latency estimate. This batcher is driven by the model being busy: an idle
model starts at once (no added latency at low load), a busy one collects everything that queued up
behind the running batch, up to `max_batch_size` items and `max_batch_input_tokens` tokens (items
arrive tokenized, `service/runtime/prepared.py`, so a batch of long inputs is cut before it holds
the model for long; an item alone always runs). `max_wait_ms` optionally holds an idle model back
a little to gather company. The batch function regroups items by length itself (see the tasks).
Each result comes back with when its batch ran (`Timed`), for the request's stage times.

Admission: a request is refused at once (`Overloaded`: 429 / RESOURCE_EXHAUSTED) when the queue
holds `max_queue` items, or when its estimated wait (what the running batch has left plus one
recent batch time per `max_batch_size` items queued ahead of it) exceeds `max_queue_ms`. Refusing
early is what keeps the latency of admitted requests near normal under overload: a queue that
only bounds length lets every admitted request wait behind hundreds of others. An idle model
with an empty queue always admits, so one slow batch cannot lock a model out.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from service.runtime.errors import Overloaded, ServingError

T = TypeVar("T")
R = TypeVar("R")

# (the batch's items, each one's wait in the queue, the batch's seconds), once it ran.
BatchObserver = Callable[[list[T], list[float], float], None]


@dataclass
class _Job(Generic[T, R]):
    item: T
    future: asyncio.Future[R]
    tokens: int
    enqueued: float = field(default_factory=time.perf_counter)
    # When the batch that ran it started and finished, and how many items it held.
    started: float = 0.0
    finished: float = 0.0
    batch_size: int = 0


@dataclass(frozen=True, slots=True)
class Timed(Generic[R]):
    """An item's result and when it queued and its batch ran (perf_counter seconds)."""

    result: R
    enqueued: float
    started: float
    finished: float
    batch_size: int


class AdaptiveBatcher(Generic[T, R]):
    """Runs `run_batch(items) -> results` (same length, same order) on one thread per model."""

    def __init__(
        self,
        name: str,
        run_batch: Callable[[list[T]], Sequence[R]],
        *,
        max_batch_size: int = 32,
        max_batch_input_tokens: int = 0,
        tokens: Callable[[T], int] | None = None,
        max_wait_ms: float = 0.0,
        max_queue: int = 256,
        max_queue_ms: float = 0.0,
        observer: BatchObserver[T] | None = None,
    ) -> None:
        """`tokens(item)` weighs an item against `max_batch_input_tokens` (0: no token bound)."""
        self.name = name
        self._run_batch = run_batch
        self.max_batch_size = max(1, max_batch_size)
        self.max_batch_input_tokens = max(0, max_batch_input_tokens)
        self._tokens = tokens
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self.max_queue = max_queue
        self.max_queue_wait = max(0.0, max_queue_ms) / 1000.0
        self._observer = observer
        # Recent seconds per batch (moving average) and when the running batch started: the
        # wait estimate of admission control.
        self.batch_seconds = 0.0
        self._running_since: float | None = None
        self._queue: asyncio.Queue[_Job[T, R]] | None = None
        # Taken from the queue but past the token budget of the batch it came to: it starts
        # the next one.
        self._held: _Job[T, R] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batch-{name}")

    @property
    def queued(self) -> int:
        return (self._queue.qsize() if self._queue else 0) + (self._held is not None)

    @property
    def busy(self) -> bool:
        """Items queued or a batch running."""
        return self.queued > 0 or self._running_since is not None

    def estimated_wait(self) -> float:
        """Seconds a request arriving now would wait before its first batch starts."""
        left = 0.0
        if self._running_since is not None:
            left = max(0.0, self._running_since + self.batch_seconds - time.perf_counter())
        return left + math.ceil(self.queued / self.max_batch_size) * self.batch_seconds

    def saturation(self, items: int = 1) -> tuple[str, float] | None:
        """(reason, retry-after seconds) when `items` more would pass a bound, else None.

        Cheap and read-only, so the HTTP front door can ask before it reads a body
        (`service.http.early_shedding`)."""
        queued = self.queued
        if queued + items > self.max_queue:
            return f"model {self.name!r} has {queued} requests queued", 1.0
        if self.max_queue_wait > 0:
            wait = self.estimated_wait()
            if wait > self.max_queue_wait:
                return (
                    f"model {self.name!r} is busy: about {wait * 1000:.0f} ms of work queued",
                    max(1.0, wait),
                )
        return None

    def _admit(self, items: int) -> None:
        verdict = self.saturation(items)
        if verdict is not None:
            raise Overloaded(verdict[0], retry_after=verdict[1])

    def _ensure_worker(self) -> asyncio.Queue[_Job[T, R]]:
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = self._queue or asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._loop())
        return self._queue

    async def submit_many(self, items: Sequence[T]) -> list[Timed[R]]:
        """Queue every item (all or none) and wait for their results, in order."""
        queue = self._ensure_worker()
        self._admit(len(items))
        loop = asyncio.get_running_loop()
        weigh = self._tokens
        jobs = [_Job(item, loop.create_future(), weigh(item) if weigh else 0) for item in items]
        for job in jobs:
            queue.put_nowait(job)
        try:
            results = await asyncio.gather(*(job.future for job in jobs))
        except asyncio.CancelledError:
            for job in jobs:
                job.future.cancel()
            raise
        return [
            Timed(result, job.enqueued, job.started, job.finished, job.batch_size)
            for job, result in zip(jobs, results, strict=True)
        ]

    async def submit(self, item: T) -> R:
        return (await self.submit_many([item]))[0].result

    async def _next_batch(self, queue: asyncio.Queue[_Job[T, R]]) -> list[_Job[T, R]]:
        first, self._held = self._held or await queue.get(), None
        batch, tokens = [first], first.tokens
        budget = self.max_batch_input_tokens or float("inf")
        deadline = first.enqueued + self.max_wait
        while len(batch) < self.max_batch_size:
            if not queue.empty():
                job = queue.get_nowait()
            else:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
            if job.future.done():  # its caller went away
                continue
            if tokens + job.tokens > budget:
                self._held = job
                break
            batch.append(job)
            tokens += job.tokens
        return [job for job in batch if not job.future.done()]

    async def _loop(self) -> None:
        queue = self._queue
        assert queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch(queue)
            if not batch:
                continue
            started = time.perf_counter()
            waits = [started - job.enqueued for job in batch]
            self._running_since = started
            try:
                results: Any = await loop.run_in_executor(
                    self._executor, self._run_isolating, [job.item for job in batch]
                )
            except Exception as exc:  # the batch failed: every caller gets the error
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            finally:
                self._running_since = None
            elapsed = time.perf_counter() - started
            self.batch_seconds = (
                elapsed if self.batch_seconds == 0 else (0.8 * self.batch_seconds + 0.2 * elapsed)
            )
            if self._observer:
                self._observer([job.item for job in batch], waits, elapsed)
            finished = started + elapsed
            for job, result in zip(batch, results, strict=True):
                if job.future.done():
                    continue
                job.started, job.finished, job.batch_size = started, finished, len(batch)
                if isinstance(result, BaseException):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)

    def _run_isolating(self, items: list[T]) -> Sequence[R | ServingError]:
        """Run the batch; if one item is refused, rerun one by one so only that caller fails."""
        try:
            return self._run_batch(items)
        except ServingError as exc:
            if len(items) == 1:
                return [exc]
        results: list[R | ServingError] = []
        for item in items:
            try:
                results.append(self._run_batch([item])[0])
            except ServingError as exc:
                results.append(exc)
        return results

    def close(self) -> None:
        if self._worker:
            self._worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
