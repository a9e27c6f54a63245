"""Hugging Face task payloads over HTTP: one `POST /{endpoint}` per registered task, plus TGI's
and TEI's routes (/generate, /generate_stream, `POST /`, /predict) and /health, /models.

Thin adapters: each task declares its payload route (`HttpRoute`: request model, items, answer
shape, the way `huggingface_hub.InferenceClient` and the `transformers` pipelines return it) in
its module; the routes here are generated from the registry and hand the data plane independent
items.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from service.dataplane import DataPlane
from service.http import untrained
from service.http.errors import OPENAI_ERRORS, SSE_EVENT, TASK_ERRORS
from service.http.fields import ModelName, Text
from service.http.generation_schema import (
    GenerateRequest,
    generation_events_as_tgi_sse,
    tgi_response,
)
from service.http.streaming import EventStreamResponse
from service.runtime.errors import InvalidInput
from service.runtime.registry import TASKS, TaskSpec
from service.runtime.task import HttpRoute, route_path
from service.runtime.tasks.classification import ClassificationParameters, Label

router = APIRouter(responses=TASK_ERRORS)
# Task routes under /v1 (e.g. Cohere's /v1/rerank) answer errors as the /v1 routes do: OpenAI's.
v1_router = APIRouter(responses=OPENAI_ERRORS)


class PredictRequest(BaseModel):
    """TEI's `/predict`. `inputs`: a text; a pair `[text, text_pair]` (one sequence with the
    model's separator, as a pair classifier reads it); or a batch `[[text], [text, text_pair],
    ...]` of both. As in TEI, a flat list of two strings is one pair, not a batch of two."""

    model_config = ConfigDict(extra="forbid")
    model: ModelName | None = Field(
        None,
        description="A served text-classification model (GET /models); default: the task's default",
    )
    inputs: Text | list[Text] | list[list[Text]] = Field(
        ..., examples=["I loved this film.", ["A man eats.", "Someone is eating."]]
    )
    raw_scores: bool = Field(False, description="the logits, without softmax/sigmoid")
    truncate: bool | None = None
    truncation_direction: Literal["left", "right", "Left", "Right"] | None = None

    def sequences(self) -> tuple[list[str | tuple[str, str]], bool]:
        """The sequences to classify and whether the answer is a batch (a list per sequence)."""
        inputs = self.inputs
        if isinstance(inputs, str):
            return [inputs], False
        if not inputs:
            raise InvalidInput("inputs is empty", "inputs")
        if all(isinstance(item, str) for item in inputs):
            if len(inputs) > 2:
                raise InvalidInput(
                    "a sequence is one text or a pair [text, text_pair]; a batch "
                    "is a list of those: [[text], [text, text_pair], ...]",
                    "inputs",
                )
            return [inputs[0] if len(inputs) == 1 else (inputs[0], inputs[1])], False
        batch: list[str | tuple[str, str]] = []
        for index, item in enumerate(inputs):
            if isinstance(item, str) or not 1 <= len(item) <= 2:
                raise InvalidInput(
                    "each item of a batch is [text] or [text, text_pair]", f"inputs.{index}"
                )
            batch.append(item[0] if len(item) == 1 else (item[0], item[1]))
        return batch, True

    def parameters(self) -> ClassificationParameters:
        """Every label, best first; scores as the model's config says unless `raw_scores`."""
        return ClassificationParameters(
            top_k=MAX_LABELS,
            function_to_apply="none" if self.raw_scores else None,
            truncate=bool(self.truncate),
            truncation_direction=self.truncation_direction,
        )


MAX_LABELS = 1 << 20  # "all of them": a classifier's labels are returned sliced to this


class ServedModelInfo(BaseModel):
    task: str
    name: str
    tag: str
    source: str
    graph: str = Field(
        description="who wrote the ONNX graph: optimum (Optimum's exporter) or "
        "genai (ONNX Runtime GenAI's builder, fused attention)"
    )
    optimization: str | None
    quantization: str | None
    default: bool
    untrained: bool = Field(
        description="random weights: its outputs are noise (and its answers "
        "carry a `Warning: 299` header)"
    )


def plane(request: Request) -> DataPlane:
    return request.app.state.plane


def _add_task_route(spec: TaskSpec, http: HttpRoute) -> None:
    """`POST /{path}` for a payload route a task declares: the body becomes independent items
    for the data plane, their results the route's answer."""

    async def route(body: Any, request: Request, response: Response) -> Any:
        results = await plane(request).run_batched(
            spec.name, http.items(body), body.model, "http", inputs_field=http.inputs_field
        )
        untrained.flag(response, request, spec.name, body.model)
        return http.respond(results, body)

    # FastAPI reads the body model from the signature: give it the route's request type.
    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    route.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("body", positional, annotation=http.request),
            inspect.Parameter("request", positional, annotation=Request),
            inspect.Parameter("response", positional, annotation=Response),
        ]
    )
    path = route_path(spec, http)
    (v1_router if path.startswith("/v1/") else router).add_api_route(
        path,
        route,
        methods=["POST"],
        response_model=http.response,
        response_model_exclude_none=http.exclude_none,
        tags=["tasks"],
        name=path.strip("/").replace("/", "_"),
        description=inspect.cleandoc(http.summary),
    )


for _spec in TASKS.values():
    for _route in _spec.routes:
        _add_task_route(_spec, _route)


@router.post("/predict", response_model=list[Label] | list[list[Label]], tags=["tasks"])
async def predict(body: PredictRequest, request: Request, response: Response) -> Any:
    """Sequence classification as TEI's `/predict` answers it: every label with its score,
    best first; one list for one sequence, a list of lists for a batch."""
    sequences, batch = body.sequences()
    params = body.parameters()
    labels = await plane(request).run_batched(
        "text-classification", [(s, params) for s in sequences], body.model, "http"
    )
    untrained.flag(response, request, "text-classification", body.model)
    return labels if batch else labels[0]


_TGI_STREAMS = {
    200: {
        "description": "TGI schema; `text/event-stream` when streaming",
        "content": {"text/event-stream": {"schema": SSE_EVENT}},
    }
}


async def _generate(
    body: GenerateRequest, request: Request, response: Response, stream: bool
) -> Any:
    """The final TGI answer object, or TGI's Server-Sent Events when `stream`."""
    dp = plane(request)
    params = body.to_runtime_parameters()
    if stream:
        events = dp.generate_stream(body.inputs, params, body.model, "http")
        first = await anext(events)  # errors before the first token still get a 4xx status
        return EventStreamResponse(
            generation_events_as_tgi_sse(first, events, body),
            headers=untrained.headers_for(dp, "text-generation", body.model),
        )
    final = await dp.generate(body.inputs, params, body.model, "http")
    untrained.flag(response, request, "text-generation", body.model)
    return tgi_response(final, body)


@router.post("/generate", tags=["tasks"], responses=_TGI_STREAMS)
async def generate(body: GenerateRequest, request: Request, response: Response) -> Any:
    """Text generation (TGI's `/generate`): one `{"generated_text", "details"}` object.
    `"stream": true` answers Server-Sent Events as `/generate_stream` does (what
    `InferenceClient(model=URL + "/generate")` sends when it streams; TGI itself would ignore
    the field)."""
    return await _generate(body, request, response, body.stream)


@router.post("/generate_stream", tags=["tasks"], responses=_TGI_STREAMS)
async def generate_stream(body: GenerateRequest, request: Request, response: Response) -> Any:
    """TGI's streaming route: Server-Sent Events, one per token, whatever `stream` says."""
    return await _generate(body, request, response, True)


@router.post("/", tags=["tasks"], responses=_TGI_STREAMS)
async def tgi_compat(body: GenerateRequest, request: Request, response: Response) -> Any:
    """TGI's `POST /`: `[{"generated_text"}]`, or Server-Sent Events with `"stream": true`
    (what clients pointed at a TGI base URL send)."""
    answer = await _generate(body, request, response, body.stream)
    return answer if body.stream else [answer]


@router.get(
    "/health",
    tags=["operations"],
    response_class=Response,
    responses={
        200: {"description": "ready (no body)"},
        503: {"description": "models still loading (no body)"},
    },
)
async def health(request: Request) -> Response:
    """TGI/TEI's health route: 200 once every model is loaded and warm, else 503."""
    return Response(status_code=200 if plane(request).ready else 503)


@router.get("/models", response_model=list[ServedModelInfo], tags=["operations"])
async def models(request: Request) -> Any:
    """The served models, one per entry; `default` marks each task's default model."""
    return plane(request).describe()
