"""The server a user writes by hand: FastAPI + uvicorn + a `transformers` pipeline, nothing else.

The same routes and payloads as ours (`/classify`, `/answer`, `/embed`), a plain `def` handler
(FastAPI runs it in its thread pool), one pipeline call per request, PyTorch on CPU. It is the
baseline the served numbers are divided by, so it is kept as plain as the tutorials make it.

    python -m loadtests.bench.fastapi_baseline --task text-classification --model DIR --port 8000
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def create_app(task: str, model: str) -> Any:
    from fastapi import FastAPI

    from loadtests.bench.in_process import torch_pipeline

    pipe = torch_pipeline(task, Path(model))
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/classify")
    def classify(body: dict) -> Any:
        return pipe(body["inputs"])

    @app.post("/answer")
    def answer(body: dict) -> Any:
        return pipe((body["inputs"]["question"], body["inputs"]["context"]))

    @app.post("/embed")
    def embed(body: dict) -> Any:
        return pipe(body["inputs"]).tolist()

    return app


@dataclass
class BaselineServer:
    process: subprocess.Popen
    url: str

    def stop(self) -> None:
        from loadtests.server_process import stop_process

        stop_process(self.process)


def start_baseline(
    task: str, model: Path, log_path: Path, timeout: float = 180.0
) -> BaselineServer:
    """Start the baseline on a free port and wait until it answers."""
    from loadtests.server_process import wait_until_ok

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = log_path.open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loadtests.bench.fastapi_baseline",
            "--task",
            task,
            "--model",
            str(model),
            "--port",
            str(port),
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
    )
    server = BaselineServer(process, f"http://127.0.0.1:{port}")
    if wait_until_ok(f"{server.url}/health", process, timeout):
        return server
    if process.poll() is not None:
        raise RuntimeError(f"baseline exited: {log_path.read_text()[-3000:]}")
    server.stop()
    raise RuntimeError(f"baseline not ready after {timeout}s: {log_path.read_text()[-3000:]}")


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    uvicorn.run(
        create_app(args.task, args.model),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
