"""Refuse request bodies over `server.max_body_bytes` with 413 before they are read into memory.

Why an ASGI middleware: a route handler only sees a body once it has been read whole, which is
exactly what must not happen with a 10 MB (or endless chunked) upload. A declared
`Content-Length` over the limit is answered at once, without reading a byte of the body; a body
without one (chunked transfer) is counted as it streams in and abandoned at the limit.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.http.errors import error_body


class BodyTooLarge(HTTPException):
    """Raised from `receive` once a streamed body passes the limit; the app's HTTPException
    handler answers it (FastAPI re-raises HTTPExceptions met while reading a body)."""

    def __init__(self, limit: int) -> None:
        # The unread rest of the body stays on the connection: it cannot carry another request.
        super().__init__(
            413,
            f"request body is larger than the limit of {limit} bytes (server.max_body_bytes)",
            headers={"Connection": "close"},
        )


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.limit <= 0:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await self._refuse(scope, send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            # Only reached when the app did not answer the exception itself.
            if started:
                raise
            await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        status, body = error_body(
            scope.get("path", ""),
            413,
            BodyTooLarge(self.limit).detail,
            None,
            kind="invalid_request_error",
        )
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server rejects a malformed Content-Length itself
    return None
