"""Refuse work for a saturated model before its request body is read.

Why at the ASGI level: the batcher's admission check (`AdaptiveBatcher`, `batching.max_queue_ms`)
runs only after the route has read, parsed and validated the body. Under several times the
capacity that parsing is itself the bottleneck on a small box: the 4x overload run of
2026-11-26 (loadtests/results/overload-2026-11-26) admitted 6.6 of 22 req/s and the admitted
requests waited 1.2 s at p95, because every refused 32-sentence body was still decoded. Here a
POST to an encoder task route (`/classify`, `/answer`, `/embed`, `/translate`) or to
`/v2/models/{name}/infer` is answered 429 with `Retry-After` from the headers alone when the
model it will reach is already past its queueing bound.

The task routes name their model in the body (`"model"`), which is not read here: the check uses
the task's default model. A request naming another, idle model of a busy task may therefore be
refused; the batcher's own check stays in place for everything this one lets through.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from service import metrics
from service.http.errors import error_body

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TASK_ROUTES = {
    "/classify": "text-classification",
    "/answer": "question-answering",
    "/embed": "feature-extraction",
    "/translate": "translation",
}
V2_PREFIX, V2_SUFFIX = "/v2/models/", "/infer"


class EarlySheddingMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST":
            refusal = self._refusal(scope)
            if refusal is not None:
                await _answer_429(scope, send, *refusal)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> tuple[str, float] | None:
        """(message, retry-after seconds) when the request's model is saturated, else None."""
        app = scope.get("app")
        plane = getattr(getattr(app, "state", None), "plane", None)
        if plane is None:
            return None
        path: str = scope.get("path", "")
        task = TASK_ROUTES.get(path)
        if task is not None:
            served = plane.models.get(plane.defaults.get(task, ""))
        elif path.startswith(V2_PREFIX) and path.endswith(V2_SUFFIX):
            served = plane.models.get(path[len(V2_PREFIX):-len(V2_SUFFIX)])
        else:
            return None
        batcher = getattr(served, "batcher", None)
        if batcher is None:
            return None
        verdict = batcher.saturation()
        if verdict is None:
            return None
        metrics.REQUESTS.labels(served.name, served.task, "http", "overload").inc()
        return verdict


async def _answer_429(scope: Scope, send: Send, message: str, retry_after: float) -> None:
    status, body = error_body(scope.get("path", ""), 429, message, None,
                              kind="rate_limit_exceeded")
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"retry-after", str(max(1, round(retry_after))).encode()),
    ]})
    await send({"type": "http.response.body", "body": payload})
