"""A scripted upstream for tests: it sends SSE event k+1 only when the test says chunk k arrived.

A relay that buffers (waits for more data, or for the end) deadlocks against it.
"""

from __future__ import annotations

import json
from functools import partial

import h11
import trio


class LockstepUpstream:
    def __init__(self, events: list[bytes]) -> None:
        self.events = events
        self.release = [trio.Event() for _ in events]
        self.requests: list[tuple[h11.Request, bytes]] = []
        self.url = ""

    def chunk_bytes(self, k: int) -> bytes:
        return b"data: " + self.events[k] + b"\n\n"

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/v1"
        async with trio.open_nursery() as nursery:
            task_status.started(self)
            await trio.serve_listeners(partial(self._handle), listeners, handler_nursery=nursery)

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        body = b""
        request = None
        async with stream:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:
                    return
            self.requests.append((request, body))
            headers = [("content-type", "text/event-stream"), ("transfer-encoding", "chunked")]
            await stream.send_all(conn.send(h11.Response(status_code=200, headers=headers)))
            for k in range(len(self.events)):
                if k:
                    await self.release[k - 1].wait()
                await stream.send_all(conn.send(h11.Data(data=self.chunk_bytes(k))))
            await stream.send_all(conn.send(h11.Data(data=b"data: [DONE]\n\n")) + conn.send(h11.EndOfMessage()))


def chunk_event(k: int) -> bytes:
    return json.dumps(
        {"id": "x", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": f"t{k}"}}]}
    ).encode()
