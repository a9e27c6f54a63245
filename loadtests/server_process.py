"""Start the real service (`bentoml serve`) as a subprocess on free ports: for integration
tests, load tests and benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_store(bentoml_home: Path, profile: str = "tiny") -> None:
    subprocess.run(
        _store_build_command(profile),
        cwd=ROOT,
        env=_store_build_env(bentoml_home),
        check=True,
        capture_output=True,
        timeout=600,
    )


@dataclass
class StoreBuild:
    """`models build` under way in the background (`start_store_build`)."""

    process: subprocess.Popen
    log_path: Path

    def wait(self, timeout: float = 600) -> None:
        """Block until the build ends; raise with its log's tail if it failed."""
        if self.process.wait(timeout) != 0:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"models build failed ({self.process.returncode}):\n{tail}")


def start_store_build(bentoml_home: Path, profile: str, log_path: Path) -> StoreBuild:
    """`build_store` without waiting: a build is one busy core, so a caller with other work of
    the same kind (the benchmark's exports) runs both side by side; output goes to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            _store_build_command(profile),
            cwd=ROOT,
            env=_store_build_env(bentoml_home),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return StoreBuild(process, log_path)


def _store_build_command(profile: str) -> list[str]:
    return [sys.executable, "-m", "models", "build", "--profile", profile]


def _store_build_env(bentoml_home: Path) -> dict[str, str]:
    return {**os.environ, "BENTOML_HOME": str(bentoml_home), "HF_HUB_OFFLINE": "1"}


def private_home(shared: Path, home: Path) -> Path:
    """A BentoML home of the server's own that shares the model store.

    BentoML empties `$BENTOML_HOME/prometheus_multiproc_dir` whenever a server starts, so two
    servers on one home would wipe each other's metrics."""
    home.mkdir(parents=True, exist_ok=True)
    link = home / "models"
    if not link.exists():
        (Path(shared) / "models").mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path(shared).resolve() / "models", target_is_directory=True)
    return home


@dataclass
class LiveServer:
    process: subprocess.Popen
    url: str
    grpc_address: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM (the server drains in-flight requests), then SIGKILL after `grace_s`."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()


class PortCollision(RuntimeError):
    """The server lost a race for a port between choosing it and binding it."""


def start_server(
    bentoml_home: Path,
    log_path: Path,
    extra_env: dict[str, str] | None = None,
    timeout: float = 120.0,
    attempts: int = 3,
    poll_interval: float = 0.25,
) -> LiveServer:
    """Start a server; retry on fresh ports when a port was taken in the meantime.

    Free ports are only free until someone binds them: ours (HTTP, gRPC) and the ones BentoML's
    process manager (circus) picks for its own sockets can collide with another server starting
    at the same moment. Such a start fails fast with "Address already in use", so retrying on new
    ports is cheap and keeps parallel test and load runs reliable."""
    for attempt in range(1, attempts + 1):
        try:
            return _start_once(bentoml_home, log_path, extra_env, timeout, poll_interval)
        except PortCollision:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


def launch_server(
    bentoml_home: Path, log_path: Path, extra_env: dict[str, str] | None = None
) -> LiveServer:
    """`bentoml serve` of the tiny profile on free ports, returned at once (not yet ready)."""
    port, grpc_port = free_port(), free_port()
    env = {
        **os.environ,
        "BENTOML_HOME": str(private_home(bentoml_home, log_path.parent / f"home-{port}")),
        "HF_HUB_OFFLINE": "1",
        "PROFILE": "tiny",
        "PORT": str(port),
        "GRPC_PORT": str(grpc_port),
        "BENTOML_DO_NOT_TRACK": "True",
        **(extra_env or {}),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bentoml",
            "serve",
            "service.service:NLPService",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return LiveServer(process, f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}", log_path)


def _start_once(
    bentoml_home: Path,
    log_path: Path,
    extra_env: dict[str, str] | None,
    timeout: float,
    poll_interval: float = 0.25,
) -> LiveServer:
    server = launch_server(bentoml_home, log_path, extra_env)
    process = server.process
    if wait_until_ok(f"{server.url}/readyz", process, timeout, poll_interval):
        return server
    if process.poll() is not None:
        log = server.log()
        error = PortCollision if "Address already in use" in log else RuntimeError
        raise error(f"server exited with {process.returncode}:\n{log[-4000:]}")
    server.stop()
    raise RuntimeError(f"server not ready after {timeout}s:\n{server.log()[-4000:]}")


def wait_until_ok(
    url: str, process: subprocess.Popen, timeout: float, poll_interval: float = 0.25
) -> bool:
    """Poll `url` until it answers 200 (True), or `process` exits or `timeout` passes (False).
    Connection errors only mean the server is not listening yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(poll_interval)
    return False
