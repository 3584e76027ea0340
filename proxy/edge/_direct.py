"""Streamed body chunks written straight to the client's socket, under hypercorn's own framing.

Why: per relayed chunk, the ASGI path (Quart's send loop, our two send wrappers, hypercorn's
``HTTPStream.app_send`` → ``H11Protocol.stream_send`` → ``TCPServer.protocol_send``: an event
object per layer, a ``trio.Lock``, a shielded cancel scope and ``SocketStream.send_all``, two
scheduler round trips) cost more of the relay's CPU than the ``send`` syscall itself.

How: hypercorn still sends the response head (``http.response.start``) and the end of the body
(the last ``http.response.body``), so its h11 state machine, keep-alive and access handling stay
as they are. The body's last piece is not written here but left on the connection
(:meth:`DirectWriter.defer`): hypercorn's terminator write carries it, one ``send`` instead of two.
In between, each chunk is framed by that same h11 connection (``send(Data)``: chunked
encoding, or raw bytes for an HTTP/1.0 client) and written with one non-blocking ``os.write`` on
the socket. Only when the socket's buffer is full does it fall back to hypercorn's own way:
``send_all`` under the connection's send lock, shielded so that a frame is never half-written.

Every write that has to wait for the client (here and in :mod:`proxy.edge._tcpserver`) goes through
:func:`send_rest`: under the send lock, shielded so that a frame is never cut by a cancellation, and
with the worker's client write deadline (:class:`ClientWrites`), so that a client that stops reading
cannot hold its stream, upstream request and slots forever. When the deadline passes, part of a frame
may be out already and can never be finished: the connection is aborted (:func:`abort`). A write the
socket takes at once (``os.write``) has no deadline to set and costs nothing more.

Used only where it is the same protocol underneath: plain TCP (not TLS), HTTP/1.1 via h11, the
response head sent, no request with a suppressed body (HEAD). Anything else gets ``None`` from
:func:`current_writer` (counted in ``FALLBACKS`` with its reason) and the caller uses the ASGI path.
Relies on hypercorn 0.17/0.18 internals
(``TCPServer.stream``/``send_lock``/``protocol``, ``H11Protocol.connection``), checked at each use.
"""

from __future__ import annotations

import math
import os
import socket
import struct
from contextvars import ContextVar
from typing import Any

import h11
import trio

from ._taken import FALLBACKS, TAKEN

# The hypercorn TCPServer serving the current task's connection (set by _connection.TCPServer.run;
# the app's tasks inherit it, since hypercorn spawns them from that task).
CONNECTION: ContextVar[Any] = ContextVar("moonrelay.connection", default=None)


class ClientWrites:
    """A worker's client write deadline, and the writes now waiting for a slow client (for shutdown to end).

    One per ``serve`` (on hypercorn's config, read by each :class:`proxy.edge._tcpserver.TCPServer`).
    """

    __slots__ = ("timeout_s", "waiting", "stopping")

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s if timeout_s > 0 else math.inf
        self.waiting: set[trio.CancelScope] = set()
        self.stopping = False

    def stop(self) -> None:
        """The worker is going away: end the writes that wait now, and give later ones no time to wait
        (each then ends as a write past its deadline: its connection aborted, the request counted)."""
        self.stopping = True
        for scope in self.waiting:
            scope.cancel()


NO_CONFIG = ClientWrites(30.0)  # for a TCPServer whose hypercorn config was not made by proxy.edge


async def send_rest(stream: trio.abc.Stream, lock: trio.Lock, data: bytes, writes: ClientWrites) -> bool | None:
    """Send ``data`` (the rest of a frame, or a whole one) as hypercorn does, under the client write deadline.

    True once sent; False if the client is gone; None if the deadline passed (or the worker stopped):
    the caller then aborts the connection, since part of ``data`` may be out.

    Taking the lock is inside the shielded scope too: ``data`` may be the second half of a frame whose
    first half ``os.write`` already sent, and a cancellation (the client left, a drain) must not stop it
    there while the connection lives on: the next bytes written would land inside that frame. So a
    cancelled write still finishes its frame, within the deadline, or the connection is closed.
    """
    with trio.CancelScope(shield=True) as scope:
        if writes.stopping:
            scope.cancel()
        elif writes.timeout_s != math.inf:
            scope.deadline = trio.current_time() + writes.timeout_s
        writes.waiting.add(scope)
        try:
            async with lock:
                await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        finally:
            writes.waiting.discard(scope)
    return None if scope.cancelled_caught else True


def abort(stream: trio.abc.Stream) -> None:
    """End a connection whose last write did not finish: no byte can follow the cut frame.

    ``shutdown`` rather than ``close``: the fd stays this connection's (nothing else gets its number
    while a task may still write to it; those writes now fail), and the read loop sees EOF, which ends
    the request as a client that left does (``_connection``, ``_inline``). ``SO_LINGER`` 0 makes
    the close that follows a reset, dropping what the client never read instead of keeping it queued.
    """
    sock = getattr(stream, "socket", None) or getattr(getattr(stream, "transport_stream", None), "socket", None)
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:  # not TCP
        pass
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already gone
        pass


class DirectWriter:
    """Writes one response's body chunks to its client; ``write`` returns False once the client is gone."""

    __slots__ = ("_h11", "_fd", "_stream", "_lock", "_chunked", "_server", "_writes")

    def __init__(self, conn: h11.Connection, stream: trio.SocketStream, lock: trio.Lock, server: Any = None) -> None:
        self._h11 = conn
        self._fd = stream.socket.fileno()
        self._stream = stream
        self._lock = lock
        self._server = server  # _connection.TCPServer: its ``pending`` goes out before hypercorn's next write
        self._writes: ClientWrites = getattr(server, "writes", None) or NO_CONFIG
        # h11 frames chunks without keeping state for them (ChunkedWriter): framing here is the same
        # bytes for less (h11's send and hypercorn's own calls skipped).
        # Any other framing (HTTP/1.0: raw, then close) stays h11's.
        self._chunked = type(getattr(conn, "_writer", None)).__name__ == "ChunkedWriter"
        if self._chunked:
            TAKEN.own_chunked += 1

    def write_nowait(self, data: bytes) -> bytes | None:
        """Frame ``data`` and write what the socket takes now: the unwritten rest (b"" if none), None if gone."""
        if self._chunked:  # wire.chunk_frame, inline: no call per chunk
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
        """Write what ``write_nowait`` left as hypercorn writes (:func:`send_rest`): a slow client's backpressure.

        False when the client is gone, or did not take the bytes within the write deadline (the
        connection is then aborted; the caller ends the body, which closes the upstream request).
        """
        sent = await send_rest(self._stream, self._lock, rest, self._writes)
        if sent is None:
            abort(self._stream)
            if self._server is not None:
                self._server.write_timed_out = True
            return False
        return sent

    def defer(self, data: bytes) -> bool:
        """Leave the body's last piece, framed, for hypercorn's terminator write to carry; False where it cannot.

        Each loopback ``send`` is a syscall with a cost of its own, one per ASGI event; the terminator follows
        within the same task's next steps
        (Quart's end of body), so the client waits no longer for these bytes than for the end of the
        response. Only chunked framing: any other ends by closing the connection, which this must not delay.
        """
        server = self._server
        if not self._chunked or server is None or getattr(server, "pending", None) != b"":
            return False
        server.pending = b"%x\r\n%b\r\n" % (len(data), data)  # wire.chunk_frame, inline as in write_nowait
        TAKEN.deferred_tail += 1
        return True

    async def write(self, data: bytes) -> bool:
        rest = self.write_nowait(data)
        if rest is None:
            return False
        return await self.write_rest(rest) if rest else True


def current_writer(method: str) -> DirectWriter | None:
    """A writer for the response now being sent on this task's connection, or None where it would not be exact.

    Each None is counted in ``FALLBACKS`` with its reason: a fast path lost is seen, not only slower.
    """
    if method == "HEAD":
        FALLBACKS["direct_writer: HEAD"] += 1
        return None
    server = CONNECTION.get()
    if server is None:
        FALLBACKS["direct_writer: not our connection"] += 1
        return None
    stream = getattr(server, "stream", None)
    if type(stream) is not trio.SocketStream:  # TLS, or something hypercorn may add later
        FALLBACKS["direct_writer: not a plain socket (TLS)"] += 1
        return None
    protocol = getattr(getattr(server, "protocol", None), "protocol", None)
    conn = getattr(protocol, "connection", None)
    lock = getattr(server, "send_lock", None)
    if type(conn) is not h11.Connection or not isinstance(lock, trio.Lock) or conn.our_state is not h11.SEND_BODY:
        FALLBACKS["direct_writer: not h11 in SEND_BODY"] += 1
        return None
    TAKEN.direct_writer += 1
    return DirectWriter(conn, stream, lock, server)
