"""docker-compose.yml under dockerd: model-builder, then nlp-serving healthy, Prometheus scraping
it; the `scale` profile with nginx in front of two service containers (issue 20).

Runs docker-compose 1.29 on docker-compose.yml + deploy/compose/host-network.yml (every service on
127.0.0.1: this machine allows loopback traffic only, so no bridge network), flattened by
deploy/compose/flatten_host_network.py, on the images `make image` builds.
Images that cannot be pulled are substituted by the Debian-package ones (nlp-prometheus,
nlp-nginx); Grafana, Jaeger and Locust have no substitute and are left out. What ran is appended
to deploy/results/containers-<date>.md. Skips or fails without an engine as
tests/test_containers.py does (NLP_REQUIRE_CONTAINERS=1).
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from deploy.compose.flatten_host_network import flatten
from loadtests.server_process import ROOT, free_port
from tests.test_containers import (  # noqa: F401  (the docker fixture)
    BASE_IMAGE_FILE,
    BUILD_SCRIPT,
    RESULTS_DIR,
    docker,
    run,
)

# Images and containers under a real engine: `make test`, `make test-containers`; never the
# per-Python serving runs (`make test-serving`).
pytestmark = pytest.mark.containers

PROJECT = "nlp-test-compose"
UPSTREAM = {
    "PROMETHEUS_IMAGE": ("prom/prometheus:v2.53.2", "nlp-prometheus:latest"),
    "NGINX_IMAGE": ("nginx:1.28-alpine", "nlp-nginx:latest"),
}
MODEL = "tiny-bert-classifier"
RAN: list[str] = []


def _compose_binary() -> str:
    found = shutil.which("docker-compose") or "/usr/bin/docker-compose"
    if not os.access(found, os.X_OK):
        pytest.fail(
            "docker-compose is not installed: deploy/containers/setup-engine.sh", pytrace=False
        )
    return found


def _exists(docker_bin: str, image: str) -> bool:
    return run(docker_bin, "image", "inspect", image, check=False).returncode == 0


@pytest.fixture(scope="module")
def stack(docker, tmp_path_factory):  # noqa: F811
    """The compose environment (ports, images) and a `compose(*args)` runner; torn down after."""
    base = os.environ.get("PYTHON_IMAGE") or (
        BASE_IMAGE_FILE.read_text().strip()
        if BASE_IMAGE_FILE.exists()
        else "python:3.11-slim-bookworm"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "COMPOSE_"))}
    env.update(
        {
            "PYTHON_IMAGE": base,
            "HF_HUB_OFFLINE": "1",
            "PROFILE": "tiny",
            "PATH": f"{os.path.dirname(docker)}:{env.get('PATH', '')}",
            "LB_RATE": "20r/s",
            "LB_BURST": "10",
        }
    )
    for name in (
        "NLP_HTTP_PORT",
        "NLP_GRPC_PORT",
        "NLP_REPLICA_HTTP_PORT",
        "NLP_REPLICA_GRPC_PORT",
        "LB_HTTP_PORT",
        "LB_GRPC_PORT",
        "LB_HEALTH_PORT",
        "PROMETHEUS_PORT",
    ):
        env[name] = str(free_port())
    missing = []
    for variable, (upstream, substitute) in UPSTREAM.items():
        if _exists(docker, upstream):
            env[variable] = upstream
        else:
            env[variable] = substitute
            RAN.append(f"{upstream} not available here: ran {substitute} (Debian package)")
            if not _exists(docker, substitute):
                missing.append(substitute.split(":")[0].removeprefix("nlp-"))
    for image, what in (
        ("nlp-serving:latest", "serving"),
        ("nlp-serving-builder:latest", "builder"),
    ):
        if not _exists(docker, image):
            missing.append(what)
    if missing:
        build = subprocess.run(
            ["bash", str(BUILD_SCRIPT)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=1800,
            env={**os.environ, "DOCKER": docker, "PYTHON_IMAGE": base, "IMAGES": " ".join(missing)},
        )
        assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    compose_bin = _compose_binary()
    flat = tmp_path_factory.mktemp("compose") / "docker-compose.host.yml"
    flat.write_text(flatten(compose_bin, env))

    def compose(*args: str, timeout: float = 600, check: bool = True):
        result = subprocess.run(
            [compose_bin, "-p", PROJECT, "--project-directory", str(ROOT), "-f", str(flat), *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check:
            assert result.returncode == 0, f"{args}: {result.stdout[-3000:]}{result.stderr[-3000:]}"
        return result

    compose("--profile", "scale", "down", "-v", "--remove-orphans", check=False)
    yield env, compose
    compose("--profile", "scale", "down", "-v", "--remove-orphans", "--timeout", "20", check=False)
    if RAN:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"containers-{datetime.date.today().isoformat()}.md"
        with path.open("a") as out:
            out.write("\n## docker-compose 1.29 (deploy/compose/host-network.yml)\n\n")
            out.write("".join(f"- {line}\n" for line in RAN))


def _container(docker_bin: str, compose, service: str) -> str:
    (container,) = compose("--profile", "scale", "ps", "-q", service).stdout.split()
    return container


def _wait_healthy(docker_bin: str, container: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = run(
            docker_bin, "inspect", "--format", "{{.State.Health.Status}}", container
        ).stdout.strip()
        if status == "healthy":
            return
        time.sleep(1)
    logs = run(docker_bin, "logs", "--tail", "60", container, check=False)
    pytest.fail(f"{container} is {status!r} after {timeout}s: {logs.stdout}{logs.stderr}")


def _count(port: str) -> float:
    """nlp_requests_total of MODEL on one service container, from its own /metrics."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sum(
        float(match.group(1))
        for match in re.finditer(
            rf'nlp_requests_total\{{[^}}]*model="{MODEL}"[^}}]*\}} ([0-9.e+]+)', text
        )
    )


def _classify(port: str) -> int:
    return requests.post(
        f"http://127.0.0.1:{port}/classify",
        json={"inputs": "A fine film.", "model": MODEL},
        headers={"Connection": "close"},
        timeout=30,
    ).status_code


def test_builder_then_healthy_service_then_prometheus_scrapes_its_request_counter(docker, stack):  # noqa: F811
    env, compose = stack
    started = time.monotonic()
    # model-builder runs to completion first (service_completed_successfully), into the
    # project's model-store volume; the service starts after it.
    compose("up", "-d", "--no-build", "nlp-serving", "prometheus", timeout=900)
    builder = _container(docker, compose, "model-builder")
    state = run(
        docker, "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", builder
    ).stdout.split()
    assert state == ["exited", "0"], state
    serving = _container(docker, compose, "nlp-serving")
    _wait_healthy(docker, serving)
    healthy = time.monotonic() - started
    for _ in range(5):
        assert _classify(env["NLP_HTTP_PORT"]) == 200

    prometheus = f"http://127.0.0.1:{env['PROMETHEUS_PORT']}"
    query = f'sum(nlp_requests_total{{job="nlp-serving",model="{MODEL}",outcome="ok"}})'
    deadline, value = time.monotonic() + 90, 0.0
    while time.monotonic() < deadline:
        try:
            answer = requests.get(
                f"{prometheus}/api/v1/query", params={"query": query}, timeout=5
            ).json()
            if answer["status"] == "success" and answer["data"]["result"]:
                value = float(answer["data"]["result"][0]["value"][1])
                if value >= 5:
                    break
        except (requests.RequestException, ValueError):
            pass
        time.sleep(1)
    assert value >= 5, f"Prometheus has {value} for {query}"
    RAN.append(
        f"model-builder exited 0, then nlp-serving healthy {healthy:.0f} s after "
        f"`up`; Prometheus ({env['PROMETHEUS_IMAGE']}) returned {query} = {value:.0f}"
    )


def test_scale_profile_nginx_spreads_over_both_replicas_and_survives_losing_one(docker, stack):  # noqa: F811
    env, compose = stack
    compose("--profile", "scale", "up", "-d", "--no-build", "lb", timeout=900)
    _wait_healthy(docker, _container(docker, compose, "nlp-serving-replica"))
    _wait_healthy(docker, _container(docker, compose, "lb"), timeout=60)
    ports = {"primary": env["NLP_HTTP_PORT"], "replica": env["NLP_REPLICA_HTTP_PORT"]}
    before = {name: _count(port) for name, port in ports.items()}
    statuses = []
    for _ in range(30):  # paced under the balancer's rate limit (LB_RATE 20r/s)
        statuses.append(_classify(env["LB_HTTP_PORT"]))
        time.sleep(0.1)
    assert statuses == [200] * 30
    spread = {name: _count(port) - before[name] for name, port in ports.items()}
    assert all(count > 0 for count in spread.values()), spread
    assert sum(spread.values()) == 30, spread

    # gRPC through the balancer too.
    import numpy as np
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{env['LB_GRPC_PORT']}")
    tensor = grpcclient.InferInput("text", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"A fine film."], dtype=object))
    assert client.infer(MODEL, [tensor]).as_numpy("label").shape[0] == 1

    # One replica gone: the balancer sends everything to the other.
    replica = _container(docker, compose, "nlp-serving-replica")
    run(docker, "kill", replica)
    after_kill = []
    for _ in range(20):
        after_kill.append(_classify(env["LB_HTTP_PORT"]))
        time.sleep(0.1)
    assert after_kill == [200] * 20, after_kill

    # Past the per-client rate (20 r/s, burst 10) the balancer answers 429.
    with ThreadPoolExecutor(8) as pool:
        burst = list(
            pool.map(
                lambda _: (
                    requests.get(
                        f"http://127.0.0.1:{env['LB_HTTP_PORT']}/livez", timeout=10
                    ).status_code
                ),
                range(60),
            )
        )
    assert 429 in burst and 200 in burst, burst
    RAN.append(
        f"scale profile: nginx ({env['NGINX_IMAGE']}) spread 30 requests as {spread}; "
        f"after `docker kill` of the replica 20/20 answered 200; gRPC through nginx "
        f"answered; limit_req refused {burst.count(429)}/60 of a burst with 429"
    )
    RAN.append(
        "Grafana, Jaeger, Locust: not run (their images cannot be pulled here and have "
        "no Debian-package substitute in this project)"
    )
