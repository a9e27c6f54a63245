"""HTTP side of the optional API keys (service/api_keys.py): refuse before anything is read.

401 without a Bearer key, 403 with a wrong one, as JSON errors in the shape of the path's
protocol; health routes stay open (BentoML's own `/livez`, `/readyz`, `/metrics` never reach
this app).
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Scope

from service.api_keys import ApiKeys
from service.http.errors import send_refusal
from service.runtime.errors import ServingError

OPEN_PATHS = frozenset({"/health", "/v2/health/live", "/v2/health/ready"})


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, keys: ApiKeys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if (
            scope["type"] != "http"
            or not self.keys.enabled
            or scope.get("path") in OPEN_PATHS
            or scope.get("method") == "OPTIONS"
        ):
            await self.app(scope, receive, send)
            return
        header = next(
            (
                value.decode("latin-1")
                for key, value in scope.get("headers", ())
                if key == b"authorization"
            ),
            None,
        )
        try:
            self.keys.check(header)
        except ServingError as refusal:
            await send_refusal(scope, send, refusal)
            return
        await self.app(scope, receive, send)
