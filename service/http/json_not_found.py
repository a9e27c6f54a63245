"""BentoML's router answers paths that match none of our routes with a plain-text 404; this ASGI
middleware (installed on the BentoML app, around its router) rewrites that answer into the JSON
error of the path's protocol, so every 404 a client gets has the documented shape.

Why it matters: BentoML only hands a request to our FastAPI app when one of its routes matches,
and a path parameter holding a `/` (`..%2F..%2Fetc`) or a control character matches none.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.http.errors import error_body


class JsonNotFoundMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rewriting = False

        async def json_send(message: Message) -> None:
            nonlocal rewriting
            if (
                message["type"] == "http.response.start"
                and message["status"] == 404
                and (_header(message, b"content-type").startswith(b"text/plain"))
            ):
                rewriting = True
                path = scope.get("path", "")
                status, body = error_body(
                    path,
                    404,
                    f"no route for {scope.get('method')} {path!r}; see /docs.json",
                    "path",
                )
                payload = json.dumps(body).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": status,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": payload})
                return
            if rewriting:
                return  # the plain-text body, replaced above
            await send(message)

        await self.app(scope, receive, json_send)


def _header(message: Message, name: bytes) -> bytes:
    for key, value in message.get("headers", []):
        if key.lower() == name:
            return value
    return b""
