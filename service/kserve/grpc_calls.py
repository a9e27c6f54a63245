"""One gRPC call served as HTTP serves a request: request id, trace context, access log, and
the status its error class states.

Kept apart from the servicer (`grpc_server.py`) because it needs no generated protobuf code: the
wrapper can be tested, and used, without registering the v2 protos in the process.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from service import deadlines
from service.api_keys import ApiKeys
from service.request_logging import access_log, request_scope
from service.runtime.errors import ServingError
from service.tracing import TRACE_HEADERS

log = logging.getLogger("service.kserve.grpc")

SERVICE_PATH = "/inference.GRPCInferenceService"
PROTOCOL = "grpc"
REQUEST_ID_METADATA = "x-request-id"

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def _request_metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    """The caller's text metadata, keys lower-cased (binary `-bin` entries left out)."""
    return {
        key.lower(): value
        for key, value in (context.invocation_metadata() or ())
        if isinstance(value, str)
    }


def maps_errors(method: Handler) -> Handler:
    """Serve one call as HTTP serves a request: a request id (the caller's `x-request-id`
    metadata when sane, else a new one; returned as initial metadata), the caller's trace context
    (`traceparent`, `tracestate`) for the data plane's spans, one access-log line when the call
    ends, and data-plane exceptions answered with the status codes of the contract."""
    rpc = f"{SERVICE_PATH}/{method.__name__}"

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        metadata = _request_metadata(context)
        carrier = {key: metadata[key] for key in TRACE_HEADERS if key in metadata}
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        with request_scope(PROTOCOL, metadata.get("x-request-id"), carrier) as scope:
            await context.send_initial_metadata(((REQUEST_ID_METADATA, scope.request_id),))
            try:
                # The client's deadline (None without one) bounds the work the data plane does.
                with deadlines.within(context.time_remaining()):
                    return await method(self, request, context)
            except ServingError as exc:
                code = getattr(grpc.StatusCode, exc.grpc_status)
                trailers = tuple((k.lower(), v) for k, v in exc.headers().items())
                await context.abort(code, exc.message, trailing_metadata=trailers)
            except Exception as exc:
                if isinstance(exc, grpc.aio.AbortError):
                    raise
                code = grpc.StatusCode.INTERNAL
                log.exception("unhandled error in %s", method.__name__)
                await context.abort(code, f"internal error: {type(exc).__name__}")
            finally:
                fields = {
                    "method": "POST",
                    "path": rpc,
                    "status": code.name,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    "protocol": PROTOCOL,
                    **scope.fields,
                }
                level = logging.ERROR if code is grpc.StatusCode.INTERNAL else logging.INFO
                access_log.log(level, "request", extra={"json_fields": fields})

    return wrapper  # type: ignore[return-value]


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """The optional API keys (service/api_keys.py) for the inference service, from the
    `authorization` metadata; health and reflection stay open."""

    def __init__(self, keys: ApiKeys) -> None:
        self.keys = keys

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        if not self.keys.enabled or not details.method.startswith(SERVICE_PATH + "/"):
            return await continuation(details)
        metadata = {
            key.lower(): value
            for key, value in (details.invocation_metadata or ())
            if isinstance(value, str)
        }
        try:
            self.keys.check(metadata.get("authorization"))
        except ServingError as refusal:
            code, message = getattr(grpc.StatusCode, refusal.grpc_status), refusal.message

            async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
                await context.abort(code, message)

            return grpc.unary_unary_rpc_method_handler(deny)
        return await continuation(details)
