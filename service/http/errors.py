"""Map data-plane errors and request validation failures to the HTTP error contract.

Task routes answer `{"error": message, "field": dotted.path}`; the `/v1` routes answer OpenAI's
`{"error": {"message", "type", "param", "code"}}` because that is what the `openai` client reads.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.runtime.errors import InvalidInput, ServingError

log = logging.getLogger("service.http")


def error_body(
    path: str,
    status: int,
    message: str,
    field: str | None = None,
    kind: str = "invalid_request_error",
    code: str | None = None,
) -> tuple[int, dict]:
    """The status and body of an error on `path`, in the shape of that path's protocol."""
    if path.startswith("/v1/"):
        # OpenAI answers every invalid request with 400 invalid_request_error.
        status = 400 if status == 422 else status
        return status, {"error": {"message": message, "type": kind, "param": field, "code": code}}
    if path.startswith("/v2/"):
        return status, {"error": message}
    return status, {"error": message, "field": field}


def serving_error_body(path: str, exc: ServingError) -> tuple[int, dict]:
    """`error_body` for a data-plane error, from what the error class states."""
    return error_body(path, exc.http_status, exc.message, exc.field, exc.kind, exc.code)


async def send_refusal(scope: Any, send: Any, refusal: ServingError) -> None:
    """Answer a refusal from ASGI middleware, before any route ran (shedding, API keys): the
    same JSON error and headers (`Retry-After`, `WWW-Authenticate`) a route would give."""
    status, body = serving_error_body(scope.get("path", ""), refusal)
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in refusal.headers().items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def error_response(
    request: Request,
    status: int,
    message: str,
    field: str | None = None,
    kind: str = "invalid_request_error",
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    status, body = error_body(request.url.path, status, message, field, kind)
    return JSONResponse(body, status_code=status, headers=headers)


def serving_error_response(request: Request, exc: ServingError) -> JSONResponse:
    status, body = serving_error_body(request.url.path, exc)
    return JSONResponse(body, status_code=status, headers=exc.headers() or None)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [dict(e) for e in exc.errors()]
        json_invalid = [e for e in errors if e.get("type") == "json_invalid"]
        if json_invalid:
            return error_response(
                request, 400, f"malformed JSON: {json_invalid[0].get('msg')}", "body"
            )
        for error in errors:  # body fields are named from the body's root
            loc = tuple(error.get("loc", ()))
            error["loc"] = loc[1:] if loc[:1] == ("body",) else loc
        return serving_error_response(request, InvalidInput.from_validation(errors))

    @app.exception_handler(ServingError)
    async def serving_error(request: Request, exc: ServingError) -> JSONResponse:
        return serving_error_response(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(
            request, exc.status_code, str(exc.detail), None, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(
            request, 500, f"internal error: {type(exc).__name__}", None, kind="server_error"
        )


# --- the error shapes, as the OpenAPI document declares them ----------------------------------


class ErrorBody(BaseModel):
    """Task routes' error: a message and the request field it is about (dotted path)."""

    error: str
    field: str | None


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorBody(BaseModel):
    """`/v1` routes' error, OpenAI's object (what the `openai` client reads)."""

    error: OpenAIErrorDetail


class V2ErrorBody(BaseModel):
    """KServe v2 REST error, as the v2 specification writes it."""

    error: str


def _declared(model: type[BaseModel], statuses: dict[int | str, str]) -> dict[int | str, Any]:
    return {status: {"model": model, "description": text} for status, text in statuses.items()}


_OVERLOAD = "overloaded: queue or concurrency bound reached (`Retry-After` header)"
_NOT_LOADED = "model not loaded (`Retry-After` header)"
_TOO_LARGE = "request body over `server.max_body_bytes`"
_TIMEOUT = "the request's deadline (`X-Request-Timeout`, `limits.request_timeout_s`) passed"

TASK_ERRORS = _declared(
    ErrorBody,
    {
        400: "malformed JSON",
        404: "unknown model",
        413: _TOO_LARGE,
        422: "invalid request; `field` names the offending field",
        429: _OVERLOAD,
        503: _NOT_LOADED,
        504: _TIMEOUT,
    },
)
OPENAI_ERRORS = _declared(
    OpenAIErrorBody,
    {
        400: "invalid request; `param` names the offending field",
        404: "unknown model",
        413: _TOO_LARGE,
        429: _OVERLOAD,
        503: _NOT_LOADED,
        504: _TIMEOUT,
        # Declared so that FastAPI does not add its default 422 (HTTPValidationError): /v1 answers
        # invalid requests with 400, as OpenAI does.
        "4XX": "any other client error",
    },
)
V2_ERRORS = _declared(
    V2ErrorBody,
    {
        400: "malformed request",
        404: "unknown model",
        413: _TOO_LARGE,
        422: "invalid inputs or parameters",
        429: _OVERLOAD,
        503: _NOT_LOADED,
        504: _TIMEOUT,
    },
)

# One Server-Sent Event of a streamed answer (`"stream": true`): its `data` is one JSON object
# (or `[DONE]`, which ends a /v1 stream).
SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
}
