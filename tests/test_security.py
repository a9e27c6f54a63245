"""Security guarantees (SECURITY.md), each checked against the real thing.

- Request bodies over `server.max_body_bytes` get 413 before they are read (HTTP, declared or
  chunked; compressed v2 bodies are not inflated past it) and gRPC messages over it
  RESOURCE_EXHAUSTED; the server's memory does not grow by the body's size.
- Model names from requests never reach the file system: every protocol answers 404 (or a 4xx
  naming the `model` field) and, in process, no file is opened while such names are looked up.
- The limits on max_new_tokens, num_beams, number of inputs and input length are enforced with
  a 4xx naming the field.
- No `trust_remote_code=True` anywhere; the export passes it explicitly False.
- Containers run as non-root; dependencies are locked with hashes (tests/test_lock.py).
"""

from __future__ import annotations

import ast
import gzip
import json
import re
import select
import socket
import sys
from pathlib import Path
from urllib.parse import quote, urlsplit

import grpc
import psutil
import pytest
import requests
import yaml
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.tiny_records import tiny_record

ROOT = Path(__file__).resolve().parents[1]
BODY = 10 * 1024 * 1024  # 10 MB, ten times the default limit
LIMIT = 1_048_576  # service/config.yaml server.max_body_bytes
TRAVERSAL = "../../etc/passwd"


@pytest.fixture(scope="module")
def url(live_server) -> str:
    return live_server.url


@pytest.fixture(scope="module")
def grpc_stub(live_server):
    channel = grpc.insecure_channel(
        live_server.grpc_address, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    )
    yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


# --- oversized bodies -------------------------------------------------------------------------


def _request_head(url: str, path: str, headers: dict[str, str]) -> tuple[socket.socket, bytes]:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return sock, (
        f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: application/json\r\n{head}\r\n"
    ).encode()


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    sock.settimeout(30)
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def _chunks(size: int, piece: int = 64 * 1024):
    """A JSON body of `size` bytes in HTTP/1.1 chunked encoding (no Content-Length)."""
    body = b'{"inputs": "' + b"a" * (size - 14) + b'"}'
    for start in range(0, len(body), piece):
        part = body[start : start + piece]
        yield f"{len(part):x}\r\n".encode() + part + b"\r\n"
    yield b"0\r\n\r\n"


def send_declared(url: str, path: str, size: int = BODY) -> tuple[int, dict, bytes, int]:
    """Declare `size` bytes, send none of them, wait for the answer."""
    sock, head = _request_head(url, path, {"Content-Length": str(size)})
    with sock:
        sock.sendall(head)
        return (*_read_response(sock), 0)


def send_chunked(url: str, path: str, size: int = BODY) -> tuple[int, dict, bytes, int]:
    """Stream `size` bytes chunked, stopping as soon as the server answers; returns how many
    body bytes went out before the answer."""
    sock, head = _request_head(url, path, {"Transfer-Encoding": "chunked"})
    sent = 0
    with sock:
        sock.sendall(head)
        try:
            for chunk in _chunks(size):
                if select.select([sock], [], [], 0)[0]:
                    break  # the server answered: stop sending
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return (*_read_response(sock), sent)


@pytest.mark.parametrize("send", [send_declared, send_chunked], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    ("path", "shape"),
    [
        ("/classify", "task"),
        ("/v1/completions", "openai"),
        ("/v2/models/tiny-bert-classifier/infer", "v2"),
    ],
)
def test_oversized_body_is_413_before_it_is_read(url, send, path, shape):
    status, headers, body, sent = send(url, path)
    assert status == 413
    assert headers["content-type"] == "application/json"
    assert headers.get("connection") == "close"
    payload = json.loads(body)
    message = {
        "task": lambda p: p["error"],
        "openai": lambda p: p["error"]["message"],
        "v2": lambda p: p["error"],
    }[shape](payload)
    assert str(LIMIT) in message and "server.max_body_bytes" in message
    if shape == "task":
        assert payload["field"] is None
    # Declared: answered from the headers alone. Chunked: answered before the body was complete
    # (`sent` also counts what the kernel buffered on both ends; the memory test below shows
    # the server did not hold it).
    assert sent < BODY


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_of_exactly_the_limit_is_served_one_byte_more_is_413(url, chunked):
    # JSON whitespace pads the body to the limit without giving the model 1 MB to read.
    body = b'{"inputs": "fine"' + b" " * (LIMIT - 18) + b"}"
    assert len(body) == LIMIT
    data = iter([body[i : i + 65536] for i in range(0, len(body), 65536)]) if chunked else body
    response = requests.post(
        f"{url}/classify", data=data, timeout=60, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    over = (send_chunked if chunked else send_declared)(url, "/classify", size=LIMIT + 1)
    assert over[0] == 413


def test_compressed_body_is_bounded_after_decompression(url):
    """10 MB of JSON gzipped to ~10 kB passes the body limit, but is not inflated past it."""
    inputs = [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a" * BODY]}]
    bomb = gzip.compress(json.dumps({"inputs": inputs}).encode())
    assert len(bomb) < LIMIT / 10
    response = requests.post(
        f"{url}/v2/models/tiny-bert-classifier/infer",
        data=bomb,
        timeout=60,
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert response.status_code == 413, response.text
    assert "server.max_body_bytes" in response.json()["error"]


def _worker_rss(live_server) -> int:
    """RSS of every process of the server (the serve process and its workers), in bytes."""
    root = psutil.Process(live_server.process.pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])


def test_oversized_bodies_do_not_grow_server_memory(url, live_server):
    for send in (send_declared, send_chunked):  # warm both code paths
        send(url, "/classify")
    before = _worker_rss(live_server)
    for _ in range(3):
        for send in (send_declared, send_chunked):
            assert send(url, "/classify")[0] == 413
    grown = _worker_rss(live_server) - before
    # Six 10 MB bodies: reading even one would add ~10 MB (and its JSON parse far more).
    assert grown < BODY / 4, f"server RSS grew by {grown / 1e6:.1f} MB"


def _infer_request(model: str, payload: bytes) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name="text", datatype="BYTES", shape=[1])
    # BYTES raw contents: a 4-byte little-endian length, then the bytes.
    request.raw_input_contents.append(len(payload).to_bytes(4, "little") + payload)
    return request


def test_grpc_message_over_the_limit_is_resource_exhausted(grpc_stub):
    with pytest.raises(grpc.RpcError) as refused:
        grpc_stub.ModelInfer(_infer_request("tiny-bert-classifier", b"a" * BODY), timeout=60)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert str(LIMIT) in refused.value.details()
    # The server keeps answering normal requests.
    answer = grpc_stub.ModelInfer(_infer_request("tiny-bert-classifier", b"fine"), timeout=60)
    assert answer.model_name == "tiny-bert-classifier"


# --- model names from requests never reach the file system -------------------------------------


@pytest.mark.parametrize(
    "name", [TRAVERSAL, "/etc/passwd", "..", "tiny-gpt2/../../etc", "%2e%2e%2fetc"]
)
def test_path_like_model_names_are_refused_on_task_routes(url, name):
    response = requests.post(f"{url}/classify", json={"inputs": "fine", "model": name}, timeout=30)
    assert response.status_code in (404, 422), response.text
    assert response.json()["field"] == "model"


def test_path_like_model_names_are_refused_by_openai_routes(url):
    response = requests.post(
        f"{url}/v1/completions",
        timeout=30,
        json={"model": TRAVERSAL, "prompt": "Hi", "max_tokens": 1},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"


def test_a_stored_model_tag_is_not_a_served_name(url):
    """Names are looked up among the served names only, not resolved in the model store: the
    tag of a model that is on disk (and served) is still unknown."""
    tag = next(
        m["tag"]
        for m in requests.get(f"{url}/models", timeout=10).json()
        if m["task"] == "text-classification"
    )
    response = requests.post(f"{url}/classify", json={"inputs": "fine", "model": tag}, timeout=30)
    assert response.status_code == 404
    assert tag in response.json()["error"]


@pytest.mark.parametrize("name", [TRAVERSAL, "../tiny-gpt2", "..\\..\\windows"])
def test_v2_traversal_in_the_path_is_404_naming_the_model(url, name):
    infer = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}
    response = requests.post(
        f"{url}/v2/models/{quote(name, safe='')}/infer", json=infer, timeout=30
    )
    assert response.status_code == 404, response.text
    assert repr(name) in response.json()["error"]
    for suffix in ("", "/ready", "/config"):
        response = requests.get(f"{url}/v2/models/{quote(name, safe='')}{suffix}", timeout=30)
        assert response.status_code == 404, (suffix, response.text)
        assert response.headers["content-type"] == "application/json"


def test_grpc_traversal_model_name_is_not_found(grpc_stub):
    with pytest.raises(grpc.RpcError) as refused:
        grpc_stub.ModelInfer(_infer_request(TRAVERSAL, b"fine"), timeout=30)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert TRAVERSAL in refused.value.details()
    with pytest.raises(grpc.RpcError) as refused:
        grpc_stub.ModelMetadata(service_pb2.ModelMetadataRequest(name=TRAVERSAL), timeout=30)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND


class _FileAccess:
    """Python audit hook (PEP 578) recording every file opened or listed while `recording`."""

    def __init__(self) -> None:
        self.recording = False
        self.events: list[tuple[str, str]] = []
        sys.addaudithook(self)

    def __call__(self, event: str, args: tuple) -> None:
        if self.recording and event in {"open", "os.listdir", "os.scandir", "os.chdir"}:
            self.events.append((event, str(args[0]) if args else ""))


def test_model_names_are_looked_up_in_memory_without_file_access(tiny_store):
    """In process, through the real app: while requests name models by paths, nothing is
    opened or listed; the names only meet the in-memory table of served models."""
    from fastapi.testclient import TestClient

    from service.config import Settings
    from service.dataplane import DataPlane
    from service.http.app import create_app

    settings = Settings()
    plane = DataPlane(settings)
    plane.load(
        [tiny_record(tiny_store, "tiny-bert-classifier"), tiny_record(tiny_store, "tiny-gpt2")]
    )
    app = create_app(settings)
    app.state.plane = plane
    served_path = str(plane.models["tiny-gpt2"].record.path)
    names = [TRAVERSAL, served_path, served_path + "/model.onnx", "tiny-gpt2:latest"]
    infer = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}

    def ask(client: TestClient) -> list[int]:
        statuses = []
        for name in names:
            statuses.append(
                client.post("/classify", json={"inputs": "x", "model": name}).status_code
            )
            statuses.append(
                client.post(
                    "/v1/completions", json={"model": name, "prompt": "x", "max_tokens": 1}
                ).status_code
            )
            statuses.append(
                client.post(f"/v2/models/{quote(name, safe='')}/infer", json=infer).status_code
            )
        return statuses

    access = _FileAccess()
    try:
        with TestClient(app) as client:
            ask(client)  # first calls: lazy imports may read modules
            access.recording = True
            statuses = ask(client)
            access.recording = False
    finally:
        access.recording = False
        plane.close()
    assert set(statuses) <= {400, 404, 422}, statuses
    assert access.events == [], access.events


# --- limits -------------------------------------------------------------------------------------

LIMIT_CASES = [
    (
        "/generate",
        {"inputs": "Hi", "parameters": {"max_new_tokens": 513}},
        422,
        "parameters.max_new_tokens",
        "512",
    ),
    (
        "/v1/completions",
        {"model": "tiny-gpt2", "prompt": "Hi", "max_tokens": 513},
        400,
        "max_new_tokens",
        "512",
    ),
    (
        "/translate",
        {"inputs": "Hi", "parameters": {"max_new_tokens": 513}},
        422,
        "parameters.max_new_tokens",
        "512",
    ),
    (
        "/translate",
        {"inputs": "Hi", "parameters": {"num_beams": 9}},
        422,
        "parameters.num_beams",
        "8",
    ),
    ("/classify", {"inputs": ["x"] * 65}, 422, "inputs", "64"),
    ("/embed", {"inputs": ["x"] * 65}, 422, "inputs", "64"),
    ("/translate", {"inputs": ["x"] * 65}, 422, "inputs", "64"),
    ("/classify", {"inputs": "word " * 400}, 422, "inputs", "128"),
    ("/embed", {"inputs": "word " * 400}, 422, "inputs", "128"),
    (
        "/answer",
        {"inputs": {"question": "word " * 400, "context": "word " * 400}},
        422,
        "inputs.question",
        "max_seq_len",
    ),
    ("/generate", {"inputs": "word " * 400}, 422, "inputs", "tokens"),
    (
        "/generate",
        {"inputs": "Hi", "parameters": {"stop": ["x"] * 17}},
        422,
        "parameters.stop",
        "16",
    ),
    (
        "/v1/completions",
        {"model": "tiny-gpt2", "prompt": "Hi", "stop": ["x"] * 17},
        400,
        "stop",
        "16",
    ),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "field", "limit"),
    LIMIT_CASES,
    ids=[f"{c[0]}:{c[3]}" for c in LIMIT_CASES],
)
def test_limits_are_enforced_with_4xx_naming_the_field(url, path, body, status, field, limit):
    response = requests.post(f"{url}{path}", json=body, timeout=60)
    assert response.status_code == status, response.text
    payload = response.json()
    if path.startswith("/v1/"):
        error = payload["error"]
        assert field in (error["param"] or "") or field in error["message"], payload
        assert limit in error["message"], payload
    else:
        assert (payload["field"] or "").startswith(field), payload
        assert limit in payload["error"], payload


@pytest.mark.parametrize(("field", "value"), [("stop", [""]), ("seed", -1)])
def test_openai_sampling_values_the_runtime_refuses_are_400_naming_the_param(url, field, value):
    """The OpenAI schema is wider than the runtime's parameters: what only the runtime refuses
    must still be a 400 naming the param, not a 500."""
    response = requests.post(
        f"{url}/v1/completions",
        timeout=60,
        json={"model": "tiny-gpt2", "prompt": "Hi", "max_tokens": 2, field: value},
    )
    assert response.status_code == 400, response.text
    assert field in response.json()["error"]["param"], response.text


def test_v2_and_grpc_enforce_the_number_of_inputs(url, grpc_stub):
    texts = ["x"] * 65
    infer = {"inputs": [{"name": "text", "shape": [65], "datatype": "BYTES", "data": texts}]}
    response = requests.post(f"{url}/v2/models/tiny-bert-classifier/infer", json=infer, timeout=60)
    assert response.status_code == 422, response.text
    assert "64" in response.json()["error"]
    request = service_pb2.ModelInferRequest(model_name="tiny-bert-classifier")
    request.inputs.add(name="text", datatype="BYTES", shape=[65])
    request.raw_input_contents.append(
        b"".join(len(t).to_bytes(4, "little") + t.encode() for t in texts)
    )
    with pytest.raises(grpc.RpcError) as refused:
        grpc_stub.ModelInfer(request, timeout=60)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "64" in refused.value.details()


def test_limits_have_config_keys():
    config = yaml.safe_load((ROOT / "service" / "config.yaml").read_text())
    assert config["server"]["max_body_bytes"] == LIMIT
    assert config["limits"]["max_inputs"] == 64
    assert config["limits"]["max_new_tokens"] == 512
    assert config["limits"]["max_num_beams"] == 8


# --- no remote code -----------------------------------------------------------------------------


def _python_files(*folders: str) -> list[Path]:
    return [
        p for folder in folders for p in (ROOT / folder).rglob("*.py") if "generated" not in p.parts
    ]


def _calls_with_keyword(path: Path, keyword: str) -> list[ast.keyword]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        kw
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        for kw in node.keywords
        if kw.arg == keyword
    ]


def test_no_code_passes_trust_remote_code_true():
    offenders = []
    for path in _python_files("models", "service", "loadtests"):
        for kw in _calls_with_keyword(path, "trust_remote_code"):
            if not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                offenders.append(f"{path.relative_to(ROOT)}:{kw.value.lineno}")
        assert not re.search(r"trust_remote_code\s*=\s*True", path.read_text()), path
    assert offenders == []


def test_export_passes_trust_remote_code_false():
    calls = [kw for kw in _calls_with_keyword(ROOT / "models" / "export.py", "trust_remote_code")]
    assert calls and all(
        isinstance(kw.value, ast.Constant) and kw.value.value is False for kw in calls
    )


def test_serving_never_executes_model_code():
    """The serving side loads ONNX graphs and tokenizer JSON (data, not code) and renders chat
    templates in Jinja's immutable sandbox; it never imports transformers' remote-code path."""
    for path in _python_files("service"):
        text = path.read_text()
        assert "AutoModel" not in text and "dynamic_module_utils" not in text, path
    tokenizer = (ROOT / "service" / "runtime" / "text_tokenizer.py").read_text()
    assert "ImmutableSandboxedEnvironment" in tokenizer
    assert re.search(r"from jinja2 import .*\bEnvironment\b", tokenizer) is None


# --- container and dependencies ----------------------------------------------------------------


def _final_user(dockerfile: str) -> str | None:
    users = [
        line.split(None, 1)[1].strip()
        for line in dockerfile.splitlines()
        if line.strip().upper().startswith("USER ")
    ]
    return users[-1] if users else None


def test_containers_run_as_non_root():
    project = _final_user((ROOT / "Dockerfile").read_text())
    assert project and project.split(":")[0] not in {"root", "0"}, project
    # The Bento image: our template only adds to BentoML's, whose last instruction is `USER
    # bentoml` (tests/test_deploy.py checks the Dockerfile `bentoml build` renders from it).
    template = (ROOT / "deploy" / "bento" / "Dockerfile.template").read_text()
    assert "{% extends bento_base_template %}" in template and "{{ super() }}" in template
    assert _final_user(template) is None
    import bentoml

    base = Path(bentoml.__file__).parent / "_internal/container/frontend/dockerfile/templates"
    assert _final_user((base / "base_v2.j2").read_text()) == "{{ bento__user }}"
    assert _final_user((base / "base.j2").read_text()) == "bentoml"
    deployment = yaml.safe_load((ROOT / "deploy" / "k8s" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]


def test_security_policy_states_threat_model_and_enforcement():
    text = (ROOT / "SECURITY.md").read_text().lower()
    for needle in (
        "threat model",
        "trust_remote_code",
        "max_body_bytes",
        "max_new_tokens",
        "max_inputs",
        "max_num_beams",
        "non-root",
        "reporting",
    ):
        assert needle in text, needle
