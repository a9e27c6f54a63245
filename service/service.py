"""The BentoML service: load the configured models at start-up, mount the protocol adapters.

`bentoml serve service.service:NLPService` (what `make serve` runs). The class stays small: its
`__init__` loads and warms every model into one data plane, readiness follows that plane, and the
routes live in `service.http` (HF task payloads, OpenAI, KServe v2 REST) as a mounted FastAPI
app, and the KServe v2 gRPC server (`service.kserve`) starts and stops with each worker.
"""

from __future__ import annotations

import logging

import bentoml

from service.config import load_settings
from service.dataplane import DataPlane
from service.http.app import create_app
from service.kserve.grpc_server import GrpcServer, start_grpc_server, stop_grpc_server

settings = load_settings()
app = create_app(settings)
log = logging.getLogger("service")


@bentoml.service(
    name="nlp-serving",
    workers=settings.server.workers,
    http={"host": settings.server.host, "port": settings.server.port},
    traffic={"timeout": 300},
    logging={"access": {"enabled": False}},
)
@bentoml.asgi_app(app, path="/")
class NLPService:
    def __init__(self) -> None:
        self.plane = DataPlane(settings)
        self.plane.load()
        app.state.plane = self.plane
        self.grpc: GrpcServer | None = None

    def __is_ready__(self) -> bool:
        return self.plane.ready

    @bentoml.on_startup
    async def start_grpc(self) -> None:
        # In the worker's event loop, so gRPC calls share this worker's models and batchers.
        self.grpc = await start_grpc_server(self.plane, settings)

    @bentoml.on_shutdown
    async def close(self) -> None:
        await stop_grpc_server(self.grpc)
        self.plane.close()
