"""Ray Serve with `@serve.batch`: one replica, requests gathered into batches of up to 32.

Ray Serve's batching tutorial as written: an async `__call__` awaits a `@serve.batch` method
(max_batch_size 32, Ray's default wait `batch_wait_timeout_s`), the batch runs ORT once. Ray's
core (GCS, raylet, object manager) binds every interface: the suite runs this in a network
namespace of its own with only loopback up, and binds what it can to 127.0.0.1 as well.

    unshare -rn sh -c 'ip link set lo up && exec python ray_serve_batch.py --model DIR --port 8000'
"""

from __future__ import annotations

import argparse
import signal
import threading

import ray
from ort_classifier import OrtClassifier, as_list
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse


@serve.deployment(max_ongoing_requests=64)
class Classifier:
    def __init__(self, model_dir: str) -> None:
        self.model = OrtClassifier(model_dir)

    @serve.batch(max_batch_size=32)
    async def predict(self, texts: list[str]) -> list:
        return self.model.predict(texts)

    async def __call__(self, request: Request) -> JSONResponse:
        if request.url.path.rstrip("/").endswith("/health"):
            return JSONResponse({"status": "ok"})
        body = await request.json()
        texts = as_list(body["inputs"])
        return JSONResponse([await self.predict(text) for text in texts])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    # One application at `/`: `/classify` and `/health` both reach the one replica.
    serve.run(Classifier.bind(args.model), route_prefix="/")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()
