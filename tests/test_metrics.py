"""Observability against the running service: the metrics are right, not just present.

Every check reads `/metrics` before and after traffic it sends itself and compares the change
with what it knows it sent (requests, inputs, tokens returned, batches run). This module's tests
share one server and run one at a time, so nothing else moves these counters meanwhile.
Also: request ids in and out, one JSON log line per request, OpenTelemetry spans exported over
OTLP when (and only when) an endpoint is configured.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from loadtests.server_process import ROOT, start_server

CLASSIFIER = "tiny-distilbert-classifier"
GENERATOR = "tiny-gpt2"
TEXTS = [
    "I loved this film.",
    "Dull, slow and far too long for what it has to say.",
    "Fine.",
    "The actors were wonderful and the story moved me.",
]


# --- helpers ----------------------------------------------------------------------------------


class Samples(dict):
    """`/metrics` as {(sample name, sorted label items): value}."""

    def get_value(self, name: str, **labels: str) -> float:
        """Sum of the samples named `name` whose labels include `labels`."""
        return sum(
            value
            for (sample, items), value in self.items()
            if sample == name and labels.items() <= dict(items).items()
        )


def scrape(url: str) -> Samples:
    samples = Samples()
    text = requests.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            samples[key] = samples.get(key, 0.0) + s.value
    return samples


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return after.get_value(name, **labels) - before.get_value(name, **labels)


def store_tokenizer(tiny_store: Path, model: str):
    """The served model's tokenizer, straight from its files in the store."""
    from tokenizers import Tokenizer

    (path,) = (tiny_store / "models" / model).glob("*/tokenizer.json")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def post(url: str, path: str, body: dict, **kwargs) -> requests.Response:
    return requests.post(f"{url}{path}", json=body, timeout=60, **kwargs)


def start_private_server(tiny_store: Path, folder: Path, extra_env: dict[str, str] | None = None):
    """The real service serving the session's model store (in a BentoML home of its own, as
    every `start_server` is, so no other server resets its metrics)."""
    return start_server(tiny_store, folder / "server.log", extra_env=extra_env)


@pytest.fixture(scope="module")
def server(tiny_store, tmp_path_factory):
    """The service on the tiny profile, serving the two models these tests count."""
    server = start_private_server(
        tiny_store,
        tmp_path_factory.mktemp("metrics"),
        {"NLP_MODELS_SERVE": f"{CLASSIFIER},{GENERATOR}"},
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def url(server) -> str:
    return server.url


# --- counters and histograms ------------------------------------------------------------------


def test_n_requests_advance_the_counters_by_n_and_each_sequential_request_is_one_batch(
    url, tiny_store
):
    labels = {"model": CLASSIFIER, "task": "text-classification"}
    bodies = [{"inputs": text, "model": CLASSIFIER} for text in TEXTS] + [
        {"inputs": TEXTS[:3], "model": CLASSIFIER},
        {"inputs": TEXTS, "model": CLASSIFIER},
    ]
    inputs = [len(b["inputs"]) if isinstance(b["inputs"], list) else 1 for b in bodies]
    before = scrape(url)
    for body in bodies:  # one at a time: an idle model runs each request as its own batch
        assert post(url, "/classify", body).status_code == 200
    after = scrape(url)

    n = len(bodies)
    assert delta(before, after, "nlp_requests_total", **labels, protocol="http", outcome="ok") == n
    for outcome in ("client_error", "overload", "server_error", "cancelled"):
        assert delta(before, after, "nlp_requests_total", **labels, outcome=outcome) == 0
    assert (
        delta(before, after, "nlp_request_duration_seconds_count", **labels, protocol="http") == n
    )
    # The queue is timed per input; tokenization, inference and batch size per batch.
    assert delta(before, after, "nlp_queue_duration_seconds_count", **labels) == sum(inputs)
    for name in (
        "nlp_batch_size_count",
        "nlp_tokenization_duration_seconds_count",
        "nlp_inference_duration_seconds_count",
    ):
        assert delta(before, after, name, **labels) == n, name
    assert delta(before, after, "nlp_batch_size_sum", **labels) == sum(inputs)
    assert delta(before, after, "nlp_batch_size_bucket", **labels, le="1.0") == 4
    assert delta(before, after, "nlp_batch_size_bucket", **labels, le="2.0") == 4
    assert delta(before, after, "nlp_batch_size_bucket", **labels, le="4.0") == 6
    bentoml_labels = {"runner_name": CLASSIFIER, "method_name": "classify"}
    assert delta(before, after, "bentoml_service_adaptive_batch_size_count", **bentoml_labels) == n
    assert delta(before, after, "bentoml_service_adaptive_batch_size_sum", **bentoml_labels) == sum(
        inputs
    )

    # Input tokens: what the model's own tokenizer makes of every input, specials included.
    tokenizer = store_tokenizer(tiny_store, CLASSIFIER)
    sent = [
        t for b in bodies for t in (b["inputs"] if isinstance(b["inputs"], list) else [b["inputs"]])
    ]
    expected_tokens = sum(len(e.ids) for e in tokenizer.encode_batch(sent))
    assert delta(before, after, "nlp_input_tokens_total", **labels) == expected_tokens

    # The stages fit inside the requests that contain them.
    stage_seconds = sum(
        delta(before, after, f"nlp_{stage}_duration_seconds_sum", **labels)
        for stage in ("tokenization", "inference")
    )
    request_seconds = delta(before, after, "nlp_request_duration_seconds_sum", **labels)
    assert 0 < stage_seconds < request_seconds


def test_batch_size_histogram_counts_the_batches_run_under_concurrency(url):
    labels = {"model": CLASSIFIER, "task": "text-classification"}
    body = {"inputs": TEXTS[:2], "model": CLASSIFIER}
    before = scrape(url)
    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(lambda _: post(url, "/classify", body).status_code, range(36)))
    after = scrape(url)
    assert statuses == [200] * 36
    batches = delta(before, after, "nlp_batch_size_count", **labels)
    # Every input ran in exactly one batch; every batch was timed and counted once.
    assert delta(before, after, "nlp_batch_size_sum", **labels) == 72
    assert delta(before, after, "nlp_queue_duration_seconds_count", **labels) == 72
    assert delta(before, after, "nlp_tokenization_duration_seconds_count", **labels) == batches
    assert delta(before, after, "nlp_inference_duration_seconds_count", **labels) == batches
    assert (
        delta(before, after, "bentoml_service_adaptive_batch_size_count", runner_name=CLASSIFIER)
        == batches
    )
    assert 72 / 32 <= batches < 36, "12 concurrent clients should share batches"
    assert delta(before, after, "nlp_requests_total", **labels, outcome="ok") == 36


def test_client_errors_are_counted_as_client_error_with_bounded_labels(url):
    labels = {"task": "text-classification", "protocol": "http"}
    before = scrape(url)
    too_long = post(url, "/classify", {"inputs": "word " * 400, "model": CLASSIFIER})
    unknown = post(url, "/classify", {"inputs": "fine", "model": f"no-such-{uuid.uuid4().hex}"})
    wrong_task = post(url, "/classify", {"inputs": "fine", "model": GENERATOR})
    after = scrape(url)
    assert (too_long.status_code, unknown.status_code, wrong_task.status_code) == (422, 404, 422)
    assert (
        delta(
            before, after, "nlp_requests_total", **labels, model=CLASSIFIER, outcome="client_error"
        )
        == 1
    )
    assert delta(before, after, "nlp_requests_total", **labels, model=CLASSIFIER, outcome="ok") == 0
    # A model name the caller made up never becomes a label value.
    assert (
        delta(
            before, after, "nlp_requests_total", **labels, model="unknown", outcome="client_error"
        )
        == 2
    )
    assert not [key for key in after if "no-such-" in str(key)]
    for name, items in after:
        values = dict(items)
        if name == "nlp_requests_total":
            assert values["protocol"] in {"http", "grpc"}
            assert values["outcome"] in {
                "ok",
                "client_error",
                "overload",
                "server_error",
                "cancelled",
            }


def test_generated_token_counters_equal_the_tokens_returned(url, tiny_store):
    labels = {"model": GENERATOR, "task": "text-generation"}
    prompts = ["The movie was", "I would watch it again because", "Hello"]
    before = scrape(url)
    returned = 0
    for prompt, max_new_tokens in zip(prompts, (3, 7, 12), strict=True):
        body = {
            "inputs": prompt,
            "model": GENERATOR,
            "parameters": {"max_new_tokens": max_new_tokens, "details": True},
        }
        details = post(url, "/generate", body).json()["details"]
        assert details["generated_tokens"] == len(details["tokens"])
        returned += details["generated_tokens"]
    stream = requests.post(
        f"{url}/generate",
        timeout=60,
        stream=True,
        json={
            "inputs": "Once upon a time",
            "model": GENERATOR,
            "stream": True,
            "parameters": {"max_new_tokens": 6},
        },
    )
    events = [line for line in stream.iter_lines(decode_unicode=True) if line.startswith("data:")]
    returned += len(events)
    completion = post(
        url, "/v1/completions", {"model": GENERATOR, "prompt": "A film about", "max_tokens": 5}
    ).json()
    returned += completion["usage"]["completion_tokens"]
    after = scrape(url)

    requests_made = len(prompts) + 2
    assert delta(before, after, "nlp_generated_tokens_total", **labels) == returned
    assert (
        delta(before, after, "nlp_requests_total", **labels, protocol="http", outcome="ok")
        == requests_made
    )
    assert delta(before, after, "nlp_time_to_first_token_seconds_count", **labels) == requests_made
    assert (
        delta(before, after, "nlp_tokenization_duration_seconds_count", **labels) == requests_made
    )
    assert delta(before, after, "nlp_time_per_output_token_seconds_count", **labels) >= 1
    tokenizer = store_tokenizer(tiny_store, GENERATOR)
    expected = sum(len(tokenizer.encode(p).ids) for p in [*prompts, "Once upon a time"])
    expected += completion["usage"]["prompt_tokens"]
    assert delta(before, after, "nlp_input_tokens_total", **labels) == expected


def test_overload_is_counted_as_overload(url):
    labels = {"model": GENERATOR, "task": "text-generation", "protocol": "http"}
    body = {"inputs": "Hello", "model": GENERATOR, "parameters": {"max_new_tokens": 200}}
    before = scrape(url)
    with ThreadPoolExecutor(16) as pool:  # twice the 8 generation slots
        statuses = list(pool.map(lambda _: post(url, "/generate", body).status_code, range(16)))
    after = scrape(url)
    assert set(statuses) <= {200, 429}
    assert 429 in statuses, "16 concurrent generations should overflow 8 slots"
    assert delta(
        before, after, "nlp_requests_total", **labels, outcome="overload"
    ) == statuses.count(429)
    assert delta(before, after, "nlp_requests_total", **labels, outcome="ok") == statuses.count(200)


def test_outcomes_follow_the_exception_a_request_ended_with():
    """`DataPlane.observe` in process: the one place an outcome is decided."""
    import asyncio

    from service import metrics
    from service.config import Settings
    from service.dataplane import DataPlane, ServedModel
    from service.model_repository import ModelRecord
    from service.runtime.errors import InvalidInput, ModelNotFound, Overloaded
    from service.runtime.registry import TASKS

    plane = DataPlane(Settings())
    record = ModelRecord(
        name="outcome-test", tag="outcome-test:1", task="translation", path=Path(".")
    )
    served = ServedModel(record, TASKS["translation"], runtime=None)
    cases = [
        (None, "ok"),
        (InvalidInput("x"), "client_error"),
        (ModelNotFound("x"), "client_error"),
        (Overloaded("x"), "overload"),
        (RuntimeError("x"), "server_error"),
        (asyncio.CancelledError(), "cancelled"),
    ]
    for error, outcome in cases:
        counter = metrics.REQUESTS.labels("outcome-test", "translation", "grpc", outcome)
        before = counter._value.get()
        try:
            with plane.observe(served, "grpc"):
                if error is not None:
                    raise error
        except BaseException as raised:
            assert raised is error
        assert counter._value.get() == before + 1, outcome


# --- request ids and structured logs ----------------------------------------------------------


def _log_entries(server, request_id: str, timeout: float = 5.0) -> list[dict]:
    """The server's JSON log lines for one request id (written once its response is done)."""
    deadline = time.monotonic() + timeout
    while True:
        entries = []
        for line in server.log().splitlines():
            if line.startswith("{") and request_id in line:
                entries.append(json.loads(line))
        if entries or time.monotonic() > deadline:
            return entries
        time.sleep(0.1)


def test_request_id_is_returned_honoured_and_logged_as_one_json_line(url, server):
    generated = post(url, "/classify", {"inputs": "fine"})
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["X-Request-ID"])

    mine = f"client-{uuid.uuid4().hex[:12]}.1"
    response = post(
        url, "/classify", {"inputs": "fine", "model": CLASSIFIER}, headers={"X-Request-ID": mine}
    )
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == mine
    for insane in ("two words", "x" * 200, "semi;colon", 'quote"d'):
        got = post(url, "/classify", {"inputs": "fine"}, headers={"X-Request-ID": insane}).headers[
            "X-Request-ID"
        ]
        assert got != insane and re.fullmatch(r"[0-9a-f]{32}", got)

    (entry,) = _log_entries(server, mine)
    assert entry["request_id"] == mine
    assert entry["logger"] == "service.access"
    assert (entry["method"], entry["path"], entry["status"]) == ("POST", "/classify", 200)
    assert (entry["model"], entry["task"], entry["outcome"]) == (
        CLASSIFIER,
        "text-classification",
        "ok",
    )
    assert entry["protocol"] == "http"
    assert 0 < entry["duration_ms"] < 60_000
    assert entry["level"] == "info" and entry["ts"]


def test_errors_and_streams_carry_the_request_id_too(url, server):
    failing = f"err-{uuid.uuid4().hex[:12]}"
    response = post(
        url,
        "/classify",
        {"inputs": "word " * 400, "model": CLASSIFIER},
        headers={"X-Request-ID": failing},
    )
    assert response.status_code == 422
    assert response.headers["X-Request-ID"] == failing
    (entry,) = _log_entries(server, failing)
    assert (entry["status"], entry["outcome"], entry["model"]) == (422, "client_error", CLASSIFIER)

    streaming = f"sse-{uuid.uuid4().hex[:12]}"
    response = requests.post(
        f"{url}/generate",
        timeout=60,
        stream=True,
        headers={"X-Request-ID": streaming},
        json={
            "inputs": "Hello",
            "stream": True,
            "model": GENERATOR,
            "parameters": {"max_new_tokens": 4},
        },
    )
    assert response.headers["X-Request-ID"] == streaming
    assert len([line for line in response.iter_lines() if line.startswith(b"data:")]) == 4
    (entry,) = _log_entries(server, streaming)
    assert (entry["status"], entry["outcome"], entry["task"]) == (200, "ok", "text-generation")


def _grpc_classify(server, text: str, metadata: tuple = ()):
    """One raw v2 ModelInfer on the classifier: (response or the RpcError, initial metadata)."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    request = service_pb2.ModelInferRequest(model_name=CLASSIFIER)
    request.inputs.add(name="text", datatype="BYTES", shape=[1])
    payload = text.encode()
    request.raw_input_contents.append(len(payload).to_bytes(4, "little") + payload)
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            response, call = stub.ModelInfer.with_call(request, metadata=metadata, timeout=60)
        except grpc.RpcError as error:
            return error, dict(error.initial_metadata())
        return response, dict(call.initial_metadata())


def test_grpc_calls_get_a_request_id_and_an_access_log_line_like_http(server):
    import grpc

    mine = f"grpc-{uuid.uuid4().hex[:12]}"
    response, metadata = _grpc_classify(server, "fine", (("x-request-id", mine),))
    assert not isinstance(response, grpc.RpcError) and metadata["x-request-id"] == mine
    _, generated = _grpc_classify(server, "fine", (("x-request-id", "two words"),))
    assert re.fullmatch(r"[0-9a-f]{32}", generated["x-request-id"])

    (entry,) = _log_entries(server, mine)
    assert entry["logger"] == "service.access" and entry["protocol"] == "grpc"
    assert (entry["path"], entry["status"]) == ("/inference.GRPCInferenceService/ModelInfer", "OK")
    assert (entry["model"], entry["task"], entry["outcome"]) == (
        CLASSIFIER,
        "text-classification",
        "ok",
    )
    assert 0 < entry["duration_ms"] < 60_000

    failing = f"grpc-err-{uuid.uuid4().hex[:12]}"
    error, metadata = _grpc_classify(server, "word " * 400, (("x-request-id", failing),))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert metadata["x-request-id"] == failing
    (entry,) = _log_entries(server, failing)
    assert (entry["status"], entry["outcome"]) == ("INVALID_ARGUMENT", "client_error")


# --- tracing ----------------------------------------------------------------------------------


class _OtlpReceiver(ThreadingHTTPServer):
    """An OTLP/HTTP traces endpoint that keeps what it is sent."""

    def __init__(self) -> None:
        self.spans: list = []
        self.lock = threading.Lock()

        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                with receiver.lock:
                    for resource_spans in request.resource_spans:
                        for scope_spans in resource_spans.scope_spans:
                            receiver.spans.extend(scope_spans.spans)
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def _attributes(span) -> dict:
    out = {}
    for kv in span.attributes:
        value = kv.value
        out[kv.key] = getattr(value, value.WhichOneof("value"))
    return out


def test_spans_follow_a_request_through_its_stages_when_an_otlp_endpoint_is_set(
    tiny_store, tmp_path
):
    receiver = _OtlpReceiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.server_address[1]}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_SERVICE_NAME": "nlp-serving-test",
        "NLP_MODELS_SERVE": f"{CLASSIFIER},{GENERATOR}",
    }
    server = start_private_server(tiny_store, tmp_path, extra_env=env)
    try:
        trace_id, parent_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
        response = post(
            server.url,
            "/classify",
            {"inputs": TEXTS[:3], "model": CLASSIFIER},
            headers={"traceparent": f"00-{trace_id}-{parent_id}-01", "X-Request-ID": "traced-1"},
        )
        assert response.status_code == 200
        assert post(
            server.url,
            "/generate",
            {"inputs": "Hello", "model": GENERATOR, "parameters": {"max_new_tokens": 5}},
        ).ok
        grpc_trace_id, grpc_parent_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
        _grpc_classify(
            server,
            "fine",
            (
                ("traceparent", f"00-{grpc_trace_id}-{grpc_parent_id}-01"),
                ("x-request-id", "traced-grpc"),
            ),
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with receiver.lock:
                if sum(s.name == "nlp.request" for s in receiver.spans) >= 3:
                    break
            time.sleep(0.1)
    finally:
        server.stop()
        receiver.shutdown()

    spans = list(receiver.spans)
    # gRPC continues the caller's trace as HTTP does.
    (over_grpc,) = [
        s
        for s in spans
        if s.name == "nlp.request" and _attributes(s)["nlp.request_id"] == "traced-grpc"
    ]
    assert over_grpc.trace_id.hex() == grpc_trace_id
    assert over_grpc.parent_span_id.hex() == grpc_parent_id
    spans = [s for s in spans if s.trace_id != over_grpc.trace_id]
    requests_ = {_attributes(s)["nlp.task"]: s for s in spans if s.name == "nlp.request"}
    classify = requests_["text-classification"]
    # The caller's trace continues: same trace id, our request span under its span.
    assert classify.trace_id.hex() == trace_id
    assert classify.parent_span_id.hex() == parent_id
    attributes = _attributes(classify)
    assert attributes["nlp.model"] == CLASSIFIER
    assert attributes["nlp.outcome"] == "ok"
    assert attributes["nlp.request_id"] == "traced-1"
    children = {s.name: s for s in spans if s.parent_span_id == classify.span_id}
    assert set(children) == {"nlp.queue", "nlp.tokenize", "nlp.inference"}
    queue, tokenize, inference = (
        children[n] for n in ("nlp.queue", "nlp.tokenize", "nlp.inference")
    )
    # Tokenized on arrival, then queued, then run.
    assert classify.start_time_unix_nano <= tokenize.start_time_unix_nano
    assert tokenize.end_time_unix_nano <= queue.start_time_unix_nano + 1000
    assert queue.end_time_unix_nano <= inference.start_time_unix_nano + 1000
    assert inference.end_time_unix_nano <= classify.end_time_unix_nano
    assert _attributes(tokenize)["nlp.input_tokens"] > 0
    assert _attributes(inference)["nlp.batch_size"] == 3

    generate = requests_["text-generation"]
    assert not generate.parent_span_id  # no traceparent sent: a new trace
    children = {s.name: s for s in spans if s.parent_span_id == generate.span_id}
    assert set(children) == {"nlp.queue", "nlp.tokenize", "nlp.generate"}
    summary = _attributes(children["nlp.generate"])
    assert summary["nlp.generated_tokens"] == 5
    assert summary["nlp.time_to_first_token_s"] > 0
    assert not math.isnan(summary["nlp.time_per_output_token_s"])


def test_tracing_is_off_and_costs_nothing_without_an_endpoint():
    code = (
        "import sys\n"
        "from service import dataplane, tracing\n"
        "print(tracing.configure({}), tracing.enabled(),\n"
        "      tracing.start_request(0.0, {}) is None,\n"
        "      any(m.startswith('opentelemetry.sdk') for m in sys.modules))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert out == ["False", "False", "True", "False"]


def test_bentoml_request_spans_are_a_pass_through_unless_asked():
    """BentoML's own OpenTelemetry ASGI middleware opens spans for every request even when
    nothing exports them (≈ 12 % of the event loop's time): the service excludes every URL
    from it unless `server.bentoml_request_spans` is set. Our stage spans do not need it."""
    code = (
        "from opentelemetry.util.http import ExcludeList\n"
        "from service.service import NLPService\n"
        "urls = NLPService.config.get('tracing', {}).get('excluded_urls')\n"
        "print(urls is not None and all(ExcludeList(urls).url_disabled(f'http://h:3000{p}')\n"
        "      for p in ('/classify', '/v1/completions', '/v2/models/m/infer', '/metrics')))\n"
    )

    def passes_through(extra: dict[str, str]) -> str:
        env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", **extra}
        return subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout.split()[-1]

    assert passes_through({}) == "True"
    assert passes_through({"NLP_SERVER_BENTOML_REQUEST_SPANS": "true"}) == "False"
