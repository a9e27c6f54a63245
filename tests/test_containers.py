"""The images, built and run under a real engine (Debian's dockerd): issue 20.

`deploy/containers/build-images.sh` builds the serving image, the builder image (torch from a
local wheel folder served on a loopback port) and the Bento image (`bentoml containerize
--backend docker`) from the base image `deploy/containers/setup-engine.sh` chose, and the builder
image exports the tiny profile into a fresh model store. Then each image runs as it would be
deployed, on host networking with loopback ports only: read-only root, uid 1034, the HEALTHCHECK
of the image, every task over HTTP, KServe v2 over gRPC, /metrics, SIGTERM draining. Image sizes,
build times and cold starts go to deploy/results/containers-<date>.md.

Without an engine these tests skip, saying why; with NLP_REQUIRE_CONTAINERS=1 (CI, `make
test-containers`) they fail instead. NLP_CONTAINERS_REUSE=1 reuses images already built (the
model store is always exported afresh by the builder image).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import requests

from loadtests.server_process import ROOT, free_port
from models.catalog import load_catalog

# Images and containers under a real engine: `make test`, `make test-containers`; never the
# per-Python serving runs (`make test-serving`).
pytestmark = pytest.mark.containers

BUILD_SCRIPT = ROOT / "deploy" / "containers" / "build-images.sh"
BASE_IMAGE_FILE = ROOT / "deploy" / "containers" / ".base-image"
RESULTS_DIR = Path(os.environ.get("NLP_CONTAINER_RESULTS_DIR", ROOT / "deploy" / "results"))
REQUIRED = os.environ.get("NLP_REQUIRE_CONTAINERS") == "1"
REUSE = os.environ.get("NLP_CONTAINERS_REUSE") == "1"
SERVING, BUILDER, BENTO = (
    "nlp-serving:latest",
    "nlp-serving-builder:latest",
    "nlp-serving-bento:latest",
)
UID = "1034"
# Every container these tests start carries this label: teardown removes exactly those.
LABEL = "nlp-serving.test=containers"
READY_TIMEOUT_S = 180


def _docker_binary() -> str | None:
    # Debian's client matches Debian's daemon; another `docker` on PATH may need buildx.
    for candidate in ("/usr/bin/docker", shutil.which("docker")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def docker() -> str:
    binary = _docker_binary()
    problem = None
    if binary is None:
        problem = "no docker client installed"
    else:
        server = subprocess.run(
            [binary, "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if server.returncode != 0:
            said = (server.stderr or server.stdout).strip().splitlines() or ["no answer"]
            problem = f"no docker daemon answers ({said[-1][:200]})"
    if problem:
        message = (
            f"container tests: {problem}; run `bash deploy/containers/setup-engine.sh` "
            "as root first (installs docker.io, starts dockerd, makes the base image)"
        )
        if REQUIRED:
            pytest.fail(f"NLP_REQUIRE_CONTAINERS=1 but {message}", pytrace=False)
        pytest.skip(message)
    return binary


def run(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"{args}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    return result


# --- results ------------------------------------------------------------------------------------


@dataclass
class Results:
    base_image: str = ""
    build_seconds: dict[str, float] = field(default_factory=dict)
    image_mb: dict[str, float] = field(default_factory=dict)
    cold_start_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        cpu = _cpu_name()
        lines = [
            f"# Containers, built and run ({datetime.date.today().isoformat()})",
            "",
            f"Machine: {cpu}, {os.cpu_count()} cores, {platform.system()} "
            f"{platform.release()}; engine: Debian docker.io (dockerd, BuildKit).",
            f"Base image: `{self.base_image}`.",
            "",
            "| image | size (MB) |",
            "|---|---|",
        ]
        lines += [f"| `{image}` | {size:.0f} |" for image, size in self.image_mb.items()]
        lines += ["", "| build step (`deploy/containers/build-images.sh`) | seconds |", "|---|---|"]
        lines += [f"| {name} | {seconds:.1f} |" for name, seconds in self.build_seconds.items()]
        lines += ["", "Cold start (`docker run` to `/readyz` 200, tiny profile, 11 models):", ""]
        lines += [f"- `{image}`: {seconds:.1f} s" for image, seconds in self.cold_start_s.items()]
        if self.notes:
            lines += ["", *[f"- {note}" for note in self.notes]]
        return "\n".join(lines) + "\n"


def _cpu_name() -> str:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = re.search(r"model name\s*:\s*(.+)", text)
    flags = set((re.search(r"flags\s*:\s*(.+)", text) or re.search("()", "")).group(1).split())
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "amx_tile") if f in flags]
    return f"{name.group(1).strip() if name else platform.processor()} ({', '.join(isa)})"


@pytest.fixture(scope="module")
def results():
    collected = Results()
    yield collected
    if collected.image_mb:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"containers-{datetime.date.today().isoformat()}.md"
        path.write_text(collected.markdown())
        print(f"\ncontainer results: {path}\n{collected.markdown()}")


# --- images -------------------------------------------------------------------------------------


@dataclass
class Built:
    base_image: str
    store: Path


def _image_exists(docker: str, image: str) -> bool:
    return run(docker, "image", "inspect", image, check=False).returncode == 0


@pytest.fixture(scope="module")
def built(docker, results, tmp_path_factory) -> Built:
    base = os.environ.get("PYTHON_IMAGE") or (
        BASE_IMAGE_FILE.read_text().strip()
        if BASE_IMAGE_FILE.exists()
        else "python:3.11-slim-bookworm"
    )
    if not _image_exists(docker, base):
        pytest.fail(
            f"base image {base} is missing: run deploy/containers/setup-engine.sh", pytrace=False
        )
    work = tmp_path_factory.mktemp("containers")
    store = work / "home"
    times = work / "build-times.txt"
    images = ["serving", "builder", "store", "bento"]
    if REUSE and all(_image_exists(docker, image) for image in (SERVING, BUILDER, BENTO)):
        images = ["store"]
    env = {
        **os.environ,
        "DOCKER": docker,
        "PYTHON_IMAGE": base,
        "STORE": str(store),
        "BUILD_TIMES": str(times),
        "IMAGES": " ".join(images),
    }
    log = work / "build.log"
    with log.open("w") as out:
        build = subprocess.run(
            ["bash", str(BUILD_SCRIPT)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=1800,
            cwd=ROOT,
        )
    assert build.returncode == 0, log.read_text()[-5000:]
    results.base_image = base
    for line in times.read_text().splitlines():
        name, seconds = line.split()
        results.build_seconds[name] = float(seconds)
    for image in (SERVING, BUILDER, BENTO):
        size = run(docker, "image", "inspect", "--format", "{{.Size}}", image).stdout
        results.image_mb[image] = int(size) / 1e6
    if REUSE and images == ["store"]:
        results.notes.append("images reused (NLP_CONTAINERS_REUSE=1): build times not measured")
    return Built(base, store)


def test_builder_image_exports_the_tiny_profile_into_the_model_store_as_uid_1034(built):
    names = [spec.name for spec in load_catalog().profile("tiny")]
    models = built.store / "models"
    assert sorted(p.name for p in models.iterdir() if p.is_dir()) == sorted(names)
    for name in names:
        version = (models / name / "latest").read_text().strip()
        folder = models / name / version
        assert (folder / "manifest.json").is_file(), name
        owners = {p.stat().st_uid for p in folder.rglob("*")}
        assert owners == {int(UID)}, (name, owners)


def test_serving_and_bento_images_hold_no_export_side(docker, built):
    probe = (
        "import importlib.util as u, json; print(json.dumps({m: u.find_spec(m) is not None "
        "for m in ('torch', 'transformers', 'optimum', 'onnxruntime', 'bentoml')}))"
    )
    for image in (SERVING, BENTO):
        out = run(
            docker, "run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", probe
        ).stdout
        found = json.loads(out.strip().splitlines()[-1])
        assert found == {
            "torch": False,
            "transformers": False,
            "optimum": False,
            "onnxruntime": True,
            "bentoml": True,
        }, (image, found)
    # The builder has the export side (it made the store above).
    out = run(
        docker,
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "python",
        BUILDER,
        "-c",
        "import torch, optimum.exporters.onnx; print(torch.__version__)",
    ).stdout
    assert out.strip().endswith("+cpu"), out


# --- containers ---------------------------------------------------------------------------------


@dataclass
class Container:
    docker: str
    name: str
    port: int
    grpc_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def inspect(self, template: str) -> str:
        return run(self.docker, "inspect", "--format", template, self.name).stdout.strip()

    def logs(self) -> str:
        out = run(self.docker, "logs", "--tail", "80", self.name, check=False)
        return out.stdout + out.stderr

    def exec(self, *command: str, check: bool = False) -> subprocess.CompletedProcess:
        return run(self.docker, "exec", self.name, *command, check=check)

    def wait_ready(self, started: float) -> float:
        """Seconds from `started` until /readyz answers 200."""
        deadline = started + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.inspect("{{.State.Running}}") != "true":
                pytest.fail(f"{self.name} exited: {self.logs()}")
            try:
                if requests.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return time.monotonic() - started
            except requests.RequestException:
                pass
            time.sleep(0.25)
        pytest.fail(f"{self.name} not ready after {READY_TIMEOUT_S}s: {self.logs()}")

    def wait_health(self, status: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.inspect("{{.State.Health.Status}}") == status:
                return
            time.sleep(0.5)
        health = json.loads(self.inspect("{{json .State.Health}}"))
        last = (health.get("Log") or [{}])[-1]
        pytest.fail(
            f"{self.name}: health {health.get('Status')}, not {status}; last probe: "
            f"exit {last.get('ExitCode')}, {str(last.get('Output'))[-300:]}"
        )


def start_container(
    docker: str, image: str, name: str, *args: str, command: tuple[str, ...] = ()
) -> tuple[Container, float]:
    """`docker run -d` on host networking with free loopback ports; (container, start time).

    Host networking, no port mapping: traffic stays on 127.0.0.1. The image's own HEALTHCHECK
    command, polled every second here instead of every 10 s."""
    port, grpc_port = free_port(), free_port()
    run(docker, "rm", "-f", name, check=False)
    started = time.monotonic()
    run(
        docker,
        "run",
        "-d",
        "--name",
        name,
        "--label",
        LABEL,
        "--network",
        "host",
        "-e",
        "HOST=127.0.0.1",
        "-e",
        f"PORT={port}",
        "-e",
        f"GRPC_PORT={grpc_port}",
        "--health-interval",
        "1s",
        "--health-retries",
        "2",
        "--health-timeout",
        "5s",
        *args,
        image,
        *command,
    )
    return Container(docker, name, port, grpc_port), started


@pytest.fixture(scope="module", autouse=True)
def _remove_test_containers(docker):
    yield
    listed = run(docker, "ps", "-aq", "--filter", f"label={LABEL}", check=False).stdout.split()
    if listed:
        run(docker, "rm", "-f", *listed, check=False)


# The root filesystem read-only, as in deploy/k8s/deployment.yaml: writable tmpfs for /tmp and
# ONNX Runtime's $HOME/.cache only; the model store mounted read-only.
def _read_only(store: Path) -> list[str]:
    return [
        "--read-only",
        "--tmpfs",
        "/tmp:rw,size=256m",
        "--tmpfs",
        f"/home/bentoml/.cache:rw,size=16m,uid={UID},gid={UID}",
        "-v",
        f"{store / 'models'}:/home/bentoml/models:ro",
    ]


@pytest.fixture(scope="module")
def serving(docker, built, results) -> Container:
    container, started = start_container(
        docker, SERVING, "nlp-test-serving", *_read_only(built.store)
    )
    results.cold_start_s[SERVING] = container.wait_ready(started)
    return container


@pytest.fixture(scope="module")
def bento(docker, built, results) -> Container:
    """The Bento image, run like deploy/k8s/deployment.yaml runs it: read-only root, BentoML's
    home on a tmpfs, the models inside the image."""
    container, started = start_container(
        docker,
        BENTO,
        "nlp-test-bento",
        "--read-only",
        "--tmpfs",
        "/tmp:rw,size=256m",
        "--tmpfs",
        f"/var/lib/bentoml:rw,size=256m,uid={UID},gid={UID}",
        "--tmpfs",
        f"/home/bentoml/.cache:rw,size=16m,uid={UID},gid={UID}",
        "-e",
        "BENTOML_HOME=/var/lib/bentoml",
        "-e",
        "NLP_MODELS_THREADS=2",
    )
    results.cold_start_s[BENTO] = container.wait_ready(started)
    return container


def _texts_input(module, name: str, texts: list[str]):
    tensor = module.InferInput(name, [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
    return tensor


def _every_task(container: Container) -> None:
    import tritonclient.grpc as grpcclient

    url = container.url

    def post(path: str, body: dict) -> object:
        response = requests.post(f"{url}{path}", json=body, timeout=60)
        assert response.status_code == 200, (path, response.text)
        return response.json()

    assert post("/classify", {"inputs": "I loved this film."})[0][0]["label"]
    answer = post(
        "/answer",
        {
            "inputs": {
                "question": "Where does the cat sleep?",
                "context": "The cat sleeps on the mat all day.",
            }
        },
    )
    assert isinstance(answer["answer"], str) and answer["end"] >= answer["start"]
    generated = post(
        "/generate", {"inputs": "Once upon a time", "parameters": {"max_new_tokens": 8}}
    )
    assert isinstance(generated["generated_text"], str)
    assert isinstance(
        post("/translate", {"inputs": "The house is small."})[0]["translation_text"], str
    )
    embedding = np.asarray(post("/embed", {"inputs": "The house is small."}), dtype=float)
    assert embedding.size > 0 and np.isfinite(embedding).all()

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{container.grpc_port}")
    assert client.is_server_live() and client.is_server_ready()
    result = client.infer(
        "tiny-bert-classifier", [_texts_input(grpcclient, "text", ["A fine film.", "Dull."])]
    )
    labels = result.as_numpy("label")
    assert labels.shape[0] == 2

    metrics = requests.get(f"{url}/metrics", timeout=10).text
    wanted = ('model="tiny-bert-classifier"', 'protocol="grpc"', 'outcome="ok"')
    assert [
        line
        for line in metrics.splitlines()
        if line.startswith("nlp_requests_total{") and all(label in line for label in wanted)
    ], metrics[:2000]
    for task in (
        "text-classification",
        "question-answering",
        "text-generation",
        "translation",
        "feature-extraction",
    ):
        assert f'task="{task}"' in metrics, task
    assert "nlp_requests_active" in metrics


def test_serving_container_answers_every_task_over_http_and_grpc(serving):
    _every_task(serving)


def test_serving_container_runs_as_uid_1034_on_a_read_only_root(serving):
    assert serving.exec("id", "-u", check=True).stdout.strip() == UID
    assert serving.inspect("{{.HostConfig.ReadonlyRootfs}}") == "true"
    denied = serving.exec("python", "-c", "open('/app/written', 'w')")
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    assert serving.exec("python", "-c", "open('/tmp/written', 'w')").returncode == 0
    # The model store is read, never written.
    assert serving.exec("python", "-c", "open('/home/bentoml/models/written', 'w')").returncode != 0


def test_image_healthcheck_is_healthy_when_ready_and_unhealthy_without_a_server(
    docker, serving, built
):
    serving.wait_health("healthy")
    # The same image and HEALTHCHECK with no server behind it.
    idle, _ = start_container(
        docker,
        SERVING,
        "nlp-test-no-server",
        # (0s would mean "the image's", 60 s)
        "--health-start-period",
        "1s",
        *_read_only(built.store),
        command=("python", "-c", "import time; time.sleep(300)"),
    )
    idle.wait_health("unhealthy", timeout=60)
    log = json.loads(idle.inspect("{{json .State.Health}}"))["Log"]
    assert log and all(entry["ExitCode"] != 0 for entry in log)


def test_bento_container_serves_from_its_own_models_read_only_as_uid_1034(bento):
    _every_task(bento)
    assert bento.exec("id", "-u", check=True).stdout.strip() == UID
    assert bento.inspect("{{.HostConfig.ReadonlyRootfs}}") == "true"
    bento.wait_health("healthy")


def test_sigterm_drains_the_streams_in_flight_and_the_container_exits_zero(serving, results):
    """Last user of the serving container: `docker stop` sends SIGTERM; streams that are
    answering finish to their last token and the container exits 0, well before its kill."""
    from tests.test_faults import streams_in_flight

    streams = 4
    with ThreadPoolExecutor(streams) as pool:
        futures = streams_in_flight(serving.url, streams, pool)
        in_flight = sum(1 for f in futures if not f.done())
        stopped = time.monotonic()
        run(serving.docker, "stop", "--time", "60", serving.name, timeout=120)
        stop_seconds = time.monotonic() - stopped
        outcomes = [f.result() for f in futures]
    assert in_flight == streams
    assert [status for status, _ in outcomes] == [200] * streams
    for _, events in outcomes:
        assert events and events[-1].get("generated_text") is not None, events[-1:]
    assert serving.inspect("{{.State.ExitCode}}") == "0", serving.logs()
    assert stop_seconds < 30, stop_seconds
    results.notes.append(
        f"SIGTERM (`docker stop`) with {in_flight} streams in flight: all "
        f"finished, exit 0 after {stop_seconds:.1f} s"
    )


# --- the pod spec under podman ------------------------------------------------------------------

PODMAN_CONF = ROOT / "deploy" / "containers" / "podman-containers.conf"
DEPLOYMENT = ROOT / "deploy" / "k8s" / "deployment.yaml"


def _pod_for_this_machine(port: int, grpc_port: int) -> dict:
    """deploy/k8s/deployment.yaml as `podman kube play` can run it here: one replica, host
    networking on free loopback ports (no bridge; podman refuses port mappings on the host
    network, so the probes name the port number), the Bento image loaded locally. Everything
    else (security context, read-only root, emptyDirs, env) is the manifest's own."""
    import yaml

    deployment = yaml.safe_load(DEPLOYMENT.read_text())
    deployment["spec"]["replicas"] = 1
    pod = deployment["spec"]["template"]["spec"]
    pod["hostNetwork"] = True
    (container,) = pod["containers"]
    container["image"] = f"localhost/{BENTO}"
    container["imagePullPolicy"] = "Never"
    env = {item["name"]: item for item in container["env"]}
    env["HOST"]["value"], env["PORT"]["value"] = "127.0.0.1", str(port)
    env["GRPC_PORT"]["value"] = str(grpc_port)
    container.pop("ports")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        container[probe]["httpGet"]["port"] = port
    return deployment


def test_deployment_pod_runs_under_podman_kube_play_read_only_as_uid_1034(docker, built, tmp_path):
    import yaml

    podman = shutil.which("podman")
    if podman is None:
        message = "podman is not installed (deploy/containers/setup-engine.sh installs it)"
        if REQUIRED:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    env = {**os.environ, "CONTAINERS_CONF": str(PODMAN_CONF)}

    def podman_run(*args: str, timeout: float = 300, check: bool = True):
        result = subprocess.run(
            [podman, *args], env=env, capture_output=True, text=True, timeout=timeout
        )
        if check:
            assert result.returncode == 0, f"podman {args}: {result.stderr[-2000:]}"
        return result

    # The image docker built, into podman's store.
    saved = subprocess.Popen([docker, "save", BENTO], stdout=subprocess.PIPE)
    loaded = subprocess.run(
        [podman, "load", "-q"],
        stdin=saved.stdout,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    saved.wait(timeout=60)
    assert loaded.returncode == 0, loaded.stderr
    port, grpc_port = free_port(), free_port()
    manifest = tmp_path / "deployment.yaml"
    manifest.write_text(yaml.safe_dump(_pod_for_this_machine(port, grpc_port)))
    podman_run("kube", "down", str(manifest), check=False)
    try:
        podman_run("kube", "play", str(manifest))
        name = f"{yaml.safe_load(DEPLOYMENT.read_text())['metadata']['name']}-pod-0-nlp-serving"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        else:
            logs = podman_run("logs", name, check=False)
            pytest.fail(f"the pod is not ready: {logs.stdout[-2000:]}{logs.stderr[-2000:]}")
        assert (
            requests.post(
                f"http://127.0.0.1:{port}/classify", json={"inputs": "A fine film."}, timeout=30
            ).status_code
            == 200
        )
        assert podman_run("exec", name, "id", "-u").stdout.strip() == UID
        config = json.loads(podman_run("inspect", name).stdout)[0]
        assert config["HostConfig"]["ReadonlyRootfs"] is True
        assert not config["HostConfig"]["CapAdd"]
        assert "CAP_NET_RAW" in config["HostConfig"]["CapDrop"]  # drop: [ALL]
        # Writable where the manifest mounts emptyDirs, nowhere else.
        writes = podman_run(
            "exec",
            name,
            "sh",
            "-c",
            "touch /var/lib/bentoml/w /tmp/w /home/bentoml/.cache/w && echo ok; "
            "touch /w 2>/dev/null || echo refused",
        ).stdout.split()
        assert writes == ["ok", "refused"], writes
    finally:
        podman_run("kube", "down", str(manifest), check=False)
