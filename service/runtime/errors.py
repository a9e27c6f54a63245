"""Errors the runtime and the data plane raise, each carrying what every protocol answers with.

An error class states its HTTP status, its gRPC status code, the `outcome` label the metrics
count it under and the OpenAI error `type`; the HTTP handlers, the gRPC servicer and the data
plane's accounting read them from the exception instead of keeping tables of their own, so a new
error is one class here and answers the same through every door.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

_NAMED = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*): ")
# pydantic puts union branch names ("str", "list[str]", "function-after[...]") in locations.
_TYPE_NAMES = {"str", "int", "float", "bool", "list", "dict", "none"}


class ServingError(Exception):
    """Base class: `message` is safe to show to the caller."""

    http_status: ClassVar[int] = 500
    grpc_status: ClassVar[str] = "INTERNAL"  # a grpc.StatusCode name (grpc is not imported here)
    outcome: ClassVar[str] = "server_error"
    kind: ClassVar[str] = "server_error"  # OpenAI's error `type`
    code: ClassVar[str | None] = None  # OpenAI's error `code`
    field: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def headers(self) -> dict[str, str]:
        """Response headers (gRPC: trailing metadata, keys lower-cased) that go with it."""
        return {}


class InvalidInput(ServingError):
    """The caller sent something the model cannot take; `field` names it (dotted path)."""

    http_status = 422
    grpc_status = "INVALID_ARGUMENT"
    outcome = "client_error"
    kind = "invalid_request_error"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    @classmethod
    def from_validation(
        cls, errors: Sequence[dict[str, Any]], prefix: str = "", unknown_key_hint: str | None = None
    ) -> InvalidInput:
        """One InvalidInput from pydantic's `errors()`: the error that explains most (in a union,
        the branch that got furthest, not a type mismatch), its field as a dotted path under
        `prefix`, the message without pydantic's "Value error, " prefix."""
        ranked = sorted(
            errors, key=lambda e: (str(e.get("type", "")).endswith("_type"), -len(e.get("loc", ())))
        )
        first = ranked[0] if ranked else {"loc": (), "msg": "invalid value"}
        field = field_path(tuple(first.get("loc", ())), prefix)
        message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        if first.get("type") == "extra_forbidden" and unknown_key_hint:
            message = unknown_key_hint
        if field is None and (named := _NAMED.match(message)):
            # A whole-model check names its field first ("best_of: only ...").
            return cls(message, field=named.group(1))
        return cls(f"{field}: {message}" if field else message, field=field)


def field_path(loc: Sequence[Any], prefix: str = "") -> str | None:
    """`("a", 0, "b")` -> `a[0].b` (under `prefix`), leaving out pydantic's union branch names."""
    path = prefix
    for part in loc:
        text = str(part)
        if isinstance(part, int) or text.isdigit():
            path += f"[{text}]"
        elif text.isidentifier() and text not in _TYPE_NAMES:
            path += f".{text}" if path else text
    return path or None


class ModelNotFound(ServingError):
    """The request names a model that is not served."""

    http_status = 404
    grpc_status = "NOT_FOUND"
    outcome = "client_error"
    kind = "invalid_request_error"
    code = "model_not_found"
    field = "model"


class Overloaded(ServingError):
    """Queue or concurrency bound reached; the caller should retry after `retry_after` seconds."""

    http_status = 429
    grpc_status = "RESOURCE_EXHAUSTED"
    outcome = "overload"
    kind = "rate_limit_exceeded"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, round(self.retry_after)))}


class ModelLoadError(ServingError):
    """A model folder is missing, incomplete or does not match its recorded hashes."""

    http_status = 503
    grpc_status = "UNAVAILABLE"
    kind = "service_unavailable"
    code = "model_not_ready"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "5"}


class DeadlineExceeded(ServingError):
    """The request's deadline passed before its work finished; the work was stopped."""

    http_status = 504
    grpc_status = "DEADLINE_EXCEEDED"
    outcome = "timeout"
    kind = "timeout"
    code = "timeout"
