"""Optional API keys and CORS: off by default; when set, every protocol asks for a key and
health and metrics stay open."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from loadtests.server_process import start_server
from service.api_keys import ApiKeys, Forbidden, Unauthenticated
from service.config import ServerSettings

KEYS = ("key-one", "key-two")
ORIGIN = "https://app.example.com"
MODEL = "tiny-bert-classifier"


def test_keys_from_settings_and_file(tmp_path):
    keys_file = tmp_path / "keys"
    keys_file.write_text("# team a\nfile-key\n\n")
    keys = ApiKeys.from_settings(ServerSettings(api_keys=["env-key"], api_keys_file=str(keys_file)))
    for good in ("Bearer env-key", "bearer file-key", "Bearer  file-key "):
        keys.check(good)
    for missing in (None, "", "Basic env-key", "Bearer "):
        with pytest.raises(Unauthenticated) as refused:
            keys.check(missing)
        assert refused.value.http_status == 401
    with pytest.raises(Forbidden) as wrong:
        keys.check("Bearer env-ke")
    assert (wrong.value.http_status, wrong.value.grpc_status) == (403, "PERMISSION_DENIED")
    ApiKeys.from_settings(ServerSettings()).check(None)  # no keys: open


@pytest.fixture(scope="module")
def server(tiny_store, tmp_path_factory):
    live = start_server(
        tiny_store,
        tmp_path_factory.mktemp("keys") / "server.log",
        extra_env={
            "NLP_MODELS_SERVE": MODEL,
            "NLP_API_KEYS": ",".join(KEYS),
            "NLP_CORS_ORIGINS": ORIGIN,
        },
    )
    yield live
    live.stop()


def _classify(url: str, **headers: str) -> requests.Response:
    return requests.post(f"{url}/classify", json={"inputs": "fine"}, headers=headers, timeout=30)


def test_http_needs_a_key_and_health_and_metrics_stay_open(server):
    missing = _classify(server.url)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    assert missing.json()["field"] == "authorization"
    assert _classify(server.url, Authorization="Bearer nope").status_code == 403
    for key in KEYS:
        assert _classify(server.url, Authorization=f"Bearer {key}").status_code == 200
    v1 = requests.get(f"{server.url}/v1/models", timeout=30)
    assert v1.status_code == 401 and v1.json()["error"]["code"] == "invalid_api_key"
    for path in ("/readyz", "/livez", "/metrics", "/health", "/v2/health/ready"):
        assert requests.get(f"{server.url}{path}", timeout=30).status_code == 200, path


def test_grpc_needs_the_key_in_its_metadata(server):
    client = triton.InferenceServerClient(server.grpc_address)
    text = triton.InferInput("text", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"fine"], dtype=object))
    with pytest.raises(InferenceServerException) as refused:
        client.infer(MODEL, [text])
    assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException) as wrong:
        client.infer(MODEL, [text], headers={"authorization": "Bearer nope"})
    assert wrong.value.status() == "StatusCode.PERMISSION_DENIED"
    result = client.infer(MODEL, [text], headers={"authorization": f"Bearer {KEYS[0]}"})
    assert result.as_numpy("label").shape == (1, 1)
    from grpc_health.v1 import health_pb2, health_pb2_grpc  # health stays open

    with grpc.insecure_channel(server.grpc_address) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert status.status == health_pb2.HealthCheckResponse.SERVING


def test_openai_client_sends_its_key(server):
    import openai

    models = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEYS[1]).models.list()
    assert models.object == "list"
    with pytest.raises(openai.PermissionDeniedError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="nope").models.list()


def test_cors_answers_the_configured_origin_only(server):
    preflight = requests.options(
        f"{server.url}/classify",
        timeout=30,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    answered = _classify(server.url, Authorization=f"Bearer {KEYS[0]}", Origin=ORIGIN)
    assert answered.headers["access-control-allow-origin"] == ORIGIN
    other = _classify(
        server.url, Authorization=f"Bearer {KEYS[0]}", Origin="https://elsewhere.example"
    )
    assert "access-control-allow-origin" not in other.headers
