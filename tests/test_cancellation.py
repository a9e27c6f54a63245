"""Cancellation and deadlines against the real server: work stops, as its metrics show.

A client that goes away mid-stream (TGI `/generate`, `/v1/completions`, `/v1/chat/completions`)
stops its generation: `nlp_generated_tokens_total` (counted per decode step) stops increasing far
below what the request asked for, and the request is counted `cancelled`. A request past its
deadline (`X-Request-Timeout`, or a gRPC deadline) stops the same way and gets 504 /
`DEADLINE_EXCEEDED`, or, when its stream already started, an error event that ends the stream.

The tiny profile's models finish 250 tokens in a fraction of a second, too fast to tell "stopped"
from "done", so this module serves a wider random Llama (2048 positions) built for it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from loadtests.server_process import ROOT, start_server

# Its server serves a widened tiny Llama it builds with torch.
pytestmark = pytest.mark.export_side

MODEL = "slow-llama-chat"
# Tokens each request asks for: about a second of work for this model on the EPYC here (990
# tokens were generated within a 0.5 s deadline), so a request cancelled after 0.5 s that stops
# its work is far from done. The checks ask for "stopped before the end" (< ASKED), not for a
# share of it: how many tokens fit in half a second depends on the CPU and its load.
ASKED = 1900


def _build_slow_llama(checkpoint: Path) -> None:
    """The tiny llama-chat (its tokenizer and chat template) widened to 2048 positions and
    enough layers that decoding takes milliseconds per token; it never chooses eos greedily,
    so every request runs until it is stopped or reaches its length."""
    import torch
    from transformers import AutoConfig, LlamaForCausalLM

    from models.tiny import build_checkpoint

    build_checkpoint("llama-chat", checkpoint)
    config = AutoConfig.from_pretrained(checkpoint)
    config.update(
        {
            "hidden_size": 256,
            "intermediate_size": 512,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 2048,
        }
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # eos scores 0 against hundreds of random scores: never chosen
        model.lm_head.weight[config.eos_token_id] = 0.0
    model.save_pretrained(checkpoint)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("cancellation")
    checkpoint, home = root / "checkpoint", root / "bentoml_home"
    _build_slow_llama(checkpoint)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "models",
            "export",
            "--task",
            "text-generation",
            "--source",
            str(checkpoint),
            "--name",
            MODEL,
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=600,
        env={**os.environ, "BENTOML_HOME": str(home), "HF_HUB_OFFLINE": "1"},
    )
    live = start_server(
        home,
        root / "server.log",
        extra_env={
            "NLP_MODELS_SERVE": MODEL,
            "NLP_LIMITS_MAX_NEW_TOKENS": str(ASKED),
            "NLP_MODELS_THREADS": "1",
        },
    )
    yield live
    live.stop()


def _metric(server, name: str, **labels: str) -> float:
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


def _generated(server) -> float:
    return _metric(server, "nlp_generated_tokens_total", model=MODEL)


def _settled(server) -> float:
    """The generated-token count once it stopped moving (no generation running)."""
    previous = _generated(server)
    while True:
        time.sleep(0.5)
        now = _generated(server)
        if now == previous:
            return now
        previous = now


STREAMS = {
    "/generate": {
        "inputs": "Once upon a time",
        "stream": True,
        "parameters": {"max_new_tokens": ASKED},
    },
    "/v1/completions": {
        "model": MODEL,
        "prompt": "Once upon a time",
        "max_tokens": ASKED,
        "temperature": 0,
        "stream": True,
    },
    "/v1/chat/completions": {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hi!"}],
        "max_tokens": ASKED,
        "temperature": 0,
        "stream": True,
    },
}


@pytest.mark.parametrize("route", list(STREAMS))
def test_client_disconnect_mid_stream_stops_generation(server, route):
    before = _settled(server)
    cancelled = _metric(server, "nlp_requests_total", model=MODEL, outcome="cancelled")
    response = requests.post(server.url + route, json=STREAMS[route], stream=True, timeout=30)
    assert response.status_code == 200
    events = 0
    for line in response.iter_lines():
        if line.startswith(b"data:"):
            events += 1
            if events == 5:
                break
    response.close()  # the client goes away mid-stream
    generated = _settled(server) - before
    assert 5 <= generated < ASKED, generated  # stopped before the tokens asked for
    time.sleep(1.0)
    assert _generated(server) - before == generated  # and it stays stopped
    assert _metric(server, "nlp_requests_total", model=MODEL, outcome="cancelled") == (
        cancelled + 1
    )


@pytest.mark.parametrize("route", ["/generate", "/v1/completions"])
def test_client_that_leaves_a_plain_request_stops_its_generation(server, route):
    """No stream: the client gives up after half a second (its own timeout) and closes the
    connection; the generation leaves the batch instead of decoding every token it asked for."""
    body = {**STREAMS[route], "stream": False}
    before = _settled(server)
    cancelled = _metric(server, "nlp_requests_total", model=MODEL, outcome="cancelled")
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(server.url + route, json=body, timeout=(5, 0.5))
    generated = _settled(server) - before
    assert 0 < generated < ASKED, generated
    time.sleep(1.0)
    assert _generated(server) - before == generated  # and it stays stopped
    assert _metric(server, "nlp_requests_total", model=MODEL, outcome="cancelled") == (
        cancelled + 1
    )


def test_a_request_past_its_deadline_gets_504_and_its_work_stops(server):
    before = _settled(server)
    timeouts = _metric(server, "nlp_requests_total", model=MODEL, outcome="timeout")
    started = time.monotonic()
    response = requests.post(
        f"{server.url}/generate",
        timeout=30,
        headers={"X-Request-Timeout": "0.5"},
        json={"inputs": "Once upon a time", "parameters": {"max_new_tokens": ASKED}},
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 504, response.text
    assert "deadline" in response.json()["error"]
    assert 0.5 <= elapsed < 3.0
    generated = _settled(server) - before
    assert 0 < generated < ASKED
    assert _metric(server, "nlp_requests_total", model=MODEL, outcome="timeout") == timeouts + 1


@pytest.mark.parametrize("route", ["/generate", "/v1/completions"])
def test_a_stream_past_its_deadline_ends_with_an_error_event(server, route):
    before = _settled(server)
    response = requests.post(
        server.url + route,
        json=STREAMS[route],
        stream=True,
        timeout=30,
        headers={"X-Request-Timeout": "0.5"},
    )
    assert response.status_code == 200
    events = [line[5:].strip() for line in response.iter_lines() if line.startswith(b"data:")]
    payloads = [json.loads(e) for e in events if e != b"[DONE]"]
    assert len(payloads) > 1  # tokens were streamed before the deadline
    error = payloads[-1]["error"]
    assert "deadline" in (error["message"] if isinstance(error, dict) else error)
    assert _settled(server) - before < ASKED


def test_a_malformed_timeout_header_is_refused(server):
    response = requests.post(
        f"{server.url}/generate",
        headers={"X-Request-Timeout": "soon"},
        json={"inputs": "Hi"},
        timeout=30,
    )
    assert response.status_code == 422
    assert response.json()["field"] == "x-request-timeout"


def test_a_grpc_deadline_stops_generation_with_deadline_exceeded(server):
    import grpc
    import tritonclient.grpc as triton

    before = _settled(server)
    client = triton.InferenceServerClient(server.grpc_address)
    text = triton.InferInput("text", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"Once upon a time"], dtype=object))
    with pytest.raises(triton.InferenceServerException) as failed:
        client.infer(MODEL, [text], parameters={"max_new_tokens": ASKED}, client_timeout=0.5)
    assert failed.value.status() in (
        str(grpc.StatusCode.DEADLINE_EXCEEDED),
        "StatusCode.DEADLINE_EXCEEDED",
    )
    assert _settled(server) - before < ASKED
