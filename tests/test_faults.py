"""Faults, against real `bentoml serve` processes: broken model files stop start-up, readiness
waits for every model, a killed worker is replaced while the others keep answering, SIGTERM
drains the requests in flight."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from loadtests.server_process import ROOT, launch_server, start_server
from loadtests.worker_memory import worker_processes

CLASSIFIER = "tiny-bert-classifier"


# `bentoml serve` on free ports, returned at once (start-up is what these tests watch).
spawn = launch_server


def classify(url: str, text: str = "A fine film.", timeout: float = 30) -> int:
    # A new connection per request: a failure is then a request the server lost, not a
    # pooled connection to a process that is gone.
    response = requests.post(
        f"{url}/classify", json={"inputs": text}, headers={"Connection": "close"}, timeout=timeout
    )
    return response.status_code


# --- broken model files -----------------------------------------------------------------------


def _one_model_store(tiny_store: Path, home: Path) -> Path:
    """A private store holding a copy of the classifier only: its files can be broken."""
    shutil.copytree(tiny_store / "models" / CLASSIFIER, home / "models" / CLASSIFIER)
    (version,) = [p for p in (home / "models" / CLASSIFIER).iterdir() if p.is_dir()]
    return version


def _missing(folder: Path) -> None:
    (folder / "model.onnx").unlink()


def _truncated(folder: Path) -> None:
    path = folder / "model.onnx"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _tampered(folder: Path) -> None:
    # Same size, one byte changed inside the vocabulary: only the hash can tell.
    path = folder / "vocab.txt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


BREAKAGES = {
    "missing": (_missing, "model.onnx", "is missing"),
    "truncated": (_truncated, "model.onnx", "does not match manifest.json"),
    "tampered": (_tampered, "vocab.txt", "does not match manifest.json"),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_broken_model_file_is_refused_naming_model_and_file(tiny_store, tmp_path, breakage):
    """Every kind of breakage, through the start-up check the server runs (in a process of its
    own: BentoML fixes its store location on first import)."""
    home = tmp_path / "home"
    folder = _one_model_store(tiny_store, home)
    breaker, file, reason = BREAKAGES[breakage]
    breaker(folder)
    env = {**os.environ, "BENTOML_HOME": str(home), "NLP_MODELS_SERVE": CLASSIFIER}
    check = (
        "from service.config import load_settings\n"
        "from service.model_repository import load_records\n"
        "load_records(load_settings())\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", check],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("service.runtime.errors.ModelLoadError: "), run.stderr[-2000:]
    assert f"model {CLASSIFIER} (" in last and f"file {file} " in last, last
    assert reason in last, last


def test_tampered_model_file_stops_server_start_up(tiny_store, tmp_path):
    """The real server: exits non-zero, its log naming the model and the file, never ready."""
    home = tmp_path / "home"
    _tampered(_one_model_store(tiny_store, home))
    server = spawn(home, tmp_path / "server.log", {"NLP_MODELS_SERVE": CLASSIFIER})
    try:
        returncode = server.process.wait(timeout=90)
    except subprocess.TimeoutExpired:
        server.stop()
        pytest.fail(f"server with a tampered model kept running:\n{server.log()[-3000:]}")
    log = server.log()
    assert returncode != 0
    assert "nlp-serving cannot start: model tiny-bert-classifier (" in log, log[-3000:]
    assert "file vocab.txt " in log and "does not match manifest.json" in log, log[-3000:]
    assert "entry_service" not in log, "a worker was started"


# --- readiness ----------------------------------------------------------------------------------


def test_readyz_waits_until_every_model_is_loaded_and_warmed(tiny_store, tmp_path):
    """Poll /readyz from the first moment: it is not 200 before the log has reported every
    model loaded (logged after its warm-up), and every task answers as soon as it is."""
    server = spawn(tiny_store, tmp_path / "server.log")
    not_ready = 0
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert server.process.poll() is None, server.log()[-3000:]
            try:
                if requests.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            not_ready += 1
            time.sleep(0.05)
        else:
            pytest.fail("never ready")
        loaded = server.log().count("loaded tiny-")
        models = requests.get(f"{server.url}/models", timeout=10).json()
        assert not_ready > 0, "ready at the very first poll: nothing was observed"
        assert loaded == len(models) >= 8, (loaded, len(models))
        assert classify(server.url, timeout=5) == 200
        body = {"inputs": "Hello", "parameters": {"max_new_tokens": 2}}
        assert requests.post(f"{server.url}/generate", json=body, timeout=5).status_code == 200
    finally:
        server.stop()


# --- a worker killed under load -------------------------------------------------------------


def test_killed_worker_loses_only_its_requests_and_is_replaced(tiny_store, tmp_path):
    server = start_server(tiny_store, tmp_path / "server.log", {"NLP_SERVER_WORKERS": "2"})
    clients = 6
    outcomes: list[tuple[float, int | str]] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                status: int | str = classify(server.url)
            except requests.RequestException as err:
                status = type(err).__name__
            outcomes.append((time.monotonic(), status))

    try:
        workers = worker_processes(server.process.pid)
        assert len(workers) == 2
        with ThreadPoolExecutor(clients) as pool:
            for _ in range(clients):
                pool.submit(load)
            time.sleep(3)
            victim = workers[0]
            victim.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            replaced, replaced_at = None, killed_at
            while time.monotonic() < killed_at + 90 and replaced is None:
                pids = {w.pid for w in worker_processes(server.process.pid)}
                if len(pids) == 2 and victim.pid not in pids:
                    replaced, replaced_at = pids - {workers[1].pid}, time.monotonic()
                time.sleep(0.5)
            time.sleep(3)
            stop.set()
        assert replaced, "the killed worker was not restarted"
        # Lost: the connection broke (or a 5xx). A 429 is not lost: the surviving worker may
        # shed load while it carries all of it.
        lost = [o for o in outcomes if not isinstance(o[1], int) or o[1] >= 500]
        print(
            f"worker kill: {len(outcomes)} requests, lost {[s for _, s in lost]}, "
            f"429: {sum(1 for o in outcomes if o[1] == 429)}, "
            f"replaced in {replaced_at - killed_at:.1f}s"
        )
        assert {s for _, s in outcomes if isinstance(s, int)} <= {200, 429}
        after = [o for o in outcomes if o[0] > killed_at + 1]
        # Each client holds one request at a time: at most `clients` were on the victim.
        assert len(lost) <= clients, lost
        assert all(status == 200 for _, status in after[-20:]), after[-20:]
        assert sum(1 for t, s in outcomes if s == 200 and killed_at < t < killed_at + 5) > 0, (
            "the surviving worker stopped answering"
        )
        assert server.process.poll() is None
        # The replacement loaded the models and serves: every worker answers /readyz.
        assert requests.get(f"{server.url}/readyz", timeout=10).status_code == 200
    finally:
        stop.set()
        server.stop()


# --- SIGTERM drains -----------------------------------------------------------------------------


def streams_in_flight(url: str, count: int, pool: ThreadPoolExecutor) -> list[Future]:
    """`count` long TGI generation streams, returned once every one has sent its first event
    (all are answering: in flight). Each future gives (status, events)."""
    body = {
        "inputs": "Once upon a time",
        "model": "tiny-gpt2",
        "stream": True,
        "parameters": {"max_new_tokens": 200},
    }
    first_events = threading.Barrier(count + 1)

    def generate() -> tuple[int, list[dict]]:
        with requests.post(f"{url}/generate", json=body, stream=True, timeout=120) as response:
            events = []
            for line in response.iter_lines():
                if line.startswith(b"data:"):
                    events.append(json.loads(line[5:]))
                    if len(events) == 1:
                        first_events.wait(timeout=60)
            return response.status_code, events

    futures = [pool.submit(generate) for _ in range(count)]
    first_events.wait(timeout=60)
    return futures


def test_sigterm_drains_in_flight_requests_and_refuses_new_ones(tiny_store, tmp_path):
    """Streams that have started answering when SIGTERM arrives run to their last token; a new
    connection is refused; the server exits 0."""
    server = start_server(tiny_store, tmp_path / "server.log")
    streams = 8
    try:
        with ThreadPoolExecutor(streams) as pool:
            futures = streams_in_flight(server.url, streams, pool)
            server.process.send_signal(signal.SIGTERM)
            terminated = time.monotonic()
            in_flight = sum(1 for f in futures if not f.done())
            time.sleep(1.0)
            refused = False
            try:
                classify(server.url, timeout=5)
            except requests.ConnectionError:
                refused = True
            results = [f.result() for f in futures]
        assert in_flight == streams
        assert [status for status, _ in results] == [200] * streams
        for _, events in results:
            assert events and events[-1]["generated_text"] is not None, events[-1:]
        assert refused, "a new connection was accepted after SIGTERM"
        assert server.process.wait(timeout=60) == 0, server.log()[-3000:]
        print(
            f"SIGTERM: {in_flight} streams in flight, all finished; "
            f"exited {time.monotonic() - terminated:.1f}s after SIGTERM"
        )
    finally:
        server.stop()
