"""The peers: other serving frameworks on the same model, started by the suite (issue #21).

Each peer is a small server module in `loadtests/bench/peers/` that serves the stored ONNX
classification folder with ONNX Runtime + `tokenizers` (`peers/ort_classifier.py`, the same
model code for all of them) as `POST /classify` (`{"inputs": ...}`, our answer shape) and
`GET /health` (BentoML: its own `/readyz`). Each runs in a venv of its own under
`.cache/bench/peers/<peer>`, made from its lock (`requirements/peers/<peer>.txt`, hashes, no
resolving: `pip install --require-hashes --no-deps`) on first use and reused while the lock is
unchanged; the project's environment is never touched. The suite drives them with its own load
generator, like ours. Ray Serve runs in a network namespace of its own (`unshare -rn`, loopback
up), which the load generator enters (`nsenter --net`).

    python -m loadtests.bench.peer_servers --peer litserve --model DIR   # serve one, for a look
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PEERS_DIR = ROOT / "loadtests" / "bench" / "peers"
LOCKS = ROOT / "requirements" / "peers"
VENVS = ROOT / ".cache" / "bench" / "peers"
# The peers' venvs are made with this Python (the locks are compiled for 3.11).
PEER_PYTHON = os.environ.get("PEER_PYTHON") or shutil.which("python3.11") or sys.executable


@dataclass(frozen=True)
class Peer:
    name: str  # its lock's and venv's name, and its results key: `{model}/peer-<name>/c{c}`
    title: str
    module: str  # the server module's file in `peers/`
    batching: bool  # counts as a batching peer in the goals
    # Runs in a network namespace of its own (loopback only) that the load generator enters:
    # Ray's core binds every interface, whatever the driver asks of Serve's proxy.
    private_network: bool = False
    health: str = "/health"  # the GET route that answers 200 once it serves

    @property
    def lock(self) -> Path:
        return LOCKS / f"{self.name}.txt"

    @property
    def venv(self) -> Path:
        return VENVS / self.name


PEERS = (
    Peer(
        "bentoml-batchable",
        "minimal BentoML, batchable API",
        "bentoml_batchable.py",
        True,
        health="/readyz",
    ),
    Peer("pytriton", "PyTriton (Triton's dynamic batcher)", "pytriton_batching.py", True),
    Peer("ray-serve", "Ray Serve, @serve.batch", "ray_serve_batch.py", True, True),
    Peer("litserve", "LitServe, batching", "litserve_batching.py", True),
    Peer("fastapi-ort", "FastAPI + ORT, no batching", "fastapi_ort.py", False),
)
BY_NAME = {peer.name: peer for peer in PEERS}


def lock_digest(peer: Peer) -> str:
    """What the venv is made from: the lock's pins and hashes (its comments left out)."""
    lines = [line.split("#", 1)[0].rstrip() for line in peer.lock.read_text().splitlines()]
    return hashlib.sha256("\n".join(line for line in lines if line).encode()).hexdigest()


def ensure_venv(peer: Peer) -> Path:
    """The peer's venv, made from its lock when missing or when the lock changed; its Python."""
    python = peer.venv / "bin" / "python"
    stamp = peer.venv / ".lock-sha256"
    digest = lock_digest(peer)
    if python.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return python
    print(f"making the {peer.name} venv from {peer.lock.relative_to(ROOT)} ...", flush=True)
    shutil.rmtree(peer.venv, ignore_errors=True)
    peer.venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([PEER_PYTHON, "-m", "venv", str(peer.venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--require-hashes", "--no-deps"]
        + ["-r", str(peer.lock)],
        check=True,
        # The machine's pip constraints name packages a peer may not have (no hashes there).
        env={**os.environ, "PIP_CONSTRAINT": ""},
    )
    stamp.write_text(digest + "\n")
    return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def netns_prefix(pid: int) -> list[str]:
    """The command prefix that runs a program in the network namespace of process `pid`
    (started by `unshare -rn`: its user namespace too, keeping our credentials, so the same
    works without root where unprivileged user namespaces are allowed)."""
    return [
        "nsenter",
        f"--user=/proc/{pid}/ns/user",
        f"--net=/proc/{pid}/ns/net",
        "--preserve-credentials",
    ]


@dataclass
class PeerServer:
    peer: Peer
    process: subprocess.Popen
    url: str
    log_path: Path

    @property
    def prefix(self) -> list[str]:
        """What the load generator's command starts with to reach this server."""
        return netns_prefix(self.process.pid) if self.peer.private_network else []

    def stop(self) -> None:
        """SIGTERM to the server, then to whatever of its session is left (LitServe's
        inference worker and resource tracker outlive their parent), SIGKILL after a grace."""
        from loadtests.server_process import stop_process

        stop_process(self.process)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)  # its own session: started with setsid
            except ProcessLookupError:
                return
            time.sleep(2.0)


def _answers(url: str, prefix: list[str]) -> bool:
    if not prefix:
        import requests

        try:
            return requests.get(url, timeout=2).status_code == 200
        except requests.RequestException:
            return False
    code = f"import urllib.request as u; u.urlopen({url!r}, timeout=2).read()"
    done = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True)
    return done.returncode == 0


def start_peer(peer: Peer, model_dir: Path, log_path: Path, timeout: float = 300.0) -> PeerServer:
    """Start `peer` on a free port serving `model_dir`; wait until its health route answers."""
    python = ensure_venv(peer)
    port = free_port()
    command = [str(python), str(PEERS_DIR / peer.module), "--model", str(model_dir)]
    command += ["--port", str(port)]
    if peer.private_network:
        # A new network namespace with only loopback, up: nothing Ray binds is reachable from
        # outside it. `-r` maps the caller to root in a user namespace where that is needed.
        command = ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *command]
    (VENVS / "home").mkdir(parents=True, exist_ok=True)
    # The venv's Python's own libpython first: PyTriton's Python backend stub links
    # `libpython3.11.so.1.0` and would otherwise load the system's (Debian 3.11.2) under the
    # venv's stdlib (3.11.7): `'_thread.RLock' object has no attribute '_recursion_count'`.
    libdir = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    log = log_path.open("w")
    process = subprocess.Popen(
        command,
        cwd=PEERS_DIR,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={
            # The peer's venv only: nothing of the project's environment.
            "PATH": f"{python.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(VENVS / "home"),  # what a peer writes there (Ray: ~/.ray)
            "PYTHONPATH": str(PEERS_DIR),
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "BENTOML_HOME": str(VENVS / "bentoml-home"),
            "BENTOML_DO_NOT_TRACK": "True",
            "RAY_USAGE_STATS_ENABLED": "0",
            "LITSERVE_DISABLE_TELEMETRY": "1",
            "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
            "LD_LIBRARY_PATH": libdir,
        },
    )
    server = PeerServer(peer, process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{peer.name} exited: {log_path.read_text()[-3000:]}")
        if _answers(server.url + peer.health, server.prefix):
            return server
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"{peer.name} not ready after {timeout}s: {log_path.read_text()[-3000:]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", choices=sorted(BY_NAME), required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--venv-only", action="store_true", help="make its venv and stop")
    args = parser.parse_args(argv)
    peer = BY_NAME[args.peer]
    if args.venv_only:
        print(ensure_venv(peer))
        return
    server = start_peer(peer, args.model, VENVS / f"{peer.name}.log")
    print(f"{peer.name} at {server.url} (pid {server.process.pid}); Ctrl-C stops it", flush=True)
    try:
        server.process.wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
