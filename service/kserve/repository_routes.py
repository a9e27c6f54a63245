"""Triton's model repository extension over REST, a thin adapter over `ModelControl`.

`POST /v2/repository/index` lists every stored model (READY when served); `POST
/v2/repository/models/{name}/load` serves the latest stored version of a model in every worker
(a new build of a served model replaces it without a restart); `.../unload` stops serving it.
Bodies as `tritonclient.http` sends them: empty or `{"ready": bool}` for the index,
`{"parameters": {...}}` for load and unload. Errors are `{"error": message}` like every `/v2`
route (404 a model the store lacks, 422 a refused parameter, 503 a model that cannot load).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.http.errors import V2_ERRORS
from service.model_control import ModelControl
from service.runtime.errors import InvalidInput

router = APIRouter(prefix="/v2/repository", tags=["kserve-v2"], responses=V2_ERRORS)


def control(request: Request) -> ModelControl:
    state = request.app.state
    found = getattr(state, "control", None)
    if found is None or found.plane is not state.plane:
        found = state.control = ModelControl(state.plane)
    return found


async def _object(request: Request) -> dict[str, Any]:
    """The JSON object of the body; an empty body is `{}` (tritonclient's index request)."""
    body = await request.body()
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except ValueError as err:
        raise InvalidInput(f"malformed JSON: {err}", field="body") from None
    if not isinstance(value, dict):
        raise InvalidInput("the body is a JSON object", field="body")
    return value


def _parameters(body: dict[str, Any]) -> dict[str, Any]:
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput("parameters is an object", field="parameters")
    return parameters


@router.post("/index")
async def repository_index(request: Request) -> Any:
    """`[{"name", "version", "state", "reason"}]`: every stored model; `{"ready": true}` lists
    only the served ones."""
    ready = (await _object(request)).get("ready", False)
    if not isinstance(ready, bool):
        raise InvalidInput("ready is a boolean", field="ready")
    return await asyncio.to_thread(control(request).index, ready)


@router.post("/models/{name}/load")
async def repository_load(name: str, request: Request) -> Any:
    """Serve the latest stored version of `name` in every worker; 200 once all serve it."""
    await control(request).load(name, _parameters(await _object(request)))
    return JSONResponse({})


@router.post("/models/{name}/unload")
async def repository_unload(name: str, request: Request) -> Any:
    """Stop serving `name` in every worker; its requests in flight finish first."""
    await control(request).unload(name, _parameters(await _object(request)))
    return JSONResponse({})
