"""Process CPU per request of the HTTP adapter alone: `/embed` through the whole ASGI stack
(middlewares, validation, response model) with a stub data plane, no model.

Run from the root of the tree to measure (each tree imports its own `service`):

    cd /tmp/before && /work/main/.venv/bin/python /path/to/route_cost.py
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

os.environ["HF_HUB_OFFLINE"] = "1"
sys.path.insert(0, os.getcwd())

import httpx  # noqa: E402

from service.config import load_settings  # noqa: E402
from service.http.app import create_app  # noqa: E402

HEADERS = {"content-type": "application/json"}
BODY = json.dumps({"inputs": "A sentence to embed, of a usual length for a query."}).encode()


class _Record:
    untrained = False


class _Served:
    record = _Record()
    name = "stub"


class StubPlane:
    """Answers every embed request at once with a 384-float vector."""

    ready = True

    def shed(self, **_):
        return None

    async def run_batched(self, task, items, model, protocol, **_):
        return [[0.0] * 384 for _ in items]

    def model(self, task, name=None):
        return _Served()


async def cpu_us_per_request(requests: int, warm_up: int = 200) -> float:
    app = create_app(load_settings())
    app.state.plane = StubPlane()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://stub") as client:
        for _ in range(warm_up):
            response = await client.post("/embed", content=BODY, headers=HEADERS)
        assert response.status_code == 200, response.text
        started = time.process_time()
        for _ in range(requests):
            await client.post("/embed", content=BODY, headers=HEADERS)
        return (time.process_time() - started) / requests * 1e6


if __name__ == "__main__":
    print(f"{os.getcwd()}: {asyncio.run(cpu_us_per_request(3000)):.1f} us/request")
