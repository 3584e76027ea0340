"""Streamed body chunks written straight to the client's socket, under hypercorn's own framing.

Why: per relayed chunk, the ASGI path (Quart's send loop, our two send wrappers, hypercorn's
``HTTPStream.app_send`` → ``H11Protocol.stream_send`` → ``TCPServer.protocol_send``: an event
object per layer, a ``trio.Lock``, a shielded cancel scope and ``SocketStream.send_all``, two
scheduler round trips) was 26.5 % of the relay's CPU in a py-spy profile at 1,000 streams
(381 µs per chunk in all); the ``send`` syscall itself was 9.2 %.

How: hypercorn still sends the response head (``http.response.start``) and the end of the body
(the last ``http.response.body``), so its h11 state machine, keep-alive and access handling stay
as they are. The body's last piece is not written here but left on the connection
(:meth:`DirectWriter.defer`): hypercorn's terminator write carries it, one ``send`` instead of two.
In between, each chunk is framed by that same h11 connection (``send(Data)``: chunked
encoding, or raw bytes for an HTTP/1.0 client) and written with one non-blocking ``os.write`` on
the socket. Only when the socket's buffer is full does it fall back to hypercorn's own way:
``send_all`` under the connection's send lock, shielded so that a frame is never half-written.

Used only where it is the same protocol underneath: plain TCP (not TLS), HTTP/1.1 via h11, the
response head sent, no request with a suppressed body (HEAD). Anything else gets ``None`` from
:func:`current_writer` and the caller uses the ASGI path. Relies on hypercorn 0.17/0.18 internals
(``TCPServer.stream``/``send_lock``/``protocol``, ``H11Protocol.connection``), checked at each use.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from typing import Any

import h11
import trio

# The hypercorn TCPServer serving the current task's connection (set by proxy.keepalive.TCPServer.run;
# the app's tasks inherit it, since hypercorn spawns them from that task).
CONNECTION: ContextVar[Any] = ContextVar("moonrelay.connection", default=None)


class DirectWriter:
    """Writes one response's body chunks to its client; ``write`` returns False once the client is gone."""

    __slots__ = ("_h11", "_fd", "_stream", "_lock", "_chunked", "_server")

    def __init__(self, conn: h11.Connection, stream: trio.SocketStream, lock: trio.Lock, server: Any = None) -> None:
        self._h11 = conn
        self._fd = stream.socket.fileno()
        self._stream = stream
        self._lock = lock
        self._server = server  # proxy.keepalive.TCPServer: its ``pending`` goes out before hypercorn's next write
        # h11 frames chunks without keeping state for them (ChunkedWriter): framing here is the same
        # bytes for less (h11's send was 3.8 % of the relay's CPU at 1,000 streams, hypercorn's own
        # calls included). Any other framing (HTTP/1.0: raw, then close) stays h11's.
        self._chunked = type(getattr(conn, "_writer", None)).__name__ == "ChunkedWriter"

    def write_nowait(self, data: bytes) -> bytes | None:
        """Frame ``data`` and write what the socket takes now: the unwritten rest (b"" if none), None if gone."""
        if self._chunked:
            frame = b"%x\r\n%b\r\n" % (len(data), data)
        else:
            try:
                frame = self._h11.send(h11.Data(data=data))
            except h11.LocalProtocolError:
                return None
            if frame is None:
                return None
        if self._lock.locked():  # hypercorn is writing on this connection: queue behind it
            return frame
        try:
            sent = os.write(self._fd, frame)
        except BlockingIOError:
            return frame
        except OSError:
            return None
        return frame[sent:]

    async def write_rest(self, rest: bytes) -> bool:
        """Write what ``write_nowait`` left as hypercorn writes, locked and shielded: a slow client's backpressure."""
        async with self._lock:
            with trio.CancelScope(shield=True):
                try:
                    await self._stream.send_all(rest)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return False
        return True

    def defer(self, data: bytes) -> bool:
        """Leave the body's last piece, framed, for hypercorn's terminator write to carry; False where it cannot.

        A loopback ``send`` costs ~100 µs of CPU on this VM (PERF-LOG), a tenth of a short request's;
        the terminator follows within the same task's next steps (Quart's end of body), so the client
        waits no longer for these bytes than for the end of the response. Only chunked framing: any
        other ends by closing the connection, which this must not delay.
        """
        server = self._server
        if not self._chunked or server is None or getattr(server, "pending", None) != b"":
            return False
        server.pending = b"%x\r\n%b\r\n" % (len(data), data)
        return True

    async def write(self, data: bytes) -> bool:
        rest = self.write_nowait(data)
        if rest is None:
            return False
        return await self.write_rest(rest) if rest else True


def current_writer(method: str) -> DirectWriter | None:
    """A writer for the response now being sent on this task's connection, or None where it would not be exact."""
    if method == "HEAD":
        return None
    server = CONNECTION.get()
    if server is None:
        return None
    stream = getattr(server, "stream", None)
    if type(stream) is not trio.SocketStream:  # TLS, or something hypercorn may add later
        return None
    protocol = getattr(getattr(server, "protocol", None), "protocol", None)
    conn = getattr(protocol, "connection", None)
    lock = getattr(server, "send_lock", None)
    if type(conn) is not h11.Connection or not isinstance(lock, trio.Lock) or conn.our_state is not h11.SEND_BODY:
        return None
    return DirectWriter(conn, stream, lock, server)
