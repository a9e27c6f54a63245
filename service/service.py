"""The BentoML service: load the configured models at start-up, mount the protocol adapters.

`bentoml serve service.service:NLPService` (what `make serve` runs). The class stays small: its
`__init__` loads and warms every model into one data plane, readiness follows that plane, and the
routes live in `service.http` (HF task payloads, OpenAI, KServe v2 REST) as a mounted FastAPI
app, and the KServe v2 gRPC server (`service.kserve`) starts and stops with each worker.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import bentoml

from service.config import SettingsError, load_settings
from service.dataplane import DataPlane
from service.http.app import create_app
from service.http.json_not_found import JsonNotFoundMiddleware
from service.kserve.grpc_server import GrpcServer, start_grpc_server, stop_grpc_server
from service.model_control import ModelControl, SharedServedSet, prepare_shared_state
from service.model_repository import load_records
from service.runtime.errors import ModelLoadError
from service.startup_guard import mark_worker_ready, watch_worker_starts

try:
    settings = load_settings()
except SettingsError as err:
    # Start-up stops here, naming the setting, instead of a traceback from a worker.
    raise SystemExit(f"nlp-serving cannot start: {err}") from None
app = create_app(settings)
log = logging.getLogger("service")


def _imported_by_bentoml_serve() -> bool:
    """True in the `bentoml serve` process itself (not in its workers, nor in other imports)."""
    return sys.argv[1:2] == ["serve"] and "bentoml" in Path(sys.argv[0]).parts[-2:]


if _imported_by_bentoml_serve():
    # Workers inherit this environment. glibc gives each thread that allocates (ORT's pool, the
    # batchers' threads, gRPC's) an arena of its own, up to 8 per core, each keeping freed memory:
    # worker RSS then creeps up for minutes under steady load. Two arenas keep it flat
    # (loadtests/results/soak-2026-11-27). Setting `server.malloc_arena_max` (the operator's own
    # MALLOC_ARENA_MAX wins, through the setting's alias).
    if settings.server.malloc_arena_max:
        os.environ["MALLOC_ARENA_MAX"] = str(settings.server.malloc_arena_max)
    # Check the model files before any worker starts: a worker whose models fail verification
    # would be respawned forever by BentoML's process manager, and the server would never exit.
    try:
        load_records(settings)
    except ModelLoadError as err:
        raise SystemExit(f"nlp-serving cannot start: {err.message}") from None
    # Any other start-up failure happens in the workers: stop after a bounded number of them
    # (service/startup_guard.py) instead of being respawned forever.
    watch_worker_starts()
    # Where workers share the set of served models the repository extension changes.
    prepare_shared_state()


@bentoml.service(
    name="nlp-serving",
    workers=settings.server.workers,
    http={"host": settings.server.host, "port": settings.server.port},
    traffic={"timeout": 300},
    logging={"access": {"enabled": False}},
    # BentoML's OpenTelemetry middleware opens spans for every request even when nothing exports
    # them (≈12 % of the event loop's time, loadtests/bench/levers.md); excluding every URL
    # turns it into a pass-through. Our stage spans come from service/tracing.py.
    **({} if settings.server.bentoml_request_spans else {"tracing": {"excluded_urls": [".*"]}}),
)
@bentoml.asgi_app(app, path="/")
class NLPService:
    def __init__(self) -> None:
        self.plane = DataPlane(settings)
        self.control = ModelControl(self.plane, SharedServedSet.from_environment())
        configured = load_records(settings)
        records = self.control.startup_records(configured)
        # A worker respawned after models were unloaded serves what the others serve now.
        self.plane.load(records, configured_defaults=records is configured)
        app.state.plane = self.plane
        app.state.control = self.control
        self.grpc: GrpcServer | None = None
        mark_worker_ready()

    def __is_ready__(self) -> bool:
        return self.plane.ready

    @bentoml.on_startup
    async def start_grpc(self) -> None:
        # In the worker's event loop, so gRPC calls share this worker's models and batchers.
        self.grpc = await start_grpc_server(self.plane, settings, self.control)
        self.control.start()

    @bentoml.on_shutdown
    async def close(self) -> None:
        await stop_grpc_server(self.grpc)
        await self.control.stop()
        self.plane.close()


# Around BentoML's own router: its plain-text 404 for unmatched paths becomes our JSON error.
NLPService.add_asgi_middleware(JsonNotFoundMiddleware)
