"""One upstream HTTP/1.1 connection (trio socket + h11) and the writes on it; the timeouts it is held to.

Part of the h11 transport (``_pool.H11Transport``): see that module for why it exists.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import h11
import httpx
import trio

READ_SIZE = 65536
NEXT_PART = "the next part of the response"
READER = "moonrelay.reader"  # response extension: the body reader, for callers that skip httpx's iterators
HEARTBEAT = "heartbeat"  # Interrupted reasons: the upstream has been silent a while (the response goes on) ...
SHUTDOWN = "shutdown"  # ... or the relay is stopping (the response ends)


# h11 states (ours, theirs) of a connection that may serve another request: after a response h11
# read to its end, or a fresh state machine after a body decoded by ChunkedDecoder.
REUSABLE = ((h11.DONE, h11.DONE), (h11.IDLE, h11.IDLE))


class Unsent(httpx.WriteError):
    """The connection failed before it took any byte of the request: the upstream cannot have seen it."""


class Interrupted(Exception):
    """A wait for upstream bytes cut short on purpose (see ``ResponseStream.interrupt``); not a transport error."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect_s: float = 10.0
    first_byte_s: float = 300.0
    idle_s: float = 300.0  # between two reads of a response body
    pool_s: float = 30.0
    total_s: float = 3600.0  # the whole exchange, headers and body
    # An idle pooled connection is closed after this long: a burst's connections (and their fds) do not stay open
    # for good once the load is gone; upstreams close theirs after a while anyway (nginx: 60 s).
    pool_idle_s: float = 30.0


class Connection:
    __slots__ = (
        "origin", "stream", "h11", "fd", "plain", "deadline", "total", "queued", "entry", "expired", "ping", "body",
        "pump", "idle_since",
    )  # fmt: skip

    def __init__(self, origin: tuple[bytes, bytes, int], stream: trio.abc.Stream, fd: int, plain: bool) -> None:
        self.origin = origin
        self.stream = stream
        self.h11: h11.Connection | None = self.new_h11()  # None while a chunked body streams (decoded by us)
        self.body = b""  # body bytes decoded by a ChunkedDecoder and not yet handed out
        self.fd = fd  # the socket's fd, waited on directly
        self.plain = plain  # no TLS: read the fd ourselves
        self.deadline = math.inf  # absolute trio time at which the current wait expires
        self.total = math.inf
        self.queued = math.inf  # the due time of this connection's live entry in the watchdog's heap
        self.entry: list | None = None  # that entry (proxy.transport._watchdog), while it is live
        self.expired: str | None = None  # a timeout's name, or SHUTDOWN
        self.ping = False  # a heartbeat asked the current wait to stop (looked at only when a wait fails)
        self.pump: Any = None  # the proxy.stream.Pump this connection's stream is parked in, while it is
        self.idle_since = 0.0  # trio time it went back to the pool (the pool's idle expiry)

    @staticmethod
    def new_h11() -> h11.Connection:
        return h11.Connection(h11.CLIENT, max_incomplete_event_size=256 * 1024)

    async def receive(self, what: str, watched: bool) -> None:
        """Read once into h11; a deadline that passes while waiting ends in ReadTimeout.

        With the watchdog running (``watched``), the wait carries no cancel scope: the watchdog
        wakes an expired waiter through ``notify_closing``. Two cancel scopes per chunk (idle and
        total deadlines) were a visible share of the relay's CPU.
        """
        data = await self.read(what, watched)
        try:
            self.h11.receive_data(data)
        except h11.RemoteProtocolError as exc:
            raise httpx.RemoteProtocolError(f"upstream sent invalid HTTP: {exc}") from exc

    async def read(self, what: str, watched: bool) -> bytes:
        """The bytes of one socket read (b"" at EOF), under the same deadlines as ``receive``."""
        if self.expired:
            raise self._stopped(what)
        if watched:
            return await self._read(what)
        data = None
        with trio.move_on_at(min(self.deadline, self.total)):
            data = await self._read(what)
        if data is None:
            raise httpx.ReadTimeout(f"upstream sent nothing for {what} in time")
        return data

    async def _read(self, what: str) -> bytes:
        try:
            if self.plain:
                # Wait, then read the fd: trio's recv tries first and raises BlockingIOError on
                # the (usual) empty socket before it waits; this skips that exception per chunk.
                while True:
                    await trio.lowlevel.wait_readable(self.fd)
                    try:
                        return os.read(self.fd, READ_SIZE)
                    except BlockingIOError:
                        continue
            return await self.stream.receive_some(READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise self.read_failed(exc, what) from exc

    def read_failed(self, exc: BaseException, what: str) -> Exception:
        """What a read that failed with ``exc`` means: a timeout or shutdown, a heartbeat, or a broken connection."""
        if self.expired:
            return self._stopped(what)
        if self.ping and type(exc) is trio.ClosedResourceError:
            # Woken by notify_closing for a heartbeat: nothing was read, the socket (TLS too) is intact.
            self.ping = False
            return Interrupted(HEARTBEAT)
        return httpx.ReadError(f"upstream connection broken while waiting for {what}")

    def _stopped(self, what: str) -> Exception:
        if self.expired == SHUTDOWN:
            return Interrupted(SHUTDOWN)
        return httpx.ReadTimeout(f"upstream sent nothing for {what} within the {self.expired} timeout")

    def expire(self, reason: str) -> None:
        self.expired = reason
        self.wake()

    def wake(self) -> None:
        """End the current wait for this connection's bytes (it then fails, and ``read_failed`` says why):
        the parked stream is handed back to its task, or trio's waiter gets ``ClosedResourceError``."""
        pump = self.pump
        if pump is None or not pump.wake(self.fd):
            trio.lowlevel.notify_closing(self.fd)

    def next_event(self) -> object:
        try:
            return self.h11.next_event()
        except h11.RemoteProtocolError as exc:
            raise httpx.RemoteProtocolError(f"upstream sent invalid HTTP: {exc}") from exc

    async def close(self) -> None:
        with trio.CancelScope(shield=True):
            try:
                await trio.aclose_forcefully(self.stream)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass


async def send_first(conn: Connection, data: bytes, timeout_s: float) -> None:
    """The request's first write: ``Unsent`` if the connection failed before taking a byte of it.

    A plain socket gets one ``os.write`` first: no scheduler round trip when it takes it all (nearly
    always), and a failure there is known to have written nothing. After a partial write, and over
    TLS (whose records may have gone out in part), a failure may have delivered bytes: WriteError.
    """
    if conn.plain:
        try:
            sent = os.write(conn.fd, data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise Unsent("upstream connection was closed before the request was sent") from exc
        if sent == len(data):
            return
        data = data[sent:]
    await send_all(conn, data, timeout_s)


async def send_all(conn: Connection, data: bytes, timeout_s: float) -> None:
    with trio.move_on_after(timeout_s) as scope:
        try:
            await conn.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise httpx.WriteError("upstream connection broke while sending the request") from exc
    if scope.cancelled_caught:
        raise httpx.WriteTimeout(f"upstream took no request body for {timeout_s:g} s")


def unread(conn: Connection) -> bool:
    """Bytes past the end of the response are already off the socket: in h11's buffer (any framing h11
    read), or, over TLS, decrypted or still-encrypted records the socket's readability cannot show."""
    data, closed = conn.h11.trailing_data
    if data or closed:
        return True
    if conn.plain:
        return False
    stream = conn.stream
    return bool(stream.pending() or getattr(getattr(stream, "_incoming", None), "pending", 0))  # type: ignore[attr-defined]


def is_dead(conn: Connection) -> bool:
    """At pick-up from the pool: a readable idle socket holds EOF, a reset or bytes nobody asked for; not reused."""
    stream = conn.stream
    sock = getattr(stream, "socket", None)
    if sock is None:
        sock = getattr(getattr(stream, "transport_stream", None), "socket", None)
    if sock is None:
        return False
    try:
        return bool(sock.is_readable())
    except OSError:
        return True
