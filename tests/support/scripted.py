"""Scripted upstreams for tests: a server on 127.0.0.1:0 whose connection handler the test writes, and the
loop that reads one whole request with h11 (so the test controls every byte of the answer)."""

from __future__ import annotations

import h11
import trio


class ScriptedServer:
    """Serves ``_handle(stream)`` per connection on an ephemeral port; ``url`` is its ``/v1`` base once started."""

    url = ""

    async def serve(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/v1"
        async with trio.open_nursery() as nursery:
            task_status.started(self)
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def _handle(self, stream: trio.SocketStream) -> None:
        raise NotImplementedError


async def read_request(conn: h11.Connection, stream: trio.SocketStream) -> tuple[h11.Request, bytes] | None:
    """Read one whole request into ``conn``: its head and body; None when the client closed before its end."""
    head, body = None, b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            if not data:
                return None
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            return head, body
        elif isinstance(event, h11.ConnectionClosed):
            return None
