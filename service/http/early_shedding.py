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

from starlette.types import ASGIApp, Receive, Scope, Send

from service.http.errors import send_refusal
from service.runtime.errors import Overloaded
from service.runtime.registry import TASKS
from service.runtime.task import route_path

# The batched tasks' payload routes (from the registry): generation is admitted by its scheduler.
TASK_ROUTES = {
    route_path(spec, route): spec.name
    for spec in TASKS.values()
    if spec.run_batch is not None
    for route in spec.routes
} | {"/predict": "text-classification"}
V2_PREFIX, V2_SUFFIX = "/v2/models/", "/infer"


class EarlySheddingMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST":
            refusal = self._refusal(scope)
            if refusal is not None:
                await send_refusal(scope, send, refusal)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> Overloaded | None:
        """The data plane's verdict for the model this request will reach, from its path."""
        app = scope.get("app")
        plane = getattr(getattr(app, "state", None), "plane", None)
        if plane is None:
            return None
        path: str = scope.get("path", "")
        task = TASK_ROUTES.get(path)
        if task is not None:
            return plane.shed(task=task)
        if path.startswith(V2_PREFIX) and path.endswith(V2_SUFFIX):
            return plane.shed(name=path[len(V2_PREFIX) : -len(V2_SUFFIX)])
        return None
