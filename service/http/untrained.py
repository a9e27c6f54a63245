"""The HTTP warning on answers from random-weight models, so that no client mistakes noise for an
answer: `Warning: 299 - "untrained model NAME: random weights, the output is noise"`.

`299` is the "miscellaneous persistent warning" code of RFC 7234's `Warning` header, which
HTTP clients log or pass on untouched; the body keeps the task's usual schema, so clients that
ignore headers still work.
"""

from __future__ import annotations

from fastapi import Request, Response

from service.dataplane import DataPlane

HEADER = "Warning"


def warning(model: str) -> str:
    return f'299 - "untrained model {model}: random weights, the output is noise"'


def headers_for(plane: DataPlane, task: str, model: str | None) -> dict[str, str]:
    """The warning header when `model` (or the task's default) has random weights, else none."""
    served = plane.model(task, model)
    return {HEADER: warning(served.name)} if served.record.untrained else {}


def flag(response: Response, request: Request, task: str, model: str | None) -> None:
    """Add the warning to a route's response when the model that answered is untrained."""
    response.headers.update(headers_for(request.app.state.plane, task, model))
