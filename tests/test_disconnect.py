"""The disconnect middleware in process: a client that leaves cancels the request's work."""

from __future__ import annotations

import asyncio

from service.http.disconnect import CancelOnDisconnectMiddleware


def _channel(leave_after: float | None):
    """An ASGI receive: the body in one message, then `http.disconnect` after `leave_after`
    seconds (never, if None)."""
    sent_body = False

    async def receive():
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": b"{}", "more_body": False}
        if leave_after is None:
            await asyncio.Event().wait()
        await asyncio.sleep(leave_after)
        return {"type": "http.disconnect"}

    return receive


def _run(app, leave_after: float | None) -> list[dict]:
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def main():
        await CancelOnDisconnectMiddleware(app)({"type": "http"}, _channel(leave_after), send)

    asyncio.run(asyncio.wait_for(main(), 5))
    return sent


def test_a_client_that_leaves_cancels_the_work():
    events = []

    async def slow_app(scope, receive, send):
        await receive()
        try:
            await asyncio.sleep(3)
            events.append("finished")
        except asyncio.CancelledError:
            events.append("cancelled")
            raise

    assert _run(slow_app, leave_after=0.05) == []
    assert events == ["cancelled"]


def test_an_answer_before_the_client_leaves_is_sent_whole():
    async def quick_app(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    sent = _run(quick_app, leave_after=None)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]


def test_a_stream_whose_client_leaves_stops_too():
    events = []

    async def streaming_app(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        try:
            await receive()  # what Starlette's stream listener does: it waits for the disconnect
            await asyncio.sleep(3)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise

    sent = _run(streaming_app, leave_after=0.05)
    assert events == ["cancelled"] and len(sent) == 2
