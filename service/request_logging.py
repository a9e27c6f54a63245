"""Structured logs: JSON lines, and a request id that follows each request.

Every record of the service's own loggers (`service.*`) is written as one JSON object per line,
carrying the id of the request it was logged for. The ASGI middleware gives each HTTP request an
id (the caller's `X-Request-ID` when it is sane, else a new one), returns it in the
`X-Request-ID` response header and logs one line per request when its response is complete
(streams included): method, path, status, duration and, once the data plane has seen it, the
model, task and outcome.

BentoML configures logging in each worker before it imports the service and prints its own
records as text on stdout through the root logger; ours go to their own handler (also stdout)
and do not propagate, so neither format is printed twice or re-formatted.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from service.tracing import TRACE_HEADERS

REQUEST_ID_HEADER = "X-Request-ID"
# What the access log records for a request whose client left before any answer (nginx's 499).
CLIENT_CLOSED_REQUEST = 499
# Printable ASCII without spaces, quotes or separators that would break a log or header line.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+=@-]{0,127}")
_LOGGER_NAME = "service"
_TRACE_HEADER_KEYS = frozenset(name.encode() for name in TRACE_HEADERS)

access_log = logging.getLogger("service.access")


def new_request_id() -> str:
    return uuid.uuid4().hex


def sane_request_id(value: str | None) -> str | None:
    """`value` if it is safe to echo in a header and a log line, else None."""
    if value and _SANE_REQUEST_ID.fullmatch(value):
        return value
    return None


@dataclass
class RequestContext:
    """What is known about the request being served; the data plane adds model, task, outcome."""

    request_id: str
    protocol: str
    # The caller's trace context (traceparent, tracestate), for the tracing of the data plane.
    carrier: dict[str, str] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)

    def annotate(self, **fields: Any) -> None:
        self.fields.update(fields)


_current: ContextVar[RequestContext | None] = ContextVar("request_context", default=None)


def current() -> RequestContext | None:
    """The request being served in this task, if a protocol adapter opened one."""
    return _current.get()


@contextmanager
def request_scope(
    protocol: str, request_id: str | None = None, carrier: Mapping[str, str] | None = None
) -> Iterator[RequestContext]:
    """Make a request current (for log records and the data plane) for the block's duration.

    For adapters without the ASGI middleware (gRPC): pass the caller's request id and trace
    metadata; an insane or missing id is replaced by a new one.
    """
    context = RequestContext(
        sane_request_id(request_id) or new_request_id(), protocol, dict(carrier or {})
    )
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, request id, extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = _current.get()
        if context is not None:
            entry["request_id"] = context.request_id
        entry.update(getattr(record, "json_fields", None) or {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_json_logging(level: str = "INFO") -> None:
    """JSON lines on stdout for the `service` loggers, at `level` (setting `server.log_level`,
    `NLP_LOG_LEVEL`)."""
    logger = logging.getLogger(_LOGGER_NAME)
    logger.setLevel(level.upper())
    logger.propagate = False
    if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    # A logging.config.dictConfig call (BentoML makes one per worker) disables the loggers that
    # existed before it; ours must keep logging if they were created earlier.
    for name, existing in logging.root.manager.loggerDict.items():
        if isinstance(existing, logging.Logger) and (
            name == _LOGGER_NAME or name.startswith(_LOGGER_NAME + ".")
        ):
            existing.disabled = False


class RequestLoggingMiddleware:
    """Pure ASGI (streams pass through untouched): request id in and out, one log line each."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming: str | None = None
        carrier: dict[str, str] = {}
        for key, value in scope.get("headers", ()):
            if key == b"x-request-id":
                incoming = value.decode("latin-1")
            elif key in _TRACE_HEADER_KEYS:
                carrier[key.decode("latin-1")] = value.decode("latin-1")
        started = time.perf_counter()
        status, started_response = 500, False
        with request_scope("http", incoming, carrier) as context:
            header = (REQUEST_ID_HEADER.lower().encode(), context.request_id.encode())

            async def send_with_request_id(message: dict[str, Any]) -> None:
                nonlocal status, started_response
                if message["type"] == "http.response.start":
                    status, started_response = message["status"], True
                    message = {**message, "headers": [*message.get("headers", ()), header]}
                await send(message)

            try:
                await self.app(scope, receive, send_with_request_id)
            finally:
                if not started_response and context.fields.get("outcome") == "cancelled":
                    status = CLIENT_CLOSED_REQUEST
                fields = {
                    "method": scope.get("method"),
                    "path": scope.get("path"),
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    "protocol": context.protocol,
                    **context.fields,
                }
                access_log.log(
                    logging.ERROR if status >= 500 else logging.INFO,
                    "request",
                    extra={"json_fields": fields},
                )


def install_request_logging(app: Any, level: str = "INFO") -> None:
    """JSON logging for this process and the request-id middleware on `app` (a FastAPI app)."""
    configure_json_logging(level)
    app.add_middleware(RequestLoggingMiddleware)


__all__ = [
    "REQUEST_ID_HEADER",
    "JsonFormatter",
    "RequestContext",
    "configure_json_logging",
    "current",
    "install_request_logging",
    "request_scope",
]
