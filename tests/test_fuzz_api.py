"""Property-based fuzzing of the HTTP API against its own OpenAPI document (schemathesis).

The document is the FastAPI app's (`/openapi.json`; BentoML's `/docs.json` embeds the same
paths and schemas). Every operation is called with generated requests, both valid ones and ones
that break the schema (wrong types, missing fields, out-of-range numbers, odd path values), on
the real running server; every response must be no 5xx, have a documented status code and
content type, and match the documented schema (errors included: `{"error", "field"}`, OpenAI's
error object on /v1, `{"error"}` on /v2).

`make test` runs a bounded number of examples per operation (20, about 450 requests in all, well
under a minute); `make test-slow` runs ten times as many.
"""

from __future__ import annotations

import json
import os

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))
SLOW_EXAMPLES = 250


def _document() -> dict:
    """The OpenAPI document the service serves at /openapi.json, built in process so that the
    operations are known when tests are collected (schemathesis' fixture-based loader does not
    work with pytest 9); `test_fuzzed_document_is_the_served_one` checks they are equal."""
    from service.config import load_settings
    from service.http.app import create_app

    return create_app(load_settings()).openapi()


schema = schemathesis.openapi.from_dict(_document())
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])

# Generation is expensive to run (every example is a real request), not to generate.
_SETTINGS = dict(
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


@schema.parametrize()
@settings(max_examples=EXAMPLES, **_SETTINGS)
def test_api_conforms_to_its_openapi_document(case, live_server):
    case.call_and_validate(base_url=live_server.url, checks=CHECKS, timeout=120)


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=SLOW_EXAMPLES, **_SETTINGS)
def test_api_conforms_to_its_openapi_document_long_run(case, live_server):
    case.call_and_validate(base_url=live_server.url, checks=CHECKS, timeout=120)


def test_fuzzed_document_is_the_served_one(live_server):
    import requests

    served = requests.get(f"{live_server.url}/openapi.json", timeout=10).json()
    assert served == json.loads(json.dumps(_document()))


def test_openapi_document_declares_the_error_responses(live_server):
    """What makes the conformance checks meaningful: every operation documents its errors in
    the shape the service really answers them, and BentoML's /docs.json carries the same."""
    import requests

    document = requests.get(f"{live_server.url}/openapi.json", timeout=10).json()
    bento = requests.get(f"{live_server.url}/docs.json", timeout=10).json()
    schemas = document["components"]["schemas"]
    assert set(schemas["ErrorBody"]["required"]) == {"error", "field"}
    expected = {
        "/classify": "ErrorBody",
        "/v1/completions": "OpenAIErrorBody",
        "/v2/models/{name}/infer": "V2ErrorBody",
    }
    for path, model in expected.items():
        responses = document["paths"][path]["post"]["responses"]
        for status in ("404", "413", "429"):
            ref = responses[status]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith(f"/{model}"), (path, status, ref)
        assert bento["paths"][path]["post"]["responses"].keys() == responses.keys()
    assert "HTTPValidationError" not in schemas
