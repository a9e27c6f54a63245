"""Per-request deadlines, set by the protocol adapter and honoured by the data plane.

A deadline travels in a ContextVar so that every protocol can set one the way its clients send
it (HTTP: `X-Request-Timeout` or the configured `limits.request_timeout_s`; gRPC: the call's own
deadline) without the data plane's signatures knowing about either. Values are
`time.monotonic()` seconds; None means no deadline.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from service.runtime.errors import InvalidInput

HEADER = "x-request-timeout"

_deadline: ContextVar[float | None] = ContextVar("request_deadline", default=None)


def current() -> float | None:
    """The deadline of the request being served (monotonic seconds), or None."""
    return _deadline.get()


def remaining() -> float | None:
    """Seconds left before the deadline (≤ 0 once it passed), or None."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


def timeout_from(header: str | None, configured: float) -> float | None:
    """The timeout a request runs under: the header's seconds, never longer than the configured
    limit (0 = no configured limit). A malformed or non-positive header is refused."""
    limit = configured if configured > 0 else None
    if header is None:
        return limit
    try:
        seconds = float(header)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidInput(
            f"{HEADER} must be a positive number of seconds, got {header!r}", field=HEADER
        )
    return seconds if limit is None else min(seconds, limit)


@contextmanager
def within(timeout: float | None) -> Iterator[float | None]:
    """Run the block under a deadline `timeout` seconds from now (None: no deadline)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    token = _deadline.set(deadline)
    try:
        yield deadline
    finally:
        _deadline.reset(token)
