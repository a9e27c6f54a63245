"""Optional API keys, checked the same way for every protocol.

Off unless keys are configured (`server.api_keys`, or `server.api_keys_file` with one key per
line, `#` comments allowed). A caller sends `Authorization: Bearer KEY` (gRPC: the
`authorization` metadata). Keys are compared in constant time (`hmac.compare_digest`) so that
response times do not reveal how much of a guess was right. Health and metrics stay open.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from service.config import ServerSettings
from service.runtime.errors import ServingError


class Unauthenticated(ServingError):
    """No key, or not a `Bearer` key, where one is required."""

    http_status = 401
    grpc_status = "UNAUTHENTICATED"
    outcome = "client_error"
    kind = "invalid_request_error"
    code = "invalid_api_key"
    field = "authorization"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class Forbidden(Unauthenticated):
    """A key that is not one of the configured keys."""

    http_status = 403
    grpc_status = "PERMISSION_DENIED"


class ApiKeys:
    def __init__(self, keys: list[str]) -> None:
        self._keys = [k.encode() for k in keys if k]

    @classmethod
    def from_settings(cls, server: ServerSettings) -> ApiKeys:
        keys = list(server.api_keys)
        if server.api_keys_file:
            for line in Path(server.api_keys_file).read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    keys.append(line)
        return cls(keys)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def check(self, authorization: str | None) -> None:
        """Raise unless `authorization` (the header's value) carries a configured key."""
        if not self.enabled:
            return
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthenticated("an API key is required: send `Authorization: Bearer KEY`")
        given = key.strip().encode()
        # Every key is compared (no early exit), each in constant time.
        matched = False
        for known in self._keys:
            matched |= hmac.compare_digest(given, known)
        if not matched:
            raise Forbidden("this API key is not accepted")
