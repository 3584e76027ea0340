"""A response body read from one upstream connection: chunked decoding, timeouts, interrupts (heartbeat,
shutdown); ``reader`` gives the relay the same interface for any httpx response."""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import h11
import httpx
import trio

from wire import ChunkedDecoder, ChunkedError

from ._connection import NEXT_PART, READ_SIZE, READER, SHUTDOWN, Connection, Interrupted

if TYPE_CHECKING:
    from ._pool import H11Transport


class ResponseStream(httpx.AsyncByteStream):
    """The response body: yields what each socket read completed, then gives the connection back."""

    __slots__ = ("_conn", "_transport", "_idle_s", "_done", "_closed", "_pinged", "_chunked", "_keep_alive")

    def __init__(
        self, conn: Connection, transport: H11Transport, idle_s: float, chunked: ChunkedDecoder | None = None,
        keep_alive: bool = True,
    ) -> None:  # fmt: skip
        """``chunked``: decode the body here instead of through h11 (see :mod:`wire`); h11 has
        parsed the head, and ``keep_alive`` says whether that head allows reusing the connection."""
        self._conn = conn
        self._transport = transport
        self._idle_s = idle_s
        self._done = False
        self._closed = False
        self._pinged = False  # the last wait was cut short by a heartbeat: the silence (and its deadline) goes on
        self._chunked = chunked
        self._keep_alive = keep_alive

    async def receive_chunk(self) -> bytes:
        """The body bytes one socket read completed; b"" at the end of the body.

        Everything one read completed goes out as one piece: a relay that is behind sends fewer,
        larger writes instead of falling further behind. No async generator on this path: the
        relay calls it directly (see ``reader()``), so nothing is left for the GC to finalise.
        """
        conn = self._conn
        watched = self._transport._watching
        while not self._done:
            data = self._drain()
            if data:
                conn.deadline = math.inf  # not waiting: a slow client is not upstream silence
                return data
            if not self._done:
                self.arm(trio.current_time(), watched)
                try:
                    if self._chunked is None:
                        await conn.receive(NEXT_PART, watched)
                    elif conn.plain and watched and not conn.expired:
                        # conn.read's plain, watched case inline: two frames fewer held under every open
                        # stream and walked through on every read.
                        try:
                            await trio.lowlevel.wait_readable(conn.fd)
                            data = os.read(conn.fd, READ_SIZE)
                        except BlockingIOError:
                            continue
                        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                            raise conn.read_failed(exc, NEXT_PART) from exc
                        self._feed(data)
                    else:
                        self._feed(await conn.read(NEXT_PART, watched))
                except Interrupted:
                    self._pinged = True
                    raise
        return b""

    # -- the same reads, for a stream parked in a pump (proxy.stream.Pump): its waits happen there --------

    @property
    def parkable(self) -> bool:
        """The next read must wait (nothing decoded is left to hand out, the body goes on), and that wait may be a
        park: our chunked decoding of a plain socket, under the watchdog's deadlines."""
        conn = self._conn
        chunked = self._chunked
        if chunked is None or not conn.plain or not self._transport._watching:
            return False
        return not (conn.body or chunked.done or conn.expired or self._done)

    async def park(self, pump: Any, step: Callable[[float], object]) -> object:
        """``receive_chunk``'s wait as a park in ``pump`` (``proxy.stream.Pump.park``: what it returns), ``step``
        running there for each read; the connection's timeouts, heartbeats and shutdown wake it
        (``Connection.wake``)."""
        self.arm(trio.current_time())
        conn = self._conn
        conn.pump = pump
        try:
            return await pump.park(conn.fd, step)
        finally:
            conn.pump = None

    def arm(self, now: float, watched: bool = True) -> None:
        """Set the deadline of a wait that starts at ``now`` (a heartbeat cut the last one short: its silence, and
        deadline, go on); a parked stream's step calls it for its next wait."""
        conn = self._conn
        if self._pinged:
            self._pinged = False
            due = conn.deadline
        else:
            due = conn.deadline = now + self._idle_s
        if due < conn.queued and watched:
            self._transport._queue(conn, due)  # earlier than the heap knows: rare (first-byte → idle)

    def read_nowait(self) -> bytes | None:
        """What one read of the (readable) socket completed, as ``receive_chunk`` returns it; None if nothing yet."""
        conn = self._conn
        try:
            data = os.read(conn.fd, READ_SIZE)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise conn.read_failed(exc, NEXT_PART) from exc
        data = self._decode(data)
        if self._chunked.done:  # type: ignore[union-attr]
            self._done = True
        elif not data:
            return None
        conn.deadline = math.inf
        return data

    def woken(self) -> Exception:
        """Why ``Connection.wake`` ended a park: what the same wait in ``receive_chunk`` would have raised."""
        exc = self._conn.read_failed(trio.ClosedResourceError(), NEXT_PART)
        if type(exc) is Interrupted:
            self._pinged = True
        return exc

    def _feed(self, data: bytes) -> None:
        self._conn.body = self._decode(data)

    def _decode(self, data: bytes) -> bytes:
        """The body bytes one socket read's ``data`` completes (b"" at EOF is an error: the body has not ended)."""
        if not data:
            raise httpx.RemoteProtocolError("upstream closed the connection before the response ended")
        try:
            return self._chunked.feed(data)  # type: ignore[union-attr]
        except ChunkedError as exc:
            raise httpx.RemoteProtocolError(f"upstream sent invalid HTTP: {exc}") from exc

    @property
    def ended(self) -> bool:
        """The last ``receive_chunk`` returned the body's last bytes: the next one returns b"" without waiting."""
        return self._done

    def silent_since(self) -> float | None:
        """The trio time since which this response has been waiting for upstream bytes; None if not waiting."""
        deadline = self._conn.deadline
        if deadline == math.inf or self._done or self._closed:
            return None
        return deadline - self._idle_s

    def interrupt(self, reason: str) -> None:
        """Make the current wait for upstream bytes raise ``Interrupted(reason)`` in the reading task.

        HEARTBEAT acts only on a waiting response and leaves it usable (read again to go on);
        SHUTDOWN also stops any later read. Both wake the waiter through ``notify_closing``, like
        the watchdog's timeouts: no cancel scope per read.
        """
        conn = self._conn
        if self._done or self._closed or conn.expired:
            return
        waiting = conn.deadline != math.inf
        if reason == SHUTDOWN:
            conn.expired = SHUTDOWN
        elif waiting:
            conn.ping = True
        if waiting:
            conn.wake()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while chunk := await self.receive_chunk():
            yield chunk

    def _drain(self) -> bytes:
        conn = self._conn
        if self._chunked is not None:
            data, conn.body = conn.body, b""
            self._done = self._chunked.done
            return data
        parts = []
        while True:
            event = conn.next_event()
            if type(event) is h11.Data:
                parts.append(event.data)
            elif event is h11.NEED_DATA:
                break
            elif type(event) is h11.EndOfMessage:
                self._done = True
                break
            elif event is h11.PAUSED:
                break
            elif type(event) is h11.ConnectionClosed:
                raise httpx.RemoteProtocolError("upstream closed the connection before the response ended")
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        conn = self._conn
        reusable = self._done
        if self._chunked is not None:
            # h11 saw only the head; a fresh state machine serves the next request on this socket.
            reusable = reusable and self._keep_alive and not self._chunked.leftover
            if reusable:
                conn.h11 = conn.new_h11()
        await self._transport.release(conn, reusable=reusable)


class IteratorReader:
    """``receive_chunk``/``aclose`` over any httpx response (the httpcore transport's, say)."""

    __slots__ = ("_it",)

    def __init__(self, response: httpx.Response) -> None:
        self._it = response.aiter_raw()

    async def receive_chunk(self) -> bytes:
        try:
            return await self._it.__anext__()
        except StopAsyncIteration:
            return b""

    async def aclose(self) -> None:
        await self._it.aclose()

    ended = False  # not known here before the iterator says so

    def silent_since(self) -> float | None:
        return None  # not known here: no heartbeats over other transports

    def interrupt(self, reason: str) -> None:
        pass  # cannot be woken: on shutdown hypercorn's graceful timeout ends these


def reader(response: httpx.Response) -> ResponseStream | IteratorReader:
    """The cheapest way to read ``response``'s body chunk by chunk.

    Our transport's reader skips httpx's three async-generator layers per chunk; any other
    transport gets a plain wrapper around ``aiter_raw``.
    """
    found = response.extensions.get(READER)
    return found if found is not None else IteratorReader(response)


async def read_body(response: httpx.Response) -> bytes:
    """The whole body of ``response``: our transport's reads joined, without httpx's async-generator layers and
    decoder pipeline around each (a visible share of a non-streamed answer's CPU); through ``aread`` where a
    content-encoding must be undone or another transport answered."""
    found = response.extensions.get(READER)
    if found is None or response.headers.get("content-encoding", "identity") != "identity":
        return await response.aread()
    parts = []
    while part := await found.receive_chunk():
        parts.append(part)
    return b"".join(parts)  # bytes, whatever the reads gave (h11's are bytearrays): a lone bytes part is not copied
