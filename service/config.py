"""Serving configuration: one typed model, a YAML file, every key overridable by the environment.

`service/config.yaml` holds the defaults; `NLP_CONFIG` points at another file. An environment
variable `NLP_<SECTION>_<KEY>` (upper case) overrides `<section>.<key>`, e.g.
`NLP_BATCHING_MAX_BATCH_SIZE=16`; lists are comma-separated (`NLP_MODELS_SERVE=a,b`), maps
`k=v` pairs (`NLP_MODELS_DEFAULTS=text-classification=my-model`). The common knobs also have
the short names operators already use (`ALIASES`: `PROFILE`, `PORT`, `ORT_INTRA_OP_THREADS`,
...). Every value is validated by pydantic when the service starts: a wrong type, a value out of
range or an unknown key (in the file or as `NLP_<SECTION>_<KEY>`) stops start-up with a message
naming the setting and where it came from.

The environment layer is ours rather than pydantic-settings' because the documented names predate
it (one `_` between section and key, comma lists rather than JSON); the typing, coercion and
error reporting are pydantic's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_CONFIG = Path(__file__).with_name("config.yaml")

# Short environment names -> (section, key). The operator's conventions: Makefile variables,
# container settings, ONNX Runtime's and glibc's own names.
ALIASES = {
    "PROFILE": ("models", "profile"),
    "HOST": ("server", "host"),
    "PORT": ("server", "port"),
    "GRPC_PORT": ("server", "grpc_port"),
    "NLP_LOG_LEVEL": ("server", "log_level"),
    "MALLOC_ARENA_MAX": ("server", "malloc_arena_max"),
    "ORT_INTRA_OP_THREADS": ("models", "threads"),
    "ORT_ALLOW_SPINNING": ("models", "allow_spinning"),
    "ENCODER_CALL_OVERHEAD_TOKENS": ("batching", "call_overhead_tokens"),
    "NLP_API_KEYS": ("server", "api_keys"),
    "NLP_API_KEYS_FILE": ("server", "api_keys_file"),
    "NLP_CORS_ORIGINS": ("server", "cors_origins"),
}


class SettingsError(ValueError):
    """The configuration cannot be used; the message names each bad setting and its source."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
    grpc_port: int = Field(3001, ge=1, le=65535)
    workers: int = Field(1, ge=1)
    # Largest request body accepted before it is read (413 past it).
    max_body_bytes: int = Field(1_048_576, ge=1024)
    # BentoML's own OpenTelemetry ASGI middleware (spans of its provider, exported only when
    # BentoML's tracing is configured). Off: every URL is excluded, so it costs nothing; our
    # stage spans (service/tracing.py) do not depend on it.
    bentoml_request_spans: bool = False
    # Level of the `service` loggers (JSON lines on stdout).
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    # glibc malloc arenas of the workers (their environment, set by `bentoml serve`): each
    # allocating thread otherwise gets an arena of its own that keeps freed memory, and worker
    # RSS creeps up for minutes under load (loadtests/results/soak-2026-11-27). 0 = glibc's.
    malloc_arena_max: int = Field(2, ge=0)
    # API keys (service/api_keys.py): none = open. A file holds one key per line.
    api_keys: list[str] = Field(default_factory=list, repr=False)
    api_keys_file: str | None = None
    # Origins browsers may call from (CORS); empty = no CORS headers. "*" allows any origin.
    cors_origins: list[str] = Field(default_factory=list)

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class ModelSettings(_Section):
    profile: str = "local"
    # Served model names; empty = every model of the profile.
    serve: list[str] = Field(default_factory=list)
    # task -> model name overriding the catalog's default for that task.
    defaults: dict[str, str] = Field(default_factory=dict)
    # ORT intra-op threads per session (0 = all cores the worker may use).
    threads: int = Field(0, ge=0)
    # ORT pool threads spinning while idle: None = per model kind (encoders sleep, decode loops
    # spin; service/runtime/onnx_session.py), True/False forces it for every session.
    allow_spinning: bool | None = None
    # Single-threaded runs of an encoder model side by side for a batch of several inputs
    # (0 = one per intra-op thread, 1 = off); each model then holds a second ORT session.
    encoder_runners: int = Field(0, ge=0)
    # Sessions load their graph saved once with memory-mappable weights and pre-packed blobs, so
    # an encoder's two sessions, and every worker's sessions of a model, share one copy
    # (service/runtime/prepared_graph.py).
    share_weights: bool = True
    # Where those saved graphs live; empty = $BENTOML_HOME/cache/ort-prepared.
    prepared_graphs_dir: str = ""
    verify_hashes: bool = True
    # Language pair a multi-pair translation model (T5) uses when a request names none.
    translation_pair: str = "en-fr"

    @field_validator("serve", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("defaults", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        if isinstance(value, str):
            pairs = [p for p in value.split(",") if p.strip()]
            if any("=" not in p for p in pairs):
                raise ValueError("expected task=model pairs separated by commas")
            return dict(p.strip().split("=", 1) for p in pairs)
        return value

    def prepared_cache(self) -> Path | None:
        """The prepared-graph cache folder, or None when `share_weights` is off."""
        if not self.share_weights:
            return None
        if self.prepared_graphs_dir:
            return Path(self.prepared_graphs_dir)
        return default_prepared_graphs_dir()


def default_prepared_graphs_dir() -> Path:
    """`$BENTOML_HOME/cache/ort-prepared`, beside the model store (BentoML's default home when
    the variable is unset), like the project's other caches."""
    home = os.environ.get("BENTOML_HOME") or Path.home() / "bentoml"
    return Path(home) / "cache" / "ort-prepared"


class BatchingSettings(_Section):
    max_batch_size: int = Field(32, ge=1)
    # Tokens (every model input of its items, tokenized on arrival) one batch taken from the
    # queue may hold; the batch is cut before the item that would pass it (an item alone always
    # runs). The default lets 32 inputs of 512 tokens through: only many-row items (zero-shot
    # labels, QA windows) are cut.
    max_batch_input_tokens: int = Field(16384, ge=1)
    # How long the first request of a batch may wait for company when the model is idle.
    max_wait_ms: float = Field(0.0, ge=0)
    # Padded tokens one ORT call may hold (a length-sorted group is cut when it would exceed it).
    max_batch_tokens: int = Field(4096, ge=1)
    # Padding tokens one more ORT call is worth when grouping a batch by length
    # (service/runtime/encoder_batches.py; a huge value fills every call to the limits).
    call_overhead_tokens: int = Field(16, ge=0)
    # Requests queued per model before new ones are refused with 429.
    max_queue: int = Field(256, ge=1)
    # Estimated queueing time (ms) past which new requests are refused with 429; 0 = no bound.
    max_queue_ms: float = Field(1000.0, ge=0)


class LimitSettings(_Section):
    max_inputs: int = Field(64, ge=1)
    max_new_tokens: int = Field(512, ge=1)
    max_num_beams: int = Field(8, ge=1)
    max_concurrent_generations: int = Field(8, ge=1)
    # Generation requests that may wait for a place in the decode batch; past it 429.
    max_queued_generations: int = Field(0, ge=0)
    # Seconds a request may run before its work is stopped and it gets 504 (0 = no limit); a
    # client may ask for less with the X-Request-Timeout header.
    request_timeout_s: float = Field(0.0, ge=0)


class GrammarSettings(_Section):
    """Structured generation (service/runtime/constraints.py): what one request's grammar may
    cost. The fuels are llguidance's work budgets; past them a request gets a 422, never a hang."""

    # A JSON schema (as compact JSON), regex or Lark grammar larger than this is refused.
    max_bytes: int = Field(32_768, ge=64)
    # Nesting of a JSON schema's objects and arrays (the schema document, not the output).
    max_depth: int = Field(32, ge=1)
    # Compiled grammars kept per model (least recently used goes first).
    cache_size: int = Field(128, ge=1)
    # Lexer work to build a grammar (about 50 per microsecond) and to compute one token's mask
    # (about 14 per microsecond): llguidance's defaults.
    compile_fuel: int = Field(1_000_000, ge=100)
    step_fuel: int = Field(200_000, ge=100)


class Settings(_Section):
    server: ServerSettings = Field(default_factory=ServerSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    batching: BatchingSettings = Field(default_factory=BatchingSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    grammar: GrammarSettings = Field(default_factory=GrammarSettings)


SECTIONS: dict[str, type[_Section]] = {
    name: field.annotation
    for name, field in Settings.model_fields.items()  # type: ignore[misc]
}


def _from_environment(
    environ: dict[str, str],
) -> tuple[dict[str, dict[str, str]], dict[tuple[str, str], str]]:
    """Overrides from the environment, by section, and the variable each came from."""
    values: dict[str, dict[str, str]] = {}
    origin: dict[tuple[str, str], str] = {}
    for env_name, (section, key) in ALIASES.items():
        if environ.get(env_name):
            values.setdefault(section, {})[key] = environ[env_name]
            origin[(section, key)] = env_name
    for env_name, value in environ.items():
        upper = env_name.upper()
        for section, model in SECTIONS.items():
            prefix = f"NLP_{section.upper()}_"
            if not upper.startswith(prefix) or env_name in ALIASES:
                continue
            key = upper[len(prefix) :].lower()
            if key not in model.model_fields:
                raise SettingsError(
                    f"{env_name}: unknown setting {section}.{key} "
                    f"(known: {', '.join(model.model_fields)})"
                )
            values.setdefault(section, {})[key] = value
            origin[(section, key)] = env_name
    return values, origin


def load_settings(path: Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Defaults, then the YAML file, then environment variables; validated as a whole."""
    environ = dict(os.environ if environ is None else environ)
    path = Path(path or environ.get("NLP_CONFIG") or DEFAULT_CONFIG)
    raw = (yaml.safe_load(path.read_text()) if path.exists() else None) or {}
    if not isinstance(raw, dict):
        raise SettingsError(f"{path}: expected sections ({', '.join(SECTIONS)}) at the top")
    overrides, origin = _from_environment(environ)
    merged: dict[str, Any] = {}
    for section in {*raw, *overrides}:
        from_file = raw.get(section) or {}
        if section in SECTIONS and not isinstance(from_file, dict):
            raise SettingsError(f"{path}: section {section} must be a mapping")
        merged[section] = {**from_file, **overrides.get(section, {})}
    try:
        return Settings.model_validate(merged)
    except ValidationError as err:
        problems = []
        for error in err.errors():
            location = ".".join(str(part) for part in error["loc"])
            source = origin.get(tuple(error["loc"][:2]), str(path))  # type: ignore[arg-type]
            problems.append(
                f"{location} ({source}): {error['msg']}"
                + (f", got {error['input']!r}" if error["type"] != "missing" else "")
            )
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
