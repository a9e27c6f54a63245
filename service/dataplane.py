"""The data plane: served models, their batchers and metrics, behind every protocol adapter.

HTTP task routes, the OpenAI routes and KServe v2 (REST and gRPC) all call these methods, so a
request costs, batches and counts the same whichever door it came through (MLServer's design).
Nothing here knows about HTTP or tensors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from service import metrics
from service.batching import AdaptiveBatcher
from service.config import Settings
from service.model_repository import ModelRecord, load_records
from service.runtime.errors import InvalidInput, ModelNotFound, Overloaded, ServingError
from service.runtime.registry import TASKS, TaskSpec

log = logging.getLogger("service.dataplane")


@dataclass
class ServedModel:
    record: ModelRecord
    spec: TaskSpec
    runtime: Any
    batcher: AdaptiveBatcher[Any, Any] | None = None
    generation_slots: asyncio.Semaphore | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def task(self) -> str:
        return self.record.task

    def describe(self, default: bool) -> dict[str, Any]:
        r = self.record
        return {"task": r.task, "name": r.name, "tag": r.tag, "source": r.source,
                "optimization": r.optimization, "quantization": r.quantization,
                "default": default}


class DataPlane:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.models: dict[str, ServedModel] = {}
        self.defaults: dict[str, str] = {}
        self.ready = False

    # --- lifecycle ------------------------------------------------------------------------------
    def load(self, records: Sequence[ModelRecord] | None = None) -> None:
        """Load and warm up every configured model; raises if any fails (start-up stops)."""
        records = list(records) if records is not None else load_records(self.settings)
        for record in records:
            spec = TASKS[record.task]
            started = time.perf_counter()
            runtime = spec.load(record.path, self.settings)
            runtime.warmup()
            served = ServedModel(record, spec, runtime)
            if spec.run_batch is not None:
                served.batcher = self._make_batcher(served)
            if spec.streams:
                served.generation_slots = asyncio.Semaphore(
                    self.settings.limits.max_concurrent_generations)
            self.models[record.name] = served
            metrics.MODEL_INFO.labels(record.name, record.task, record.version,
                                      record.optimization or "none",
                                      record.quantization or "none").set(1)
            log.info("loaded %s (%s) in %.2fs", record.tag, record.task,
                     time.perf_counter() - started)
        for record in records:
            if record.default or record.task not in self.defaults:
                self.defaults.setdefault(record.task, record.name)
                if record.default:
                    self.defaults[record.task] = record.name
        for task, name in self.settings.models.defaults.items():
            if name not in self.models:
                raise ModelNotFound(f"configured default for {task} is {name!r}, not served")
            self.defaults[task] = name
        self.ready = True

    def _make_batcher(self, served: ServedModel) -> AdaptiveBatcher[Any, Any]:
        b = self.settings.batching
        name, task = served.name, served.task
        method = served.spec.endpoint

        def observe(size: int, waits: list[float], seconds: float) -> None:
            metrics.BATCH_SIZE.labels(name, task).observe(size)
            metrics.BENTOML_BATCH_SIZE.labels(name, metrics.worker_index(), method, "",
                                              "nlp-serving").observe(size)
            metrics.INFERENCE_DURATION.labels(name, task).observe(seconds)
            queue = metrics.QUEUE_DURATION.labels(name, task)
            for wait in waits:
                queue.observe(wait)

        runtime, run_batch = served.runtime, served.spec.run_batch
        assert run_batch is not None
        return AdaptiveBatcher(
            name, lambda items: run_batch(runtime, items),
            max_batch_size=b.max_batch_size, max_wait_ms=b.max_wait_ms, max_queue=b.max_queue,
            observer=observe,
        )

    def close(self) -> None:
        for served in self.models.values():
            if served.batcher:
                served.batcher.close()

    # --- lookup ---------------------------------------------------------------------------------
    def model(self, task: str, name: str | None = None) -> ServedModel:
        """The named model (which must serve `task`) or the task's default model."""
        if name is None:
            name = self.defaults.get(task)
            if name is None:
                raise ModelNotFound(f"no model serves {task}")
        served = self.models.get(name)
        if served is None:
            raise ModelNotFound(f"model {name!r} is not served; see GET /models")
        if served.task != task:
            raise InvalidInput(f"model {name!r} serves {served.task}, not {task}", field="model")
        return served

    def describe(self) -> list[dict[str, Any]]:
        return [m.describe(self.defaults.get(m.task) == m.name) for m in self.models.values()]

    # --- accounting -----------------------------------------------------------------------------
    @contextmanager
    def observe(self, served: ServedModel, protocol: str):
        """Time a request and count its outcome by the exception it ended with."""
        started = time.perf_counter()
        outcome = "ok"
        try:
            yield
        except (InvalidInput, ModelNotFound):
            outcome = "client_error"
            raise
        except Overloaded:
            outcome = "overload"
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception:
            outcome = "server_error"
            raise
        finally:
            metrics.REQUESTS.labels(served.name, served.task, protocol, outcome).inc()
            metrics.REQUEST_DURATION.labels(served.name, served.task, protocol).observe(
                time.perf_counter() - started)

    def _check_inputs(self, count: int) -> None:
        if count == 0:
            raise InvalidInput("at least one input is required", field="inputs")
        if count > self.settings.limits.max_inputs:
            raise InvalidInput(
                f"{count} inputs; at most {self.settings.limits.max_inputs} per request",
                field="inputs")

    async def run_batched(self, task: str, items: Sequence[Any], model: str | None,
                          protocol: str) -> list[Any]:
        """Submit independent items of one request to the model's batcher."""
        served = self.model(task, model)
        with self.observe(served, protocol):
            self._check_inputs(len(items))
            assert served.batcher is not None
            return await served.batcher.submit_many(items)

    # --- generation -----------------------------------------------------------------------------
    async def generate_stream(self, prompt: str, params: Any, model: str | None,
                              protocol: str, task: str = "text-generation", *,
                              add_special_tokens: bool = True) -> AsyncIterator[Any]:
        """Yield the runtime's stream events (tokens, then the final result) without blocking
        the event loop; generation stops when the consumer stops iterating."""
        served = self.model(task, model)
        with self.observe(served, protocol):
            slots = served.generation_slots
            assert slots is not None
            if slots.locked():
                raise Overloaded(f"model {served.name!r} is generating at capacity",
                                 retry_after=1.0)
            async with slots:
                started = time.perf_counter()
                first_at: float | None = None
                iterator = served.runtime.stream(prompt, params,
                                                 add_special_tokens=add_special_tokens)
                sentinel = object()
                tokens = 0
                try:
                    while True:
                        event = await asyncio.to_thread(next, iterator, sentinel)
                        if event is sentinel:
                            break
                        if getattr(event, "is_token", False):
                            tokens += 1
                            if first_at is None:
                                first_at = time.perf_counter()
                                metrics.TIME_TO_FIRST_TOKEN.labels(served.name, task).observe(
                                    first_at - started)
                        yield event
                finally:
                    close: Callable[[], None] | None = getattr(iterator, "close", None)
                    if close:
                        await asyncio.to_thread(close)
                    metrics.GENERATED_TOKENS.labels(served.name, task).inc(tokens)
                    if first_at is not None and tokens > 1:
                        metrics.TIME_PER_OUTPUT_TOKEN.labels(served.name, task).observe(
                            (time.perf_counter() - first_at) / (tokens - 1))


__all__ = ["DataPlane", "ServedModel", "ServingError"]
