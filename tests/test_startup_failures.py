"""A server whose workers cannot start stops, non-zero, after a bounded number of tries.

BentoML's supervisor respawns a worker that exits, forever; service/startup_guard.py counts the
workers that exit before they are ready and stops the server with its exit code. These run the
real `bentoml serve` on a store whose model file is corrupt but whose hashes are not checked
(so the failure happens in the workers, not in the serve process's pre-check)."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import requests

from loadtests.server_process import start_server
from service.startup_guard import EXIT_CODE
from tests.test_faults import CLASSIFIER, classify, spawn

# Three failed starts of a worker that fails at once take a few seconds each here (import,
# session creation), but two workers starting side by side on a busy 2-core machine took more
# than 120 s once (a CI run sharing the CPUs): the bound only needs to be finite.
EXIT_WITHIN_S = 300


def _corrupt_store(tiny_store: Path, home: Path) -> Path:
    """A store with the classifier only, its ONNX graph replaced by bytes ORT cannot parse."""
    shutil.copytree(tiny_store / "models" / CLASSIFIER, home / "models" / CLASSIFIER)
    (version,) = [p for p in (home / "models" / CLASSIFIER).iterdir() if p.is_dir()]
    (version / "model.onnx").write_bytes(b"not an onnx graph" * 64)
    return home


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_that_cannot_load_their_models_stop_the_server_non_zero(
    tiny_store, tmp_path, workers
):
    home = _corrupt_store(tiny_store, tmp_path / "home")
    server = spawn(
        home,
        tmp_path / "server.log",
        {
            "NLP_MODELS_SERVE": CLASSIFIER,
            "NLP_MODELS_VERIFY_HASHES": "false",
            "NLP_SERVER_WORKERS": str(workers),
            "NLP_MAX_START_FAILURES": "3",
        },
    )
    started = time.monotonic()
    try:
        code = server.process.wait(timeout=EXIT_WITHIN_S)
    except Exception:
        pytest.fail(f"still running after {EXIT_WITHIN_S}s: {server.log()[-3000:]}")
    finally:
        if server.process.poll() is None:
            os.killpg(server.process.pid, signal.SIGKILL)
    log = server.log()
    assert code == EXIT_CODE, log[-3000:]
    assert "exited before it was ready" in log and "nlp-serving cannot start" in log
    assert log.count("exited before it was ready") <= 3 + workers
    print(f"{workers} worker(s): exited {code} after {time.monotonic() - started:.1f}s")


def test_a_worker_killed_after_start_up_is_not_a_failed_start(tiny_store, tmp_path):
    """Start-up failures only: a ready worker that dies later is replaced as before."""
    from loadtests.worker_memory import worker_processes

    server = start_server(
        tiny_store,
        tmp_path / "server.log",
        {"NLP_MODELS_SERVE": CLASSIFIER, "NLP_MAX_START_FAILURES": "1"},
    )
    try:
        for _ in range(2):
            (worker,) = worker_processes(server.process.pid)
            os.kill(worker.pid, signal.SIGKILL)
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                assert server.process.poll() is None, server.log()[-3000:]
                try:
                    if classify(server.url, timeout=5) == 200:
                        break
                except requests.RequestException:
                    pass
                time.sleep(0.5)
            else:
                pytest.fail("no replacement worker: " + server.log()[-3000:])
        assert "exited before it was ready" not in server.log()
    finally:
        server.stop()
