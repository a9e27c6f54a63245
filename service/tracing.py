"""OpenTelemetry traces of a request through its stages: request -> tokenize -> queue -> inference
(generation: request -> tokenize -> queue -> generate, one summary span for the decode loop).

Off unless an OTLP endpoint is configured (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
`OTEL_EXPORTER_OTLP_ENDPOINT`, OTLP over HTTP/protobuf; `OTEL_SDK_DISABLED=true` or
`OTEL_TRACES_EXPORTER=none` turn it off again). Off, nothing of the SDK is imported, no provider
exists and `start_request` returns None, so the data plane skips every span call.

A batch runs on its model's thread for several requests at once, so stage spans are not opened
around the work: the data plane times each request's tokenization on arrival, the batcher
records when each batch started and finished, and each request then gets its own tokenize span
and a copy of its batches' intervals (explicit timestamps) under its request span. The request
span's parent is the caller's W3C `traceparent` only: BentoML's ASGI middleware opens spans of
its own provider (sampled at rate 0 by default), and a child of those would never be sampled.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("service.tracing")

# Headers (HTTP) or metadata keys (gRPC) that carry the caller's trace context.
TRACE_HEADERS = ("traceparent", "tracestate")

_tracer: Any = None
_provider: Any = None
# Wall-clock nanoseconds at perf_counter() == 0, to place perf_counter readings on the OTel clock.
_epoch_offset_ns = 0


def endpoint(environ: Mapping[str, str] | None = None) -> str | None:
    """The configured OTLP traces endpoint, or None when tracing is off."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return None
    return (
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        or None
    )


def configure(environ: Mapping[str, str] | None = None, exporter: Any = None) -> bool:
    """Start exporting spans if an endpoint is configured (or an `exporter` is given, for tests).

    Idempotent per process; returns whether tracing is on.
    """
    global _tracer, _provider, _epoch_offset_ns
    if _provider is not None:
        return True
    if exporter is None and endpoint(environ) is None:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    env = os.environ if environ is None else environ
    resource = Resource.create(
        {
            "service.name": env.get("OTEL_SERVICE_NAME") or "nlp-serving",
            "service.instance.id": f"{os.uname().nodename}:{os.getpid()}",
        }
    )
    provider = TracerProvider(resource=resource)
    if exporter is None:
        # Reads the endpoint, headers and timeout from the OTEL_EXPORTER_OTLP_* variables.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        log.info("tracing: exporting spans to %s", endpoint(environ))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    _epoch_offset_ns = time.time_ns() - time.perf_counter_ns()
    _provider = provider
    _tracer = provider.get_tracer("service")
    return True


def enabled() -> bool:
    return _tracer is not None


def shutdown() -> None:
    """Flush and stop exporting (worker shutdown); tracing is off afterwards."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def wall_ns(perf_seconds: float) -> int:
    """A `time.perf_counter()` reading as OTel's epoch nanoseconds."""
    return _epoch_offset_ns + int(perf_seconds * 1e9)


def start_request(
    started: float, attributes: dict[str, Any], carrier: Mapping[str, str] | None = None
) -> Any:
    """The request span (None while tracing is off), child of the caller's trace if it sent one."""
    tracer = _tracer
    if tracer is None:
        return None
    from opentelemetry.context import Context
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    parent = TraceContextTextMapPropagator().extract(carrier) if carrier else Context()
    return tracer.start_span(
        "nlp.request",
        context=parent,
        kind=SpanKind.SERVER,
        attributes=attributes,
        start_time=wall_ns(started),
    )


def end_request(span: Any, outcome: str, error: BaseException | None = None) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("nlp.outcome", outcome)
    if error is not None:
        span.record_exception(error)
    if outcome == "server_error":
        span.set_status(Status(StatusCode.ERROR, str(error) if error else None))
    span.end()


def stage(
    parent: Any,
    name: str,
    started: float,
    finished: float,
    attributes: dict[str, Any] | None = None,
) -> None:
    """A finished child span of `parent` from `started` to `finished` (perf_counter seconds)."""
    tracer = _tracer
    if tracer is None or parent is None:
        return
    from opentelemetry.trace import set_span_in_context

    span = tracer.start_span(
        name,
        context=set_span_in_context(parent),
        attributes=attributes,
        start_time=wall_ns(started),
    )
    span.end(end_time=wall_ns(max(finished, started)))
