"""Map data-plane errors and request validation failures to the HTTP error contract.

Task routes answer `{"error": message, "field": dotted.path}`; the `/v1` routes answer OpenAI's
`{"error": {"message", "type", "param", "code"}}` because that is what the `openai` client reads.
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.runtime.errors import InvalidInput, ModelLoadError, ModelNotFound, Overloaded

log = logging.getLogger("service.http")


_TYPE_NAMES = {"str", "int", "float", "bool", "list", "dict", "none"}


def _field_path(loc: tuple) -> str | None:
    # pydantic puts union branch names ("str", "list[str]", "function-after[...]") in locations.
    parts = [str(p) for p in loc[1:] if isinstance(p, int) or (
        str(p).isidentifier() and str(p) not in _TYPE_NAMES)] if loc[:1] == ("body",) else [
        str(p) for p in loc]
    path = ""
    for p in parts:
        path += f"[{p}]" if p.isdigit() else (f".{p}" if path else p)
    return path or None


def error_response(request: Request, status: int, message: str, field: str | None = None,
                   kind: str = "invalid_request_error",
                   headers: dict[str, str] | None = None) -> JSONResponse:
    if request.url.path.startswith("/v1/"):
        # OpenAI answers every invalid request with 400 invalid_request_error.
        status = 400 if status == 422 else status
        body = {"error": {"message": message, "type": kind, "param": field, "code": None}}
    elif request.url.path.startswith("/v2/"):
        body = {"error": message}
    else:
        body = {"error": message, "field": field}
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        # In a union (str | list[str]) report the branch that got furthest, not a type mismatch.
        errors = sorted(errors, key=lambda e: (str(e.get("type", "")).endswith("_type"),
                                               -len(e.get("loc", ()))))
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        if first.get("type") == "json_invalid":
            return error_response(request, 400, f"malformed JSON: {first.get('msg')}", "body")
        field = _field_path(tuple(first.get("loc", ())))
        message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        if field:
            message = f"{field}: {message}"
        return error_response(request, 422, message, field)

    @app.exception_handler(InvalidInput)
    async def invalid_input(request: Request, exc: InvalidInput) -> JSONResponse:
        return error_response(request, 422, exc.message, exc.field)

    @app.exception_handler(ModelNotFound)
    async def model_not_found(request: Request, exc: ModelNotFound) -> JSONResponse:
        return error_response(request, 404, exc.message, "model", kind="model_not_found")

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        retry = str(max(1, round(exc.retry_after)))
        return error_response(request, 429, exc.message, None, kind="rate_limit_exceeded",
                              headers={"Retry-After": retry})

    @app.exception_handler(ModelLoadError)
    async def not_loaded(request: Request, exc: ModelLoadError) -> JSONResponse:
        return error_response(request, 503, exc.message, None, kind="service_unavailable",
                              headers={"Retry-After": "5"})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(request, exc.status_code, str(exc.detail), None,
                              headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(request, 500, f"internal error: {type(exc).__name__}", None,
                              kind="server_error")


def sse_error(message: str, field: str | None = None) -> str:
    """An error event for a stream that already started (the status line is gone)."""
    return f"data: {json.dumps({'error': message, 'field': field})}\n\n"
