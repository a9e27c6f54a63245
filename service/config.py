"""Serving configuration: one YAML file, every key overridable by an environment variable.

`service/config.yaml` holds the defaults; `NLP_CONFIG` points at another file. An environment
variable `NLP_<SECTION>_<KEY>` (upper case) overrides `<section>.<key>`, e.g.
`NLP_BATCHING_MAX_BATCH_SIZE=16`; the common ones have short names too (`PROFILE`, `PORT`,
`GRPC_PORT`, `HOST`), matching the Makefile variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CONFIG = Path(__file__).with_name("config.yaml")

# Short environment names kept for the Makefile and container conventions.
ALIASES = {
    "PROFILE": ("models", "profile"),
    "HOST": ("server", "host"),
    "PORT": ("server", "port"),
    "GRPC_PORT": ("server", "grpc_port"),
}


@dataclass
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 3000
    grpc_port: int = 3001
    workers: int = 1
    # Largest request body accepted before it is read (413 past it).
    max_body_bytes: int = 1_048_576
    # BentoML's own OpenTelemetry ASGI middleware (spans of its provider, exported only when
    # BentoML's tracing is configured). Off: every URL is excluded, so it costs nothing; our
    # stage spans (service/tracing.py) do not depend on it.
    bentoml_request_spans: bool = False


@dataclass
class ModelSettings:
    profile: str = "local"
    # Served model names; empty = every model of the profile.
    serve: list[str] = field(default_factory=list)
    # task -> model name overriding the catalog's default for that task.
    defaults: dict[str, str] = field(default_factory=dict)
    # ORT intra-op threads per session (0 = all cores the worker may use).
    threads: int = 0
    # Single-threaded runs of an encoder model side by side for a batch of several inputs
    # (0 = one per intra-op thread, 1 = off); each model then holds a second ORT session.
    encoder_runners: int = 0
    verify_hashes: bool = True
    # Language pair a multi-pair translation model (T5) uses when a request names none.
    translation_pair: str = "en-fr"


@dataclass
class BatchingSettings:
    max_batch_size: int = 32
    # How long the first request of a batch may wait for company when the model is idle.
    max_wait_ms: float = 0.0
    # Padded tokens one ORT call may hold (a length-sorted group is cut when it would exceed it).
    max_batch_tokens: int = 4096
    # Requests queued per model before new ones are refused with 429.
    max_queue: int = 256
    # Estimated queueing time (ms) past which new requests are refused with 429; 0 = no bound.
    max_queue_ms: float = 1000.0


@dataclass
class LimitSettings:
    max_inputs: int = 64
    max_new_tokens: int = 512
    max_num_beams: int = 8
    max_concurrent_generations: int = 8
    # Generation requests that may wait for a place in the decode batch; past it 429.
    max_queued_generations: int = 0
    # Seconds a request may run before its work is stopped and it gets 504 (0 = no limit); a
    # client may ask for less with the X-Request-Timeout header.
    request_timeout_s: float = 0.0


@dataclass
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    models: ModelSettings = field(default_factory=ModelSettings)
    batching: BatchingSettings = field(default_factory=BatchingSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)


def _coerce(value: str, current: Any) -> Any:
    if isinstance(current, bool):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(current, int):
        return int(value)
    if isinstance(current, float):
        return float(value)
    if isinstance(current, list):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(current, dict):
        return dict(pair.split("=", 1) for pair in value.split(",") if "=" in pair)
    return value


def load_settings(path: Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Defaults, then the YAML file, then environment variables."""
    environ = dict(os.environ if environ is None else environ)
    path = Path(path or environ.get("NLP_CONFIG") or DEFAULT_CONFIG)
    raw = yaml.safe_load(path.read_text()) if path.exists() else {}
    settings = Settings()
    for section in fields(Settings):
        target = getattr(settings, section.name)
        for key, value in (raw or {}).get(section.name, {}).items():
            if not hasattr(target, key):
                raise ValueError(f"{path}: unknown setting {section.name}.{key}")
            setattr(target, key, value)
        for item in fields(target):
            env_name = f"NLP_{section.name}_{item.name}".upper()
            if env_name in environ:
                setattr(target, item.name, _coerce(environ[env_name], getattr(target, item.name)))
    for env_name, (section_name, key) in ALIASES.items():
        if environ.get(env_name):
            target = getattr(settings, section_name)
            setattr(target, key, _coerce(environ[env_name], getattr(target, key)))
    return settings
