"""Iteration-level batching for generation: concurrent requests share every decode step.

Decoding one request after another leaves the CPU reading the whole model's weights for a single
token per call; a batch of N rows reads them once for N tokens. So one thread per model owns a
`DecodeBatch`: between two steps it lets requests leave (finished, cancelled, past their deadline)
and new ones join (their prompts are prefilled together, then merged into the batch's left-padded
KV cache), and each step is one ORT call over every active sequence (Orca's iteration-level
scheduling, as in TGI and vLLM). Tokens reach each request's asyncio queue as they are made.

Greedy tokens are those of the request decoded alone: rows only share the call, each keeps its
own mask, positions and cache (tests/test_generation_batching.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from service.runtime.errors import DeadlineExceeded, ModelLoadError, Overloaded, ServingError
from service.runtime.tasks.generation import (
    DecodeBatch,
    DecodingSequence,
    GeneratedToken,
    GenerationResult,
    TextGenerator,
)

log = logging.getLogger("service.generation")

_END = object()
# Called on the scheduler thread after each ORT call: (rows in the call, tokens it produced).
StepObserver = Callable[[int, int], None]


@dataclass(eq=False)
class ScheduledGeneration:
    """One request's place in the scheduler: an async iterator of its tokens, then its
    `GenerationResult`. `cancel()` (any thread) makes it leave the batch before the next step."""

    sequence: DecodingSequence
    deadline: float | None  # time.monotonic() seconds; None = no deadline
    loop: asyncio.AbstractEventLoop
    wake: Callable[[], None]
    submitted: float = field(default_factory=time.perf_counter)
    admitted: float | None = None  # when its prefill started (perf_counter)
    cancelled: bool = False
    closed: bool = False  # no more events will be delivered
    _queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)

    def cancel(self) -> None:
        if not self.closed:
            self.cancelled = True
            self.wake()

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    def __aiter__(self) -> ScheduledGeneration:
        return self

    async def __anext__(self) -> GeneratedToken | GenerationResult:
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # iterating again ends again
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item

    # --- scheduler thread side ------------------------------------------------------------------
    def _deliver(self, items: list[Any], last: bool = False) -> None:
        if self.closed:
            return
        if last:
            self.closed = True
            items = [*items, _END]
        try:
            self.loop.call_soon_threadsafe(_put_all, self._queue, items)
        except RuntimeError:  # the event loop is gone: nobody is listening any more
            self.cancelled = self.closed = True

    def _fail(self, error: BaseException) -> None:
        self._deliver([error], last=True)


def _put_all(queue: asyncio.Queue[Any], items: list[Any]) -> None:
    for item in items:
        queue.put_nowait(item)


class GenerationScheduler:
    """Owns one model's decode loop on a thread of its own; `submit` from the event loop."""

    def __init__(
        self,
        generator: TextGenerator,
        name: str,
        *,
        max_active: int,
        max_waiting: int,
        on_step: StepObserver | None = None,
    ) -> None:
        self.generator = generator
        self.name = name
        self.max_active = max(1, max_active)
        self.max_waiting = max(0, max_waiting)
        self.on_step = on_step
        self._waiting: deque[ScheduledGeneration] = deque()
        self._members: list[ScheduledGeneration] = []  # aligned with self._batch.sequences
        self._batch: DecodeBatch | None = None
        self._condition = threading.Condition()
        self._closed = False
        self._in_flight = 0  # submitted and not yet finished: waiting, joining or decoding
        self._thread = threading.Thread(target=self._loop, name=f"generate-{name}", daemon=True)
        self._thread.start()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def submit(
        self, sequence: DecodingSequence, deadline: float | None = None
    ) -> ScheduledGeneration:
        """Queue a prepared sequence; it joins the batch at the next step boundary. Raises
        Overloaded when `max_active` requests decode and `max_waiting` more wait already."""
        generation = ScheduledGeneration(sequence, deadline, asyncio.get_running_loop(), self._wake)
        with self._condition:
            if self._closed:
                raise ModelLoadError(f"model {self.name!r} is shutting down")
            if self._in_flight >= self.max_active + self.max_waiting:
                raise Overloaded(
                    f"model {self.name!r} is generating at capacity "
                    f"({self.max_active} decoding together, {self.max_waiting} "
                    "waiting)",
                    retry_after=1.0,
                )
            self._waiting.append(generation)
            self._in_flight += 1
            self._condition.notify()
        return generation

    def close(self, timeout: float = 10.0) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify()
        self._thread.join(timeout)

    def _wake(self) -> None:
        with self._condition:
            self._condition.notify()

    def _retire(self, count: int) -> None:
        """`count` requests ended (finished, failed, cancelled or expired)."""
        with self._condition:
            self._in_flight -= count

    # --- the decode loop (scheduler thread) -----------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._condition:
                while not (self._waiting or self._members or self._closed):
                    self._condition.wait()
                if self._closed:
                    break
                joining = self._admit()
            try:
                self._leave(time.monotonic())
                if joining:
                    self._join(joining)
                self._finish()
                if self._members:
                    self._step()
            except Exception as exc:  # a failed ORT call fails the requests it carried
                log.exception("generation step failed on %s", self.name)
                error = (
                    exc
                    if isinstance(exc, ServingError)
                    else ServingError(f"generation failed: {type(exc).__name__}")
                )
                self._retire(len(self._members))
                for member in self._members:
                    member._fail(error)
                self._members, self._batch = [], None
        shutdown = ModelLoadError(f"model {self.name!r} is shutting down")
        for generation in [*self._members, *self._waiting]:
            generation._fail(shutdown)

    def _admit(self) -> list[ScheduledGeneration]:
        """Waiting requests that fit in the batch (called with the lock held); waiting ones
        that were cancelled or expired are dropped here, without computing anything."""
        now = time.monotonic()
        for generation in [g for g in self._waiting if g.cancelled or g.expired(now)]:
            self._waiting.remove(generation)
            self._in_flight -= 1  # the lock is held
            self._stop(generation, now)
        joining = []
        while self._waiting and len(self._members) + len(joining) < self.max_active:
            joining.append(self._waiting.popleft())
        return joining

    def _stop(self, generation: ScheduledGeneration, now: float) -> None:
        if generation.cancelled:
            generation.closed = True
        else:
            generation._fail(
                DeadlineExceeded("the request's deadline passed before generation finished")
            )

    def _leave(self, now: float) -> None:
        """Cancelled and expired members leave the batch before the next step."""
        keep = [row for row, g in enumerate(self._members) if not (g.cancelled or g.expired(now))]
        if len(keep) == len(self._members):
            return
        self._retire(len(self._members) - len(keep))
        for row, generation in enumerate(self._members):
            if row not in keep:
                self._stop(generation, now)
        self._members = [self._members[row] for row in keep]
        if self._members:
            assert self._batch is not None
            self._batch.keep(keep)
        else:
            self._batch = None

    def _join(self, joining: list[ScheduledGeneration]) -> None:
        started = time.perf_counter()
        for generation in joining:
            generation.admitted = started
        try:
            batch, first = self.generator.prefill([g.sequence for g in joining])
        except Exception as exc:
            error = (
                exc
                if isinstance(exc, ServingError)
                else ServingError(f"generation failed: {type(exc).__name__}")
            )
            log.exception("prefill failed on %s", self.name)
            self._retire(len(joining))
            for generation in joining:
                generation._fail(error)
            return
        self._observe(len(joining), len(joining))
        for generation, token in zip(joining, first, strict=True):
            if generation.sequence.error is None:
                generation._deliver([token])
        if self._batch is None:
            self._batch, self._members = batch, list(joining)
        else:
            self._batch.merge(batch)
            self._members = self._members + joining

    def _finish(self) -> None:
        """Finished members get their result and leave."""
        if self._batch is None:
            return
        done = [g for g in self._members if g.sequence.finished]
        if not done:
            return
        self._retire(len(done))  # before the results: a caller that has its result sees it
        for generation in done:
            sequence = generation.sequence
            if sequence.error is not None:  # its grammar could not go on: only it fails
                generation._fail(sequence.error)
            else:
                generation._deliver([sequence.result()], last=True)
        self._batch.drop_finished()
        self._members = [g for g in self._members if not g.sequence.finished]
        if not self._members:
            self._batch = None

    def _step(self) -> None:
        assert self._batch is not None
        tokens = self.generator.step(self._batch)
        self._observe(len(tokens), len(tokens))
        for generation, token in zip(self._members, tokens, strict=True):
            if generation.sequence.error is None:
                generation._deliver([token])

    def _observe(self, rows: int, tokens: int) -> None:
        if self.on_step is not None:
            try:
                self.on_step(rows, tokens)
            except Exception:  # metrics must never stop decoding
                log.exception("generation step observer failed")
