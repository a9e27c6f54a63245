"""The FastAPI app that BentoML mounts: every HTTP route of the contract except BentoML's own
(`/metrics`, `/livez`, `/readyz`, `/docs.json`, the Swagger UI at `/`)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service.api_keys import ApiKeys
from service.config import Settings
from service.http.api_key_auth import ApiKeyMiddleware
from service.http.body_limit import BodyLimitMiddleware
from service.http.disconnect import CancelOnDisconnectMiddleware
from service.http.early_shedding import EarlySheddingMiddleware
from service.http.errors import install_error_handlers
from service.http.openai_embeddings import router as openai_embeddings_router
from service.http.openai_routes import router as openai_router
from service.http.request_deadline import RequestDeadlineMiddleware
from service.http.task_routes import router as task_router
from service.http.task_routes import v1_router as task_v1_router
from service.http.tokenizer_routes import router as tokenizer_router
from service.kserve.generate_routes import router as kserve_generate_router
from service.kserve.repository_routes import router as kserve_repository_router
from service.kserve.rest_routes import router as kserve_router
from service.request_logging import install_request_logging


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(title="nlp-serving", version="0.1.0")
    app.state.settings = settings
    install_error_handlers(app)
    # Innermost: a request whose client went away stops its work (and is counted cancelled).
    app.add_middleware(CancelOnDisconnectMiddleware)
    # Added before request logging, so that logging wraps it and a 413 is logged too.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.server.max_body_bytes)
    app.add_middleware(
        RequestDeadlineMiddleware, request_timeout_s=settings.limits.request_timeout_s
    )
    # Outside the two above: a saturated model's requests are refused before anything is read.
    app.add_middleware(EarlySheddingMiddleware)
    # Outside shedding: a caller without a key gets 401/403, not a 429 from a busy model.
    app.add_middleware(ApiKeyMiddleware, keys=ApiKeys.from_settings(settings.server))
    if settings.server.cors_origins:  # browsers' preflight answered before keys are checked
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.server.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID", "Retry-After", "Warning"],
        )
    install_request_logging(app, settings.server.log_level)
    app.include_router(task_router)
    app.include_router(task_v1_router)
    app.include_router(tokenizer_router)
    app.include_router(openai_router)
    app.include_router(openai_embeddings_router)
    app.include_router(kserve_router)
    app.include_router(kserve_generate_router)
    app.include_router(kserve_repository_router)
    return app
