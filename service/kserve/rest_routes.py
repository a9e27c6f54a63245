"""KServe v2 over REST: the `/v2` routes, a thin adapter over `V2DataPlane`.

JSON as the v2 REST specification writes it (`inputs` of `name`/`shape`/`datatype`/`data`),
plus the binary tensor extension that `tritonclient.http` uses by default: the body is the JSON
header (`Inference-Header-Content-Length` bytes) followed by the inputs' raw contents, each
input's size in its `parameters.binary_data_size`; outputs come back the same way when the
request asks for `binary_data_output` or an output's `binary_data`. Compressed request bodies
(`Content-Encoding: gzip | deflate`, which the client offers) are accepted.

Errors are the data plane's exceptions; `service.http.errors` answers them on `/v2` paths as
`{"error": message}` (404 unknown model, 422 bad input, 429 overload).
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from service.http.errors import V2_ERRORS
from service.kserve.dataplane_v2 import V2DataPlane
from service.kserve.tensors import (
    InferenceRequest,
    InferenceResponse,
    RequestedOutput,
    Tensor,
    tensor_from_raw,
    tensor_from_values,
    tensor_json_data,
    tensor_raw_bytes,
)
from service.runtime.errors import InvalidInput

router = APIRouter(prefix="/v2", tags=["kserve-v2"], responses=V2_ERRORS)
PROTOCOL = "http"
HEADER_LENGTH = "Inference-Header-Content-Length"


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: Any = None


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class ServerReadiness(BaseModel):
    ready: bool


class ModelReadiness(BaseModel):
    name: str
    ready: bool


class RestInferenceRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


_INFER_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["inputs"],
                "properties": {
                    "id": {"type": "string"},
                    "parameters": {"type": "object", "description": "task parameters, e.g. top_k"},
                    "inputs": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name", "shape", "datatype"],
                            "properties": {
                                "name": {"type": "string"},
                                "shape": {"type": "array", "items": {"type": "integer"}},
                                "datatype": {"type": "string", "example": "BYTES"},
                                "parameters": {"type": "object"},
                                "data": {"type": "array", "items": {}},
                            },
                        },
                    },
                    "outputs": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {
                                "name": {"type": "string"},
                                "parameters": {"type": "object"},
                            },
                        },
                    },
                },
                "example": {
                    "inputs": [
                        {
                            "name": "text",
                            "shape": [1],
                            "datatype": "BYTES",
                            "data": ["I loved this film."],
                        }
                    ],
                    "parameters": {"top_k": 2},
                },
            }
        }
    },
}


def v2_plane(request: Request) -> V2DataPlane:
    state = request.app.state
    v2 = getattr(state, "v2_plane", None)
    if v2 is None or v2.plane is not state.plane:
        v2 = state.v2_plane = V2DataPlane(state.plane)
    return v2


# --- health and metadata ----------------------------------------------------------------------


@router.get("/health/live")
async def server_live(request: Request) -> Any:
    """200 while the server answers."""
    return {"live": v2_plane(request).live()}


@router.get(
    "/health/ready",
    responses={503: {"model": ServerReadiness, "description": "models still loading"}},
)
async def server_ready(request: Request) -> Any:
    """200 once every served model is loaded, 503 before."""
    ready = v2_plane(request).ready()
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


@router.get("")
async def server_metadata(request: Request) -> Any:
    """Server name, version and protocol extensions."""
    return v2_plane(request).server_metadata()


@router.get("/models/stats")
async def all_model_statistics(request: Request) -> Any:
    """Triton statistics extension, every model."""
    return {"model_stats": v2_plane(request).model_statistics()}


@router.get("/models/{name}")
@router.get("/models/{name}/versions/{version}")
async def model_metadata(name: str, request: Request, version: str = "") -> Any:
    """Inputs, outputs (names, datatypes, shapes), versions, platform and task of a model."""
    return v2_plane(request).model_metadata(name, version)


_MODEL_NOT_READY = {503: {"model": ModelReadiness, "description": "model not ready"}}


@router.get("/models/{name}/ready", responses=_MODEL_NOT_READY)
@router.get("/models/{name}/versions/{version}/ready", responses=_MODEL_NOT_READY)
async def model_ready(name: str, request: Request, version: str = "") -> Any:
    """200 when the model takes requests, 404 for a model that is not served."""
    ready = v2_plane(request).model_ready(name, version)
    return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)


@router.get("/models/{name}/config")
@router.get("/models/{name}/versions/{version}/config")
async def model_config(name: str, request: Request, version: str = "") -> Any:
    """Triton model configuration extension (what perf_analyzer reads)."""
    return v2_plane(request).model_config(name, version)


@router.get("/models/{name}/stats")
@router.get("/models/{name}/versions/{version}/stats")
async def model_statistics(name: str, request: Request, version: str = "") -> Any:
    """Triton statistics extension for one model."""
    return {"model_stats": v2_plane(request).model_statistics(name, version)}


# --- inference --------------------------------------------------------------------------------


def _decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body inflated, but never past `limit` bytes: a small gzip body can expand a
    thousandfold (a "zip bomb"), so the decompressed size obeys `server.max_body_bytes` too."""
    if encoding in (None, "", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise InvalidInput(f"unsupported Content-Encoding {encoding!r}", field="body")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(body, limit + 1 if limit > 0 else 0)
    except zlib.error as err:
        raise InvalidInput(f"body is not valid {encoding}: {err}", field="body") from None
    if len(inflated) > limit > 0:
        raise HTTPException(
            413,
            f"decompressed request body is larger than the limit of {limit} "
            "bytes (server.max_body_bytes)",
        )
    if not inflater.eof:
        raise InvalidInput(f"body is not valid {encoding}: truncated", field="body")
    return inflated


def parse_infer_request(body: bytes, header_length: str | None) -> InferenceRequest:
    """The neutral request from a JSON body or a JSON header followed by binary tensors."""
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            raise InvalidInput(f"{HEADER_LENGTH} is not an integer", field="body") from None
        if not 0 <= length <= len(body):
            raise InvalidInput(
                f"{HEADER_LENGTH} {length} exceeds the body ({len(body)} bytes)", field="body"
            )
        header, binary = body[:length], body[length:]
    else:
        header, binary = body, b""
    try:
        payload = RestInferenceRequest.model_validate(json.loads(header))
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError and ValidationError
        if isinstance(err, ValidationError):
            raise InvalidInput.from_validation(err.errors()) from None
        raise InvalidInput(f"malformed JSON: {err}", field="body") from None
    inputs: list[Tensor] = []
    offset = 0
    for item in payload.inputs:
        params = dict(item.parameters or {})
        size = params.pop("binary_data_size", None)
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InvalidInput(
                    f"input {item.name!r}: binary_data_size {size!r} does not fit "
                    f"the {len(binary) - offset} binary bytes left",
                    field=item.name,
                )
            inputs.append(
                tensor_from_raw(
                    item.name, item.datatype, item.shape, binary[offset : offset + size], params
                )
            )
            offset += size
        elif item.data is None:
            raise InvalidInput(
                f"input {item.name!r} has neither data nor binary_data_size", field=item.name
            )
        else:
            data = item.data if isinstance(item.data, list) else [item.data]
            inputs.append(tensor_from_values(item.name, item.datatype, item.shape, data, params))
    if offset != len(binary):
        raise InvalidInput(
            f"{len(binary) - offset} bytes of binary data belong to no input", field="body"
        )
    outputs = [RequestedOutput(o.name, dict(o.parameters or {})) for o in payload.outputs or []]
    return InferenceRequest(inputs, dict(payload.parameters or {}), outputs, payload.id or "")


def infer_response(response: InferenceResponse, request: InferenceRequest) -> Response:
    """JSON, or JSON header + binary outputs where the request asked for binary data."""
    binary_default = bool(request.parameters.get("binary_data_output", False))
    wanted = {o.name: o.parameters for o in request.outputs}
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for tensor in response.outputs:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        if bool(wanted.get(tensor.name, {}).get("binary_data", binary_default)):
            raw = tensor_raw_bytes(tensor)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = tensor_json_data(tensor)
        outputs.append(entry)
    body: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "outputs": outputs,
    }
    if response.id:
        body["id"] = response.id
    header = json.dumps(body, ensure_ascii=False).encode("utf-8")
    if not blobs:
        return Response(header, media_type="application/json")
    return Response(
        header + b"".join(blobs),
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(header))},
    )


# `{name:path}`: a name holding a `/` (`..%2Fetc`) still reaches the served-model lookup and gets
# its 404 naming the model. The versions route is registered first (decorators apply bottom-up).
@router.post("/models/{name:path}/infer", openapi_extra={"requestBody": _INFER_BODY})
@router.post("/models/{name}/versions/{version}/infer", openapi_extra={"requestBody": _INFER_BODY})
async def infer(name: str, request: Request, version: str = "") -> Any:
    """Inference on BYTES tensors; a [N] input is N requests, batched with concurrent ones."""
    body = _decompress(
        await request.body(),
        request.headers.get("content-encoding"),
        request.app.state.settings.server.max_body_bytes,
    )
    infer_request = parse_infer_request(body, request.headers.get(HEADER_LENGTH))
    response = await v2_plane(request).infer(name, version, infer_request, PROTOCOL)
    return infer_response(response, infer_request)
