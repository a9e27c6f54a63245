"""Triton's model repository extension: index, load and unload over REST and gRPC with the real
`tritonclient`, against a real two-worker server, so every change must reach both workers.

The server runs on a private copy of three tiny models' store entries, because one test stores a
new version of a served model (a copy of its files) to show a swap without a restart.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from loadtests.server_process import ROOT, start_server
from loadtests.worker_memory import worker_processes

SERVED = "tiny-bert-classifier"
SPARE = "tiny-distilbert-classifier"  # stored, not served at start
GENERATOR = "tiny-gpt2"
MODELS = (SERVED, SPARE, GENERATOR)
TRIES = 24  # requests on fresh connections: both workers answer some of them


@pytest.fixture(scope="module")
def store(tiny_store, tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("repository_home")
    for name in MODELS:
        shutil.copytree(tiny_store / "models" / name, home / "models" / name)
    return home


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    server = start_server(
        store,
        tmp_path_factory.mktemp("repository") / "server.log",
        {"NLP_MODELS_SERVE": f"{SERVED},{GENERATOR}", "NLP_SERVER_WORKERS": "2"},
    )
    # /readyz answers once one worker is ready; the tests need both to have joined.
    deadline = time.monotonic() + 120
    while len(_joined_workers(server)) < 2:
        assert time.monotonic() < deadline, server.log()[-3000:]
        time.sleep(0.25)
    yield server
    server.stop()


def _joined_workers(server) -> list[Path]:
    """The workers registered in the shared served set (service/model_control.py)."""
    from service.model_control import STATE_DIR_ENV

    workers = worker_processes(server.process.pid)
    if not workers:
        return []
    directory = Path(workers[0].environ()[STATE_DIR_ENV])
    return list(directory.glob("ack-*.json"))


@pytest.fixture(scope="module")
def http_client(server):
    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc_client(server):
    client = grpcclient.InferenceServerClient(server.grpc_address)
    yield client
    client.close()


def answers(server, model: str) -> set[int]:
    """Status codes of `TRIES` classify requests for `model`, each on a new connection."""
    codes = set()
    for _ in range(TRIES):
        response = requests.post(
            f"{server.url}/classify",
            timeout=30,
            headers={"Connection": "close"},
            json={"inputs": "A fine film.", "model": model},
        )
        codes.add(response.status_code)
    return codes


def served_tag(server, model: str) -> set[str]:
    """The store tag every worker serves `model` as (v2 metadata, fresh connections)."""
    tags = set()
    for _ in range(TRIES):
        response = requests.get(
            f"{server.url}/v2/models/{model}", timeout=30, headers={"Connection": "close"}
        )
        tags.add(response.json()["parameters"]["tag"] if response.ok else response.status_code)
    return tags


def test_index_lists_stored_models_and_which_are_served(http_client, grpc_client):
    index = {e["name"]: e for e in http_client.get_model_repository_index()}
    assert set(index) == set(MODELS)
    assert index[SERVED]["state"] == "READY" and index[SPARE]["state"] == "UNAVAILABLE"
    over_grpc = grpc_client.get_model_repository_index(as_json=True)["models"]
    assert {e["name"]: e["state"] for e in over_grpc} == {
        name: entry["state"] for name, entry in index.items()
    }


def test_load_and_unload_reach_every_worker(server, http_client, grpc_client):
    assert answers(server, SPARE) == {404}
    http_client.load_model(SPARE)
    assert http_client.is_model_ready(SPARE)
    assert answers(server, SPARE) == {200}  # both workers serve it
    grpc_client.unload_model(SPARE)
    assert answers(server, SPARE) == {404}
    grpc_client.load_model(SPARE)
    assert grpc_client.is_model_ready(SPARE)
    assert answers(server, SPARE) == {200}
    http_client.unload_model(SPARE)
    assert answers(server, SPARE) == {404}
    ready_only = requests.post(
        f"{server.url}/v2/repository/index", json={"ready": True}, timeout=30
    ).json()
    assert {e["name"] for e in ready_only} == {SERVED, GENERATOR}


def test_a_new_version_in_the_store_replaces_the_served_one_without_a_restart(
    server, store, http_client
):
    (before,) = served_tag(server, SERVED)
    # The same files stored again as a new version (BentoML writes the copy's model.yaml).
    script = (
        "import shutil, tempfile; from pathlib import Path; from models import store\n"
        f"tag, path, meta = store.resolve({SERVED!r})\n"
        "folder = Path(tempfile.mkdtemp()) / 'model'\n"
        "shutil.copytree(path, folder, ignore=shutil.ignore_patterns('model.yaml'))\n"
        f"print(store.save({SERVED!r}, 'swapped0001', folder, meta)['tag'])\n"
    )
    saved = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        check=True,
        text=True,
        capture_output=True,
        env={**os.environ, "BENTOML_HOME": str(store)},
    )
    new_tag = saved.stdout.strip().splitlines()[-1]
    assert new_tag == f"{SERVED}:swapped0001" != before
    assert served_tag(server, SERVED) == {before}  # storing alone changes nothing
    http_client.load_model(SERVED)
    assert served_tag(server, SERVED) == {new_tag}
    assert answers(server, SERVED) == {200}


def test_a_respawned_worker_serves_what_the_others_serve(server, http_client):
    http_client.load_model(SPARE)
    http_client.unload_model(GENERATOR)
    victim = worker_processes(server.process.pid)[0]
    os.kill(victim.pid, signal.SIGKILL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        workers = worker_processes(server.process.pid)
        if len(workers) == 2 and victim.pid not in {w.pid for w in workers}:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"the killed worker was not replaced: {server.log()[-3000:]}")
    # Once the new worker answers, every worker serves SPARE and none serves GENERATOR.
    deadline = time.monotonic() + 120
    while answers(server, SERVED) != {200} and time.monotonic() < deadline:
        time.sleep(1)
    assert answers(server, SPARE) == {200}
    gone = {
        requests.post(
            f"{server.url}/generate",
            headers={"Connection": "close"},
            timeout=30,
            json={"inputs": "Hi", "model": GENERATOR},
        ).status_code
        for _ in range(TRIES)
    }
    assert gone == {404}
    http_client.load_model(GENERATOR)


@pytest.mark.parametrize(
    ("call", "status", "message"),
    [
        (lambda c: c.load_model("no-such-model"), "404", "no-such-model"),
        (lambda c: c.load_model("..%2Fetc"), "404", ""),
        (lambda c: c.unload_model("no-such-model"), "404", "not served"),
        (lambda c: c.load_model(SPARE, config='{"backend": "python"}'), "422", "config"),
    ],
)
def test_refusals_name_what_is_wrong(http_client, call, status, message):
    with pytest.raises(InferenceServerException) as refused:
        call(http_client)
    assert refused.value.status() == status and message in refused.value.message()


def test_grpc_refusals_carry_the_status(grpc_client):
    with pytest.raises(InferenceServerException) as refused:
        grpc_client.load_model("no-such-model")
    assert refused.value.status() == "StatusCode.NOT_FOUND"
