"""Triton's generate extension over REST: `/v2/models/{m}/generate` and `/generate_stream`.

A thin adapter over the same `V2DataPlane.infer` as `/infer`: the JSON object's keys are the
model's input tensors by name (a string is a one-element BYTES tensor, a list of strings [N]),
`parameters` are the request parameters (task options, Triton's `timeout`/`priority`), and the
answer is one flat object, each output tensor by name (a one-element output as a scalar). So it
serves every task, not only generation: `{"text": "..."}` to a classifier answers
`{"label": ..., "score": ...}`.

Clients written for Triton's LLM backends (vLLM, TensorRT-LLM; genai-perf) name the prompt
`text_input` and read `text_output`: for a model of one input and one output those names are
accepted and answered as aliases. `/generate_stream` answers Server-Sent Events, one per
generated token (`{"model_name", "model_version", <output>: token text}`) for text-generation
models, one event with the whole answer for the others; an error after the stream started is a
last event `{"error": message}`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service import deadlines
from service.http.errors import V2_ERRORS
from service.http.streaming import EventStreamResponse
from service.kserve.dataplane_v2 import V2_VERSION, triton_timeout
from service.kserve.rest_routes import v2_plane
from service.kserve.tensors import (
    InferenceRequest,
    TaskTensors,
    input_texts,
    task_parameters,
    tensor_from_values,
    tensor_json_data,
)
from service.runtime.errors import InvalidInput, ServingError

router = APIRouter(prefix="/v2", tags=["kserve-v2"], responses=V2_ERRORS)
PROTOCOL = "http"
TEXT_INPUT, TEXT_OUTPUT = "text_input", "text_output"  # Triton LLM backends' tensor names

_GENERATE_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "description": "the model's inputs by name (GET /v2/models/{name}), e.g. "
                "text, plus optional id and parameters",
                "properties": {"id": {"type": "string"}, "parameters": {"type": "object"}},
                "additionalProperties": {
                    "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
                },
                "example": {"text_input": "Once upon a time", "parameters": {"max_new_tokens": 8}},
            }
        }
    },
}


def _aliased(table: TaskTensors, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The body with `text_input` renamed to the model's one input, and whether it was."""
    if TEXT_INPUT in body and len(table.inputs) == 1 and table.inputs[0].name != TEXT_INPUT:
        renamed = {k: v for k, v in body.items() if k != TEXT_INPUT}
        if table.inputs[0].name in renamed:
            raise InvalidInput(
                f"give {TEXT_INPUT!r} or {table.inputs[0].name!r}, not both", field=TEXT_INPUT
            )
        renamed[table.inputs[0].name] = body[TEXT_INPUT]
        return renamed, True
    return body, False


def generate_request(table: TaskTensors, body: Any) -> tuple[InferenceRequest, bool]:
    """The neutral inference request a generate body stands for (and whether it used the
    `text_input` alias)."""
    if not isinstance(body, dict):
        raise InvalidInput("the body is a JSON object of the model's inputs by name", field="body")
    body, aliased = _aliased(table, body)
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput("parameters is an object", field="parameters")
    request_id = body.get("id") or ""
    if not isinstance(request_id, str):
        raise InvalidInput("id is a string", field="id")
    inputs = []
    for name, value in body.items():
        if name in ("id", "parameters"):
            continue
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in values):
            raise InvalidInput(f"input {name!r}: a string or a list of strings", field=name)
        inputs.append(tensor_from_values(name, "BYTES", [len(values)], values))
    return InferenceRequest(inputs, dict(parameters), [], request_id), aliased


def flat_outputs(outputs: list[Any], aliased: bool) -> dict[str, Any]:
    """Output tensors by name, one-element tensors as scalars."""
    flat: dict[str, Any] = {}
    for tensor in outputs:
        data = tensor_json_data(tensor)
        name = TEXT_OUTPUT if aliased and len(outputs) == 1 else tensor.name
        flat[name] = data[0] if len(data) == 1 else data
    return flat


async def _body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError as err:
        raise InvalidInput(f"malformed JSON: {err}", field="body") from None


@router.post("/models/{name}/generate", openapi_extra={"requestBody": _GENERATE_BODY})
@router.post(
    "/models/{name}/versions/{version}/generate", openapi_extra={"requestBody": _GENERATE_BODY}
)
async def generate(name: str, request: Request, version: str = "") -> Any:
    """One answer: the model's outputs by name (Triton's generate extension)."""
    plane = v2_plane(request)
    table = plane.tensors(plane.served(name, version))
    infer_request, aliased = generate_request(table, await _body(request))
    response = await plane.infer(name, version, infer_request, PROTOCOL)
    body = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        **flat_outputs(response.outputs, aliased),
    }
    if response.id:
        body["id"] = response.id
    return JSONResponse(body)


@router.post("/models/{name}/generate_stream", openapi_extra={"requestBody": _GENERATE_BODY})
@router.post(
    "/models/{name}/versions/{version}/generate_stream",
    openapi_extra={"requestBody": _GENERATE_BODY},
)
async def generate_stream(name: str, request: Request, version: str = "") -> Any:
    """Server-Sent Events: one per generated token (text-generation), else one answer."""
    plane = v2_plane(request)
    served = plane.served(name, version)
    table = plane.tensors(served)
    infer_request, aliased = generate_request(table, await _body(request))
    head = {"model_name": served.name, "model_version": V2_VERSION}
    if not served.spec.streams:
        response = await plane.infer(name, version, infer_request, PROTOCOL)
        return EventStreamResponse(_once({**head, **flat_outputs(response.outputs, aliased)}))
    timeout = triton_timeout(infer_request.parameters)
    prompts = table.items(input_texts(table, infer_request.inputs), None)
    if len(prompts) != 1:
        raise InvalidInput(
            f"input {table.inputs[0].name!r}: {len(prompts)} prompts; generate_stream takes one",
            field=table.inputs[0].name,
        )
    params = task_parameters(table, infer_request.parameters)
    stream = plane.plane.generate_stream(prompts[0], params, served.name, PROTOCOL)
    events = _token_events(stream, head, TEXT_OUTPUT if aliased else table.outputs[0].name)
    left = deadlines.remaining()
    bound = left if timeout is None else timeout if left is None else min(left, timeout)
    # The data plane reads the deadline when the generation is submitted: the first event.
    with deadlines.within(bound):
        first = await anext(events, None)  # a refused request still gets its 4xx status
    return EventStreamResponse(_rest(first, events))


async def _token_events(
    stream: AsyncIterator[Any], head: dict[str, Any], output: str
) -> AsyncIterator[str]:
    """One event per generated token; an error after the first event becomes the last event.
    Closing this generator (the client went away) closes the stream, stopping generation."""
    started = False
    try:
        async for event in stream:
            if getattr(event, "is_token", False):
                yield _sse({**head, output: event.text})
                started = True
    except ServingError as exc:
        if not started:
            raise
        yield _sse({"error": exc.message})
    finally:
        await stream.aclose()


async def _once(answer: dict[str, Any]) -> AsyncIterator[str]:
    yield _sse(answer)


async def _rest(first: str | None, events: AsyncIterator[str]) -> AsyncIterator[str]:
    try:
        if first is not None:
            yield first
        async for event in events:
            yield event
    finally:
        await events.aclose()


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
