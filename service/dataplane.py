"""The data plane: served models, their batchers and metrics, behind every protocol adapter.

HTTP task routes, the OpenAI routes and KServe v2 (REST and gRPC) all call these methods, so a
request costs, batches and counts the same whichever door it came through (MLServer's design).
Nothing here knows about HTTP or tensors.

A batched request's items are tokenized and checked as it arrives (the runtime's `prepare`, on
the event loop for a short request, else on the tokenizing threads), so a refused input never
queues; the prepared items then wait for a
batch, and the request's stage times (tokenize, queue, inference) come back with its results
for the metrics, its trace and its access-log line (TEI's router/backend split).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, TypeVar

from service import deadlines, metrics, request_logging, tracing
from service.batching import AdaptiveBatcher, Timed
from service.config import Settings
from service.cpu_tuning import choose
from service.generation_scheduler import GenerationScheduler
from service.heap import release_freed_memory
from service.model_repository import ModelRecord, load_records, portability_warnings
from service.runtime.errors import (
    DeadlineExceeded,
    InvalidInput,
    ModelNotFound,
    Overloaded,
    ServingError,
)
from service.runtime.onnx_session import configure_sessions
from service.runtime.prepared import Prepared, prepare_items
from service.runtime.registry import TASKS, TaskSpec

log = logging.getLogger("service.dataplane")
TEXT_GENERATION = "text-generation"
# Models loaded at once at start-up (one per core this process may use).
LOAD_THREADS = len(os.sched_getaffinity(0))
T = TypeVar("T")
# Text (characters) a request may hold and still be tokenized on the event loop: a short sentence
# encodes in about 40 µs, less than handing it to a tokenizing thread and back (about 90 µs,
# measured 2026-12-07 on a 2-vCPU EPYC), and no thread wakes up beside the model's. Larger
# requests go to the tokenizing threads, so the loop is never held for long.
INLINE_TOKENIZE_CHARS = 2048


@dataclass
class ServedModel:
    record: ModelRecord
    spec: TaskSpec
    runtime: Any
    batcher: AdaptiveBatcher[Any, Any] | None = None
    scheduler: GenerationScheduler | None = None

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def task(self) -> str:
        return self.record.task

    # --- what an adapter may ask of a model: it never reaches into the runtime ----------------
    @property
    def tokenizer(self) -> Any:
        """The model's `TextTokenizer` (TGI/TEI `/tokenize`, `/decode`, OpenAI echo)."""
        return self.runtime.tokenizer

    @property
    def max_input_tokens(self) -> int:
        """Tokens one input may have (an encoder's limit; a decoder's context)."""
        runtime = self.runtime
        return int(getattr(runtime, "max_input_tokens", 0) or getattr(runtime, "max_positions", 0))

    @property
    def max_positions(self) -> int | None:
        """A decoder's context length (prompt and generated tokens), None for other models."""
        return getattr(self.runtime, "max_positions", None)

    @property
    def embedding_dimension(self) -> int | None:
        return getattr(self.runtime, "dimension", None)

    @property
    def pooling_modes(self) -> tuple[str, ...] | None:
        modes = getattr(self.runtime, "modes", None)
        return tuple(modes) if modes is not None else None

    def count_tokens(self, texts: Sequence[str], options: Any) -> int:
        """Tokens the model reads for `texts` with these options (usage figures)."""
        return int(sum(self.runtime.count_tokens(texts, options)))

    def chat_prompt(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> str:
        """The prompt the model's chat template makes of `messages` (and `tools`, for a template
        that takes them); a model without one is refused naming `model`."""
        if not getattr(self.runtime, "chat_template", None):
            raise InvalidInput(
                f"model {self.name!r} has no chat template; use /v1/completions", field="model"
            )
        return self.runtime.apply_chat_template(messages, tools=tools)

    @property
    def template_takes_tools(self) -> bool:
        """Whether the chat template renders `tools` itself (else they go in a system turn)."""
        return "tools" in (getattr(self.runtime, "chat_template", None) or "")

    def describe(self, default: bool) -> dict[str, Any]:
        r = self.record
        return {
            "task": r.task,
            "name": r.name,
            "tag": r.tag,
            "source": r.public_source,
            "graph": r.graph,
            "optimization": r.optimization,
            "quantization": r.quantization,
            "default": default,
            "untrained": r.untrained,
        }


@dataclass(frozen=True, slots=True)
class StageTimes:
    """Where one request's time went (TEI's split): tokenizing its items on arrival, waiting
    for their batches, and running them (seconds), and the tokens fed to the model."""

    tokenize_seconds: float
    queue_seconds: float
    inference_seconds: float
    input_tokens: int

    def log_fields(self) -> dict[str, float | int]:
        return {
            "tokenize_ms": round(self.tokenize_seconds * 1000, 3),
            "queue_ms": round(self.queue_seconds * 1000, 3),
            "inference_ms": round(self.inference_seconds * 1000, 3),
            "input_tokens": self.input_tokens,
        }


@dataclass(slots=True)
class RequestTrace:
    """A request in flight: when the data plane took it and its span (None: tracing is off)."""

    started: float
    span: Any = None


class DataPlane:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.models: dict[str, ServedModel] = {}
        self.defaults: dict[str, str] = {}
        self.ready = False
        # Where arriving items are tokenized: off the event loop, as the batches run.
        self._tokenizing = ThreadPoolExecutor(LOAD_THREADS, thread_name_prefix="tokenize")
        self.tuning = choose(settings)

    # --- lifecycle ------------------------------------------------------------------------------
    def load(
        self, records: Sequence[ModelRecord] | None = None, configured_defaults: bool = True
    ) -> None:
        """Load and warm up every configured model; raises if any fails (start-up stops).
        `configured_defaults`: apply `models.defaults` (a worker that joins after models were
        unloaded may lack some, and takes the first model of each task instead)."""
        records = list(records) if records is not None else load_records(self.settings)
        log.info("%s", self.tuning.summary())
        configure_sessions(
            self.settings.models.threads,
            self.settings.models.allow_spinning,
            self.settings.models.prepared_cache(),
        )
        tracing.configure()
        # Sessions are built and warmed up side by side: ORT and tokenizers release the GIL,
        # so start-up takes less than the sum of the models' load times.
        with ThreadPoolExecutor(
            max_workers=max(1, min(len(records), LOAD_THREADS)), thread_name_prefix="load"
        ) as pool:
            loaded = list(pool.map(self.load_runtime, records))
        for record, (runtime, seconds) in zip(records, loaded, strict=True):
            self.install(record, runtime, seconds)
        for record in records:
            if record.default or record.task not in self.defaults:
                self.defaults.setdefault(record.task, record.name)
                if record.default:
                    self.defaults[record.task] = record.name
        for task, name in self.settings.models.defaults.items():
            if not configured_defaults and name not in self.models:
                continue
            if name not in self.models:
                raise ModelNotFound(f"configured default for {task} is {name!r}, not served")
            self.defaults[task] = name
        self.ready = True

    def load_runtime(self, record: ModelRecord) -> tuple[Any, float]:
        """A model's runtime, loaded and warmed up, and the seconds that took (any thread)."""
        started = time.perf_counter()
        runtime = TASKS[record.task].load(record.path, self.settings)
        runtime.warmup()
        release_freed_memory()
        return runtime, time.perf_counter() - started

    def install(self, record: ModelRecord, runtime: Any, seconds: float) -> ServedModel | None:
        """Serve a loaded runtime under its name (on the event loop's thread); returns the model
        it replaces, if any, for `retire`. A task without a default model gets this one."""
        for warning in portability_warnings([record]):
            log.warning("%s", warning)
        spec = TASKS[record.task]
        served = ServedModel(record, spec, runtime)
        if spec.run_batch is not None:
            served.batcher = self._make_batcher(served)
        if spec.streams:
            served.scheduler = self._make_scheduler(served)
        replaced = self.models.get(record.name)
        if replaced is not None:
            self._forget_metrics(replaced)
        self.models[record.name] = served
        if self.ready and record.task not in self.defaults:
            self.defaults[record.task] = record.name
        metrics.MODEL_INFO.labels(
            record.name,
            record.task,
            record.version,
            record.optimization or "none",
            record.quantization or "none",
        ).set(1)
        log.info("loaded %s (%s) in %.2fs", record.tag, record.task, seconds)
        return replaced

    def uninstall(self, name: str) -> ServedModel:
        """Stop serving a model (on the event loop's thread): new requests get 404, those in
        flight finish (`retire` waits for them). If it was its task's default, another model
        of the task becomes the default, else the task has none."""
        served = self.models.pop(name, None)
        if served is None:
            raise ModelNotFound(f"model {name!r} is not served")
        if self.defaults.get(served.task) == name:
            others = [m.name for m in self.models.values() if m.task == served.task]
            if others:
                self.defaults[served.task] = others[0]
            else:
                del self.defaults[served.task]
        self._forget_metrics(served)
        log.info("unloaded %s (%s)", served.record.tag, served.task)
        return served

    @staticmethod
    def _forget_metrics(served: ServedModel) -> None:
        record = served.record
        with suppress(KeyError):
            metrics.MODEL_INFO.remove(
                record.name,
                record.task,
                record.version,
                record.optimization or "none",
                record.quantization or "none",
            )

    async def retire(self, served: ServedModel, grace_s: float = 60.0) -> None:
        """Close a model that no longer takes requests once the ones it holds are done (or
        after `grace_s`)."""
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and (
            (served.batcher is not None and served.batcher.busy)
            or (served.scheduler is not None and served.scheduler.in_flight)
        ):
            await asyncio.sleep(0.05)
        await asyncio.to_thread(self._close_model, served)

    @staticmethod
    def _close_model(served: ServedModel) -> None:
        if served.batcher:
            served.batcher.close()
        if served.scheduler:
            served.scheduler.close()
        served.runtime.close()

    def _make_batcher(self, served: ServedModel) -> AdaptiveBatcher[Any, Any]:
        b = self.settings.batching
        name, task = served.name, served.task
        batch_size = metrics.BATCH_SIZE.labels(name, task)
        bentoml_batch_size = metrics.BENTOML_BATCH_SIZE.labels(
            name, metrics.worker_index(), served.spec.endpoint, "", "nlp-serving"
        )
        queue = metrics.QUEUE_DURATION.labels(name, task)
        tokenization = metrics.TOKENIZATION_DURATION.labels(name, task)
        inference = metrics.INFERENCE_DURATION.labels(name, task)
        input_tokens = metrics.INPUT_TOKENS.labels(name, task)
        runtime, run_batch = served.runtime, served.spec.run_batch
        assert run_batch is not None

        def run(batch: list[Prepared[Any, Any]]) -> Sequence[Any]:
            return run_batch(runtime, batch)

        def observe(batch: list[Prepared[Any, Any]], waits: list[float], seconds: float) -> None:
            # Tokenization is counted per batch, of the items it ran (tokenized on arrival).
            batch_size.observe(len(batch))
            bentoml_batch_size.observe(len(batch))
            tokenization.observe(sum(p.tokenize_seconds for p in batch))
            inference.observe(seconds)
            input_tokens.inc(sum(p.input_tokens for p in batch))
            for wait in waits:
                queue.observe(wait)

        return AdaptiveBatcher(
            name,
            run,
            max_batch_size=b.max_batch_size,
            max_batch_input_tokens=b.max_batch_input_tokens,
            tokens=lambda prepared: prepared.input_tokens,
            max_wait_ms=b.max_wait_ms,
            max_queue=b.max_queue,
            max_queue_ms=b.max_queue_ms,
            observer=observe,
        )

    def _make_scheduler(self, served: ServedModel) -> GenerationScheduler:
        """The model's decode loop: up to `limits.max_concurrent_generations` sequences decoded
        together, `limits.max_queued_generations` more waiting for a place."""
        name, task = served.name, served.task
        batch_size = metrics.BATCH_SIZE.labels(name, task)
        generated = metrics.GENERATED_TOKENS.labels(name, task)

        def observe(rows: int, tokens: int) -> None:
            # Counted as computed, step by step: a stopped generation stops this counter.
            batch_size.observe(rows)
            generated.inc(tokens)

        grammars = getattr(served.runtime, "grammars", None)
        if grammars is not None:
            hits = metrics.GRAMMAR_LOOKUPS.labels(name, "hit")
            misses = metrics.GRAMMAR_LOOKUPS.labels(name, "miss")
            compile_seconds = metrics.GRAMMAR_COMPILE_DURATION.labels(name)

            def compiled(hit: bool, seconds: float) -> None:
                if hit:
                    hits.inc()
                else:
                    misses.inc()
                    compile_seconds.observe(seconds)

            grammars.observe = compiled

        return GenerationScheduler(
            served.runtime,
            name,
            max_active=self.settings.limits.max_concurrent_generations,
            max_waiting=self.settings.limits.max_queued_generations,
            on_step=observe,
        )

    def close(self) -> None:
        for served in self.models.values():
            self._close_model(served)
        self._tokenizing.shutdown(wait=False, cancel_futures=True)
        tracing.shutdown()

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

    def shed(
        self, task: str | None = None, name: str | None = None, protocol: str = "http"
    ) -> Overloaded | None:
        """Admission before a request is even read: the `Overloaded` that a request for the
        named model (else the task's default) would get because its queue is past its bound,
        counted as such; None when the model would take it (or is not batched)."""
        served = self.models.get(name if name is not None else self.defaults.get(task or "", ""))
        if served is None or served.batcher is None:
            return None
        verdict = served.batcher.saturation()
        if verdict is None:
            return None
        refusal = Overloaded(*verdict)
        metrics.REQUESTS.labels(served.name, served.task, protocol, refusal.outcome).inc()
        return refusal

    def text_model(self, name: str | None = None) -> ServedModel:
        """The named model of any task, else the default text-generation model (else the first
        task that has a default): the model `/tokenize`, `/decode` and `/info` speak for."""
        if name is not None:
            served = self.models.get(name)
            if served is None:
                raise ModelNotFound(f"model {name!r} is not served; see GET /models")
            return served
        for task in (TEXT_GENERATION, *self.defaults):
            if task in self.defaults:
                return self.models[self.defaults[task]]
        raise ModelNotFound("no model is served")

    def describe(self) -> list[dict[str, Any]]:
        return [m.describe(self.defaults.get(m.task) == m.name) for m in self.models.values()]

    def _lookup(self, task: str, name: str | None, protocol: str) -> ServedModel:
        """`model()`, counting a refusal as a client error (model label `unknown`: the name
        came from the request and label values must stay bounded)."""
        try:
            return self.model(task, name)
        except ServingError as exc:
            metrics.REQUESTS.labels(metrics.UNKNOWN_MODEL, task, protocol, exc.outcome).inc()
            context = request_logging.current()
            if context is not None:
                context.annotate(task=task, outcome=exc.outcome)
            raise

    # --- accounting -----------------------------------------------------------------------------
    @contextmanager
    def observe(self, served: ServedModel, protocol: str) -> Iterator[RequestTrace]:
        """Time a request, count its outcome by the exception it ended with, trace it (when
        tracing is on) and tell the request log which model and task served it."""
        started = time.perf_counter()
        context = request_logging.current()
        if context is not None:
            context.annotate(model=served.name, task=served.task)
        span = None
        if tracing.enabled():
            attributes = {
                "nlp.model": served.name,
                "nlp.task": served.task,
                "nlp.protocol": protocol,
            }
            if context is not None:
                attributes["nlp.request_id"] = context.request_id
            span = tracing.start_request(
                started, attributes, context.carrier if context is not None else None
            )
        outcome = "ok"
        error: BaseException | None = None
        active = metrics.ACTIVE_REQUESTS.labels(served.name, served.task)
        active.inc()
        try:
            yield RequestTrace(started, span)
        except ServingError as exc:
            outcome, error = exc.outcome, exc
            raise
        except (asyncio.CancelledError, GeneratorExit):
            # GeneratorExit: the consumer of a generation stream stopped before its end.
            outcome = "cancelled"
            raise
        except Exception as exc:
            outcome, error = "server_error", exc
            raise
        finally:
            active.dec()
            metrics.REQUESTS.labels(served.name, served.task, protocol, outcome).inc()
            metrics.REQUEST_DURATION.labels(served.name, served.task, protocol).observe(
                time.perf_counter() - started
            )
            if context is not None:
                context.annotate(outcome=outcome)
            if span is not None:
                tracing.end_request(span, outcome, error)

    def _check_inputs(self, count: int, field: str = "inputs") -> None:
        if count == 0:
            raise InvalidInput("at least one input is required", field=field)
        if count > self.settings.limits.max_inputs:
            raise InvalidInput(
                f"{count} inputs; at most {self.settings.limits.max_inputs} per request",
                field=field,
            )

    async def run_batched(
        self,
        task: str,
        items: Sequence[Any],
        model: str | None,
        protocol: str,
        *,
        inputs_field: str = "inputs",
    ) -> list[Any]:
        """Tokenize independent items of one request (at most `limits.max_inputs`; a refusal
        names `inputs_field`, or `inputs_field[i]` for item i) and submit them to the model's
        batcher; their results, in order."""
        served = self._lookup(task, model, protocol)
        with self.observe(served, protocol) as request:
            self._check_inputs(len(items), inputs_field)
            assert served.batcher is not None
            arrived = time.perf_counter()
            prepare = served.runtime.prepare
            if sum(map(_text_size, items)) <= INLINE_TOKENIZE_CHARS:
                prepared = prepare_items(prepare, items, inputs_field)
            else:
                prepared = await asyncio.get_running_loop().run_in_executor(
                    self._tokenizing, prepare_items, prepare, items, inputs_field
                )
            ran = await _within_deadline(served.batcher.submit_many(prepared))
            times = _stage_times(prepared, ran)
            context = request_logging.current()
            if context is not None:
                context.annotate(**times.log_fields())
            if request.span is not None:
                _trace_batches(request.span, arrived, prepared, ran)
            return [r.result for r in ran]

    # --- generation -----------------------------------------------------------------------------
    async def generate(
        self,
        prompt: str | Sequence[int],
        params: Any,
        model: str | None,
        protocol: str,
        task: str = "text-generation",
    ) -> Any:
        """The final result of a generation (`generate_stream` drained: the same scheduling,
        deadlines and metrics), for adapters that answer once."""
        final = None
        async for event in self.generate_stream(prompt, params, model, protocol, task):
            if not getattr(event, "is_token", False):
                final = event
        return final

    async def generate_stream(
        self,
        prompt: str | Sequence[int],
        params: Any,
        model: str | None,
        protocol: str,
        task: str = "text-generation",
        *,
        add_special_tokens: bool = True,
    ) -> AsyncIterator[Any]:
        """Yield the runtime's stream events (tokens, then the final result) as the model's
        scheduler makes them; the request decodes in one batch with the other requests.

        Generation stops when the consumer stops iterating (a client that went away: its row
        leaves the batch before the next step) or when the request's deadline passes
        (`DeadlineExceeded`, raised from the iteration)."""
        served = self._lookup(task, model, protocol)
        name = served.name
        with self.observe(served, protocol) as request:
            scheduler = served.scheduler
            assert scheduler is not None
            # The prompt is tokenized (and validated) here, on the event loop.
            started = time.perf_counter()
            sequence = served.runtime.prepare(prompt, params, add_special_tokens=add_special_tokens)
            tokenized = time.perf_counter()
            prompt_tokens = len(sequence.prompt_ids)
            metrics.TOKENIZATION_DURATION.labels(name, task).observe(tokenized - started)
            metrics.INPUT_TOKENS.labels(name, task).inc(prompt_tokens)
            deadline = deadlines.current()
            if deadline is not None and time.monotonic() >= deadline:
                raise DeadlineExceeded("the request's deadline passed before generation started")
            generation = scheduler.submit(sequence, deadline)
            first_at: float | None = None
            tokens = 0
            try:
                async for event in generation:
                    if getattr(event, "is_token", False):
                        tokens += 1
                        if first_at is None:
                            first_at = time.perf_counter()
                            metrics.TIME_TO_FIRST_TOKEN.labels(name, task).observe(
                                first_at - request.started
                            )
                    yield event
            finally:
                generation.cancel()  # a no-op once it finished
                finished = time.perf_counter()
                admitted = generation.admitted or finished
                times = StageTimes(
                    tokenized - started,
                    admitted - generation.submitted,
                    finished - admitted,
                    prompt_tokens,
                )
                metrics.QUEUE_DURATION.labels(name, task).observe(times.queue_seconds)
                metrics.INFERENCE_DURATION.labels(name, task).observe(times.inference_seconds)
                context = request_logging.current()
                if context is not None:
                    context.annotate(**times.log_fields())
                per_token = None
                if first_at is not None and tokens > 1:
                    per_token = (finished - first_at) / (tokens - 1)
                    metrics.TIME_PER_OUTPUT_TOKEN.labels(name, task).observe(per_token)
                if request.span is not None:
                    _trace_generation(
                        request,
                        started,
                        times,
                        generation.submitted,
                        admitted,
                        finished,
                        tokens,
                        first_at,
                        per_token,
                    )


def _text_size(item: Any) -> int:
    """Characters of text in a request item (a str, or the strs inside its tuple or dict)."""
    if isinstance(item, str):
        return len(item)
    if isinstance(item, tuple | list):
        return sum(map(_text_size, item))
    if isinstance(item, dict):
        return sum(map(_text_size, item.values()))
    return 0


async def _within_deadline(work: Awaitable[T]) -> T:
    """Await `work`, or raise DeadlineExceeded (cancelling it) when the request's deadline
    passes first."""
    left = deadlines.remaining()
    if left is None:
        return await work
    try:
        async with asyncio.timeout(max(left, 0.0)):
            return await work
    except TimeoutError:
        raise DeadlineExceeded("the request's deadline passed before its batch finished") from None


def _stage_times(prepared: Sequence[Prepared[Any, Any]], ran: Sequence[Timed[Any]]) -> StageTimes:
    """A request's stage times: its items' tokenization, then the batches that ran them (their
    run time is inference, the rest of the wait for the last one is queue)."""
    runs = {(r.started, r.finished) for r in ran}
    inference = sum(finished - started for started, finished in runs)
    waited = max(r.finished for r in ran) - min(r.enqueued for r in ran)
    return StageTimes(
        tokenize_seconds=sum(p.tokenize_seconds for p in prepared),
        queue_seconds=max(waited - inference, 0.0),
        inference_seconds=inference,
        input_tokens=sum(p.input_tokens for p in prepared),
    )


def _trace_batches(
    span: Any, arrived: float, prepared: Sequence[Prepared[Any, Any]], ran: Sequence[Timed[Any]]
) -> None:
    """Tokenize (on arrival), then queue and inference spans for each batch that ran items of
    this request; batch-wide figures are named `nlp.batch_*`."""
    tokenized = arrived + sum(p.tokenize_seconds for p in prepared)
    input_tokens = sum(p.input_tokens for p in prepared)
    tracing.stage(span, "nlp.tokenize", arrived, tokenized, {"nlp.input_tokens": input_tokens})
    runs = {(r.started, r.finished): r for r in ran}
    enqueued = min(r.enqueued for r in ran)
    for run in runs.values():
        batch = {"nlp.batch_size": run.batch_size}
        tracing.stage(span, "nlp.queue", enqueued, run.started, batch)
        tracing.stage(span, "nlp.inference", run.started, run.finished, batch)


def _trace_generation(
    request: RequestTrace,
    started: float,
    times: StageTimes,
    submitted: float,
    decoding: float,
    finished: float,
    tokens: int,
    first_at: float | None,
    per_token: float | None,
) -> None:
    """Tokenize, queue (for a place in the decode batch) and one summary span of the decoding."""
    tracing.stage(
        request.span,
        "nlp.tokenize",
        started,
        started + times.tokenize_seconds,
        {"nlp.input_tokens": times.input_tokens},
    )
    tracing.stage(request.span, "nlp.queue", submitted, decoding)
    summary: dict[str, Any] = {"nlp.generated_tokens": tokens}
    if first_at is not None:
        summary["nlp.time_to_first_token_s"] = first_at - request.started
    if per_token is not None:
        summary["nlp.time_per_output_token_s"] = per_token
    tracing.stage(request.span, "nlp.generate", decoding, finished, summary)


__all__ = ["DataPlane", "RequestTrace", "ServedModel", "ServingError"]
