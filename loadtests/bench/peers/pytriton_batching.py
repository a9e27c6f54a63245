"""PyTriton: Triton Inference Server's dynamic batcher in front of a Python function.

PyTriton's quick start as written: `Triton().bind(...)` with `ModelConfig(batching=True,
max_batch_size=32)` (the dynamic batcher, its default `max_queue_delay_microseconds` 0) and a
`@batch` inference function that runs ORT once per batch. Triton speaks KServe v2, not our
body, so a thin aiohttp adapter (aiohttp ships with PyTriton's client) takes `POST /classify`
`{"inputs": "..."}`, calls Triton's HTTP endpoint on loopback with one text and answers our
`[[{"label", "score"}]]`; `GET /health` asks Triton's `/v2/health/ready`.

    python pytriton_batching.py --model DIR --port 8000
"""

from __future__ import annotations

import argparse
import socket

import numpy as np
from aiohttp import ClientSession, web
from ort_classifier import OrtClassifier, as_list
from pytriton.decorators import batch
from pytriton.model_config import ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

MODEL = "classifier"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_triton(model_dir: str) -> tuple[Triton, int]:
    model = OrtClassifier(model_dir)

    @batch
    def infer(text: np.ndarray) -> dict[str, np.ndarray]:
        results = model.predict([row[0].decode() for row in text])
        return {
            "label": np.array([[r[0]["label"].encode()] for r in results], dtype=np.bytes_),
            "score": np.array([[r[0]["score"]] for r in results], dtype=np.float32),
        }

    http_port = free_port()
    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=http_port,
        allow_grpc=False,
        allow_metrics=False,
    )
    triton = Triton(config=config)
    triton.bind(
        model_name=MODEL,
        infer_func=infer,
        inputs=[Tensor(name="text", dtype=bytes, shape=(1,))],
        outputs=[
            Tensor(name="label", dtype=bytes, shape=(1,)),
            Tensor(name="score", dtype=np.float32, shape=(1,)),
        ],
        config=ModelConfig(batching=True, max_batch_size=32),
    )
    triton.run()  # in the background
    return triton, http_port


def adapter(triton_url: str) -> web.Application:
    infer_url = f"{triton_url}/v2/models/{MODEL}/infer"

    async def start(app: web.Application) -> None:
        app["client"] = ClientSession()

    async def stop(app: web.Application) -> None:
        await app["client"].close()

    async def one(client: ClientSession, text: str) -> list[dict]:
        request = {
            "inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": [text]}]
        }
        async with client.post(infer_url, json=request) as response:
            response.raise_for_status()
            outputs = {o["name"]: o["data"] for o in (await response.json())["outputs"]}
        return [{"label": outputs["label"][0], "score": outputs["score"][0]}]

    async def classify(request: web.Request) -> web.Response:
        body = await request.json()
        client = request.app["client"]
        return web.json_response([await one(client, text) for text in as_list(body["inputs"])])

    async def health(request: web.Request) -> web.Response:
        async with request.app["client"].get(f"{triton_url}/v2/health/ready") as response:
            return web.json_response(
                {"status": "ok" if response.status == 200 else "starting"}, status=response.status
            )

    app = web.Application()
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.add_routes([web.post("/classify", classify), web.get("/health", health)])
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    triton, http_port = serve_triton(args.model)
    try:
        web.run_app(
            adapter(f"http://127.0.0.1:{http_port}"),
            host="127.0.0.1",
            port=args.port,
            access_log=None,
            print=None,
        )
    finally:
        triton.stop()
