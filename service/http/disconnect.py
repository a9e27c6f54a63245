"""Stop a request's work when its client goes away before the answer is sent.

Starlette notices a disconnect only while it streams a response; a plain JSON request whose
client hung up (a timeout on the caller's side, a closed browser tab) would otherwise run to its
end: a generation decodes every token it asked for, a queued encoder item takes its place in a
batch. Here the request runs as a task of its own; once its body has been read, the
`http.disconnect` message that the server sends when the connection closes cancels that task,
so the data plane sees `CancelledError` (the generation leaves the decode batch before its next
step, queued encoder items are dropped from the batch) and counts the request `cancelled`.

The app still receives the disconnect message itself when it asks (streaming responses listen
for it), from the same single reader of the connection.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DISCONNECT: Message = {"type": "http.disconnect"}


class CancelOnDisconnectMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        gone = asyncio.Event()
        body_read = asyncio.Event()
        answered = False

        async def app_receive() -> Message:
            if body_read.is_set():  # later reads wait for the watcher's news
                await gone.wait()
                return DISCONNECT
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()
            elif not message.get("more_body", False):
                body_read.set()
            return message

        async def app_send(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = True
            await send(message)

        work = asyncio.ensure_future(self.app(scope, app_receive, app_send))

        async def watch() -> None:
            await body_read.wait()
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()
            if not answered:
                work.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            await work
        except asyncio.CancelledError:
            if not gone.is_set():  # cancelled from outside (server shutdown): stop the work too
                work.cancel()
                raise
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
