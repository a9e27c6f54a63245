"""A real Prometheus scrapes the running service; its PromQL answers match the traffic sent.

Prometheus is the Debian package (`apt-get install prometheus`, done here when the binary is
missing and we are root: CI runs `make test` as root on a fresh machine). It scrapes the live
server every second; the test warms the series up, waits for a scrape, sends a known number of
HTTP and gRPC requests, waits for the scrape that saw them, then asks Prometheus's HTTP API.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests

from loadtests.server_process import free_port
from service.metrics import LATENCY_BUCKETS
from tests.test_metrics import start_private_server

MODEL = "tiny-bert-classifier"
SCRAPE_SECONDS = 1
HTTP_REQUESTS = 40
GRPC_REQUESTS = 15


def prometheus_binary() -> str:
    """The `prometheus` binary, installed from the Debian package if it is missing."""
    found = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if os.access("/usr/bin/prometheus", os.X_OK) else None
    )
    if found:
        return found
    if not shutil.which("apt-get") or os.geteuid() != 0:
        pytest.skip("prometheus is not installed and apt-get cannot install it here (not root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command, timeout in (
        (["apt-get", "update", "-qq"], 300),
        (["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"], 600),
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    found = shutil.which("prometheus") or "/usr/bin/prometheus"
    assert os.access(found, os.X_OK), "apt-get installed prometheus but there is no binary"
    return found


@dataclass
class Prometheus:
    url: str

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        params = {"query": expr, **({"time": f"{at:.3f}"} if at is not None else {})}
        response = requests.get(f"{self.url}/api/v1/query", params=params, timeout=10)
        payload = response.json()
        assert payload["status"] == "success", payload
        return payload["data"]["result"]

    def value(self, expr: str, at: float | None = None) -> float:
        """A one-element instant vector's value (NaN when the vector is empty)."""
        result = self.query(expr, at)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else math.nan

    def wait_for(self, expr: str, expected: float, timeout: float = 15.0) -> float:
        """Poll until `expr` equals `expected` (a scrape has seen it); return the last value."""
        deadline = time.monotonic() + timeout
        value = self.value(expr)
        while value != expected and time.monotonic() < deadline:
            time.sleep(0.2)
            value = self.value(expr)
        return value


@pytest.fixture(scope="module")
def live_server(tiny_store, tmp_path_factory):
    """The service serving one classifier, in a BentoML home of its own (see
    `start_private_server`: a server started elsewhere must not reset these counters)."""
    server = start_private_server(
        tiny_store, tmp_path_factory.mktemp("prometheus_target"), {"NLP_MODELS_SERVE": MODEL}
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def prometheus(live_server, tmp_path_factory) -> Iterator[Prometheus]:
    binary = prometheus_binary()
    folder = tmp_path_factory.mktemp("prometheus")
    target = live_server.url.removeprefix("http://")
    (folder / "prometheus.yml").write_text(
        "global:\n"
        f"  scrape_interval: {SCRAPE_SECONDS}s\n"
        f"  scrape_timeout: {SCRAPE_SECONDS}s\n"
        "scrape_configs:\n"
        "  - job_name: nlp-serving\n"
        "    metrics_path: /metrics\n"
        "    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    port = free_port()
    log = (folder / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Prometheus(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, (folder / "prometheus.log").read_text()
            try:
                if server.value('up{job="nlp-serving"}') == 1:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.25)
        else:
            pytest.fail(
                f"Prometheus never scraped {target}:\n{(folder / 'prometheus.log').read_text()}"
            )
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def _grpc_sender(live_server) -> Callable[[], None] | str:
    """A function sending one v2 ModelInfer over gRPC, or why gRPC cannot be tested here."""
    try:
        import tritonclient.grpc as grpcclient

        import service.kserve  # noqa: F401
    except ImportError as err:
        return f"no gRPC adapter or client: {err}"
    client = grpcclient.InferenceServerClient(live_server.grpc_address)
    try:
        if not client.is_server_live():
            return "the gRPC server is not live"
    except Exception as err:  # tritonclient raises its own error type for UNAVAILABLE
        return f"the gRPC server does not answer: {err}"

    def send() -> None:
        text = grpcclient.InferInput("text", [2], "BYTES")
        text.set_data_from_numpy(np.array([b"I loved this film.", b"Dull."], dtype=object))
        client.infer(MODEL, [text])

    return send


def _latest(protocol: str) -> str:
    return (
        f'sum(nlp_requests_total{{model="{MODEL}",protocol="{protocol}",'
        f'outcome="ok"}}) or vector(0)'
    )


def _direct(live_server, protocol: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{live_server.url}/metrics", timeout=10).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "nlp_requests_total"
        and s.labels.get("model") == MODEL
        and s.labels.get("protocol") == protocol
        and s.labels.get("outcome") == "ok"
    )


def test_prometheus_sees_exactly_the_requests_sent_over_http_and_grpc(prometheus, live_server):
    body = {"inputs": "I loved this film.", "model": MODEL}
    url = f"{live_server.url}/classify"
    send_grpc = _grpc_sender(live_server)
    # The gRPC server is part of the service: not reaching it is a failure, not a skip.
    assert callable(send_grpc), send_grpc
    # Warm-up: every series exists (non-zero) before Prometheus' window below starts.
    assert requests.post(url, json=body, timeout=30).status_code == 200
    send_grpc()
    before = {p: _direct(live_server, p) for p in ("http", "grpc")}
    for protocol in ("http", "grpc"):
        seen = prometheus.wait_for(_latest(protocol), before[protocol])
        assert seen == before[protocol], f"Prometheus never scraped the warm-up ({protocol})"
    # The latest scrape, which saw the warm-up: the range queries below start exactly there,
    # so they hold no sample from before the warm-up (the previous scrape is 1 s older).
    warmed_up_at = prometheus.value(f'max(timestamp(nlp_requests_total{{model="{MODEL}"}}))')

    def timed_post(_: int) -> float:
        started = time.perf_counter()
        assert requests.post(url, json=body, timeout=30).status_code == 200
        return time.perf_counter() - started

    with ThreadPoolExecutor(4) as pool:
        latencies = list(pool.map(timed_post, range(HTTP_REQUESTS)))
    for _ in range(GRPC_REQUESTS):
        send_grpc()

    # The service's own counters moved by exactly what was sent...
    expected = {"http": before["http"] + HTTP_REQUESTS, "grpc": before["grpc"] + GRPC_REQUESTS}
    assert {p: _direct(live_server, p) for p in expected} == expected
    # ...and so did Prometheus' latest scrape of them.
    for protocol, value in expected.items():
        assert prometheus.wait_for(_latest(protocol), value) == value, protocol

    # PromQL over the window since the warm-up: the increase is exactly the traffic.
    now = time.time()
    window = f"{math.ceil((now - warmed_up_at) * 1000) + 1}ms"

    def over_window(metric: str, by: str = "") -> str:
        series = f'{metric}{{model="{MODEL}"}}[{window}]'
        return f"sum {by} (max_over_time({series}) - min_over_time({series}))"

    increase = prometheus.query(over_window("nlp_requests_total", "by (protocol, outcome)"), at=now)
    by_protocol = {
        r["metric"]["protocol"]: float(r["value"][1])
        for r in increase
        if r["metric"]["outcome"] == "ok"
    }
    assert by_protocol["http"] == HTTP_REQUESTS
    assert by_protocol["grpc"] == GRPC_REQUESTS
    rate = prometheus.value(
        f'sum(rate(nlp_requests_total{{model="{MODEL}",protocol="http"}}[{window}]))', at=now
    )
    assert rate > 0

    # p95 of the server-side duration: finite, inside the buckets, and no slower than the
    # client saw (each server duration is part of a client latency).
    p95 = prometheus.value(
        "histogram_quantile(0.95, sum by (le) (rate(nlp_request_duration_seconds_bucket"
        f'{{model="{MODEL}",protocol="http"}}[{window}])))',
        at=now,
    )
    assert math.isfinite(p95) and 0 < p95 <= LATENCY_BUCKETS[-1]
    client_p95 = float(np.percentile(latencies, 95))
    client_bucket = next(b for b in LATENCY_BUCKETS if b >= client_p95)
    assert p95 <= client_bucket, (p95, client_p95)

    # The stage histograms and the batch count reach Prometheus as well.
    batches = prometheus.value(over_window("nlp_batch_size_count"), at=now)
    inputs = prometheus.value(over_window("nlp_batch_size_sum"), at=now)
    sent_inputs = HTTP_REQUESTS + 2 * GRPC_REQUESTS
    assert inputs == sent_inputs
    assert 1 <= batches <= sent_inputs
    # Each stage is part of a request's duration, so its median lies below the request p95's
    # bucket.
    p95_bucket = next(b for b in LATENCY_BUCKETS if b >= p95)
    for stage in ("queue", "tokenization", "inference"):
        q = prometheus.value(
            f"histogram_quantile(0.5, sum by (le) (rate(nlp_{stage}_duration_seconds_bucket"
            f'{{model="{MODEL}"}}[{window}])))',
            at=now,
        )
        assert math.isfinite(q) and 0 <= q <= p95_bucket, stage


def test_prometheus_scrape_config_in_deploy_parses_with_promtool():
    prometheus_binary()  # the Debian package prometheus, which ships promtool
    promtool = shutil.which("promtool")
    # The Debian package that prometheus_binary() installs ships promtool: missing is a failure.
    assert promtool is not None, "promtool missing although the prometheus package is installed"
    config = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "prometheus.yml"
    done = subprocess.run(
        [promtool, "check", "config", "--syntax-only", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
