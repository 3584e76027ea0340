"""A TCP proxy the test steers, in front of a real server (a redis-server): it delays what clients send, or cuts every
connection, as a slow or failing network would, while the server itself stays as it is.

- ``delay_s``: every piece a client sends waits this long before it goes on (a Redis that answers every call
  slowly); ``delay_next(s)``: only the next piece (one late reply: the client gives up, the server still applies it);
- ``cut()``: every connection closed now and new ones closed at once (Redis down: what was not sent is lost);
  ``restore()`` ends that.

Served in the test's own nursery: ``proxy = await nursery.start(TCPProxy(port).serve)`` reports itself once it
listens on an ephemeral port (``proxy.port``).
"""

from __future__ import annotations

import trio


class TCPProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.delay_s = 0.0
        self._delay_once: float | None = None
        self.forwarded = 0  # pieces sent on to the server
        self.refused = 0  # connections closed at once while cut
        self._cut = False
        self._scopes: set[trio.CancelScope] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def delay_next(self, seconds: float) -> None:
        self._delay_once = seconds

    def cut(self) -> None:
        self._cut = True
        for scope in list(self._scopes):
            scope.cancel()

    def restore(self) -> None:
        self._cut = False

    async def serve(self, *, task_status: trio.TaskStatus[TCPProxy] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started(self)
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def _handle(self, client: trio.SocketStream) -> None:
        async with client:
            if self._cut:
                self.refused += 1
                return
            try:
                server = await trio.open_tcp_stream(*self.target)
            except OSError:
                return
            async with server:
                with trio.CancelScope() as scope:
                    self._scopes.add(scope)
                    try:
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(self._forward, client, server, True, nursery.cancel_scope)
                            nursery.start_soon(self._forward, server, client, False, nursery.cancel_scope)
                    finally:
                        self._scopes.discard(scope)

    async def _forward(self, source: trio.SocketStream, sink: trio.SocketStream, delayed: bool,
                       both: trio.CancelScope) -> None:  # fmt: skip
        """Move bytes one way; a delayed piece goes on ``delay`` after it came, in order, while the next ones are
        read (latency, not a narrower pipe: calls made together arrive together)."""
        send, receive = trio.open_memory_channel[tuple[float, bytes]](1000)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._deliver, receive, sink)
                async with send:
                    while data := await source.receive_some(65536):
                        delay = 0.0
                        if delayed:
                            delay = self.delay_s
                            if self._delay_once is not None:
                                delay, self._delay_once = self._delay_once, None
                        await send.send((trio.current_time() + delay, data))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        both.cancel()  # one side ended: so does the other

    async def _deliver(self, pieces: trio.MemoryReceiveChannel[tuple[float, bytes]], sink: trio.SocketStream) -> None:
        async with pieces:
            async for due, data in pieces:
                await trio.sleep_until(due)
                await sink.send_all(data)
                self.forwarded += 1
