"""The task registry is the one list of tasks: every door of the service and the export side
read it, and nothing else lists tasks by hand."""

from __future__ import annotations

import pytest
from fastapi.routing import APIRoute

from service.config import load_settings
from service.http.app import create_app
from service.http.early_shedding import TASK_ROUTES
from service.runtime.registry import TASKS
from service.runtime.task import ExportFacts, TaskSpec, register, route_path

ALL = sorted(TASKS)


def test_the_registry_holds_every_task_module():
    assert set(TASKS) == {
        "text-classification",
        "question-answering",
        "feature-extraction",
        "fill-mask",
        "text-ranking",
        "zero-shot-classification",
        "summarization",
        "text2text-generation",
        "token-classification",
        "translation",
        "text-generation",
    }
    for spec in TASKS.values():
        assert spec.runtime is not None and spec.runtime.__module__.startswith(
            "service.runtime.tasks."
        )
        # The runtime protocol: a batched task runs items, a decoder streams; all warm and close.
        assert callable(spec.runtime.warmup) and callable(spec.runtime.close)
        assert callable(spec.runtime.stream if spec.streams else spec.runtime.run)
        assert (spec.run_batch is None) == spec.streams


def test_http_task_routes_are_generated_from_the_registry():
    from service.http.task_routes import router, v1_router

    posts = {
        route.path: route
        for route in [*router.routes, *v1_router.routes]
        if isinstance(route, APIRoute) and "POST" in route.methods
    }
    for spec in TASKS.values():
        for http in spec.routes:
            route = posts[route_path(spec, http)]
            assert route.body_field is not None
            assert route.body_field.field_info.annotation is http.request
            assert route.response_model == http.response
    assert {"/fill-mask", "/rerank", "/v1/rerank"} <= set(posts)
    schema = create_app(load_settings()).openapi()
    assert schema["paths"]["/classify"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ] == {"$ref": "#/components/schemas/ClassifyRequest"}


def test_v2_tensors_shedding_and_export_are_keyed_by_the_registry():
    from models.export import OPTIMUM_TASKS
    from models.layout import GRAPHS
    from models.parity import COMPARISONS

    batched = {
        route_path(s, r): s.name
        for s in TASKS.values()
        if s.run_batch is not None
        for r in s.routes
    }
    assert batched.items() <= TASK_ROUTES.items()
    assert set(GRAPHS) == set(OPTIMUM_TASKS) == set(TASKS)
    # Every task can be validated against PyTorch when exported: its module names a comparison
    # of models/parity.py, and every comparison serves some task.
    assert {spec.export.parity for spec in TASKS.values()} == set(COMPARISONS)
    for name, spec in TASKS.items():
        assert GRAPHS[name] == spec.export.graphs
        assert OPTIMUM_TASKS[name] == spec.export.optimum_task
        assert spec.tensors.parameters is spec.parameters
        assert spec.tensors.inputs and spec.tensors.outputs


def test_a_task_name_or_endpoint_is_registered_once():
    existing = TASKS["text-classification"]

    clash = TaskSpec(
        name="text-classification",
        endpoint="classify-again",
        parameters=existing.parameters,
        load=existing.load,
        tensors=existing.tensors,
        export=ExportFacts("text-classification", parity="sequence-logits"),
    )
    with pytest.raises(ValueError, match="registered twice"):
        register(clash)
    with pytest.raises(ValueError, match="/classify"):
        register(
            TaskSpec(
                name="another-task",
                endpoint="classify",
                parameters=existing.parameters,
                load=existing.load,
                tensors=existing.tensors,
                export=ExportFacts("text-classification", parity="sequence-logits"),
            )
        )
    assert "another-task" not in TASKS and TASKS["text-classification"] is existing


def test_every_task_has_a_load_test_user():
    from loadtests.runner.user_classes import USER_CLASSES

    assert set(USER_CLASSES.values()) == set(TASKS)
