"""Server-Sent Events that stop the work behind them when the client goes away.

Starlette ends a streaming response when the client disconnects (a failed send, or the
`http.disconnect` message) but leaves the body's async generator suspended until the garbage
collector finalizes it, and with it the generation it drives. This response closes the body at
once, and the body generators close their data-plane stream in turn, so the request's row leaves
the decode batch before the next step (tests/test_cancellation.py).
"""

from __future__ import annotations

from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Send


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            close: Any = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                with anyio.CancelScope(shield=True):
                    await close()
