"""The FastAPI app that BentoML mounts: every HTTP route of the contract except BentoML's own
(`/metrics`, `/livez`, `/readyz`, `/docs.json`, the Swagger UI at `/`)."""

from __future__ import annotations

from fastapi import FastAPI

from service.config import Settings
from service.http.body_limit import BodyLimitMiddleware
from service.http.early_shedding import EarlySheddingMiddleware
from service.http.errors import install_error_handlers
from service.http.openai_routes import router as openai_router
from service.http.request_deadline import RequestDeadlineMiddleware
from service.http.task_routes import router as task_router
from service.kserve.rest_routes import router as kserve_router
from service.request_logging import install_request_logging


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(title="nlp-serving", version="0.1.0")
    app.state.settings = settings
    install_error_handlers(app)
    # Added before request logging, so that logging wraps it and a 413 is logged too.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.server.max_body_bytes)
    app.add_middleware(RequestDeadlineMiddleware,
                       request_timeout_s=settings.limits.request_timeout_s)
    # Outside the two above: a saturated model's requests are refused before anything is read.
    app.add_middleware(EarlySheddingMiddleware)
    install_request_logging(app)
    app.include_router(task_router)
    app.include_router(openai_router)
    app.include_router(kserve_router)
    return app
