"""Errors the runtime raises, which every protocol adapter maps to its own status codes.

Keeping them protocol-free lets HTTP answer 4xx/429 and gRPC INVALID_ARGUMENT/RESOURCE_EXHAUSTED
from the same exception, and lets task code refuse input without knowing who called it.
"""

from __future__ import annotations


class ServingError(Exception):
    """Base class: `message` is safe to show to the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ServingError):
    """The caller sent something the model cannot take; `field` names it (dotted path)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ModelNotFound(ServingError):
    """The request names a model that is not served."""


class Overloaded(ServingError):
    """Queue or concurrency bound reached; the caller should retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelLoadError(ServingError):
    """A model folder is missing, incomplete or does not match its recorded hashes."""


class DeadlineExceeded(ServingError):
    """The request's deadline passed before its work finished; the work was stopped."""
