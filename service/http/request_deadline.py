"""The HTTP side of per-request deadlines: `X-Request-Timeout` or `limits.request_timeout_s`.

A request runs under the header's timeout in seconds, never longer than the configured limit
(0 = none); the data plane stops the request's work when it passes and the client gets 504 (or,
on a stream that already started, an error event before the stream ends). See service/deadlines.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from service import deadlines
from service.http.errors import serving_error_body
from service.runtime.errors import InvalidInput


class RequestDeadlineMiddleware:
    def __init__(self, app: ASGIApp, request_timeout_s: float = 0.0) -> None:
        self.app = app
        self.request_timeout_s = request_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope.get("headers", ()):
            if name.decode("latin-1").lower() == deadlines.HEADER:
                header = value.decode("latin-1")
        try:
            timeout = deadlines.timeout_from(header, self.request_timeout_s)
        except InvalidInput as exc:
            status, body = serving_error_body(scope.get("path", ""), exc)
            await JSONResponse(body, status_code=status)(scope, receive, send)
            return
        with deadlines.within(timeout):
            await self.app(scope, receive, send)
