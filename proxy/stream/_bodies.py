"""Response bodies that move upstream bytes to the client as they arrive.

Each body is an async iterator Quart sends from, with ``aclose`` closing the upstream response.
Quart calls ``aclose`` when the body ends *and* when the client leaves (hypercorn reports the
disconnect, quart-trio cancels the handler): that is what cancels the upstream request, so a
client that goes away stops the tokens it was paying for.

Plain classes rather than async generators: no generator frame per response, and no ``yield``
inside a cancel scope (PEP 789).

Where the connection allows it, the edge does not iterate a body: it sends the head, hands the body a writer
for the client's socket (:meth:`SSEBody.relay`, a :class:`ClientWriter`), and sends the end once the body
relayed itself (the end carrying the body's last piece). A client that leaves still cancels the task that runs it.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import httpx

from ..protocol import (
    DONE,
    MALFORMED_NDJSON,
    MALFORMED_SSE,
    SHUTDOWN_NDJSON,
    SHUTDOWN_SSE,
    EventSplitter,
    event_data,
    map_transport_error,
    sse_error_event,
    well_formed,
)
from ..state import Tap
from ..transport import HEARTBEAT, RESUME, WOKEN, Interrupted, IteratorReader, Pump, ResponseStream, reader

PING = b": ping\n\n"  # an SSE comment: clients ignore it, intermediaries see traffic


class ClientWriter(Protocol):
    """What a body writes its pieces with when the edge gives it the client's socket (proxy.edge's DirectWriter)."""

    def write_nowait(self, data: bytes) -> bytes | None:
        """Frame and write what the socket takes now: the rest (b"" when all went), None when the client is gone."""

    async def write_rest(self, rest: bytes) -> bool:
        """Write what ``write_nowait`` left, waiting for the client within its write deadline; False: gone."""

    def defer(self, data: bytes) -> bool:
        """Leave the body's last piece for the response's end to carry; False where it cannot."""


class SSEBody:
    """Upstream SSE bytes, passed through untouched as each read completes them: byte-identical events.

    Only whole events go out. A read that ends mid-event forwards the events it completed and keeps
    the partial one (the splitter holds it anyway) until a later read completes it, so what the client
    has is always at an event boundary: a heartbeat ping, an error event or the shutdown event can then
    be written at any moment and is an event of its own, and a failure mid-event drops the unfinished
    event (never sent) instead of sending half of it merged with the error. The alternatives were
    worse: a ping is due exactly when the upstream stalls, which may be mid-event, and a partial event
    already sent cannot be ended cleanly (a truncated JSON data line fails the client's SDK whatever
    follows it). Cost: nothing per event; per read, two length checks, and a copy only when a read
    split an event (the event's bytes then go out with the read that completes it, which is when a
    client could first parse it anyway). A whole read goes out as it came, with no added delay.

    Completed events are checked (``well_formed``: a JSON object per data event); the first one that
    is not ends the stream with an ``upstream_malformed`` error event in its place, since a client SDK
    would fail on it anyway. The check costs one split per read and one ``json.loads`` per event.
    """

    __slots__ = ("_response", "_reader", "_finished", "_splitter", "_out", "tap", "pump", "__weakref__")

    def __init__(self, response: httpx.Response, *, tap: Tap | None = None, pump: Pump | None = None) -> None:
        """``tap``: the request's observer, told of every piece written directly; ``pump``: the worker's
        :class:`Pump`, where directly written streams may be relayed without this task."""
        self._response = response
        self._reader = reader(response)
        self._finished = False
        self._splitter = EventSplitter()
        self._out: Any = None  # the ClientWriter, once direct writes began
        self.tap = tap
        self.pump = pump

    def __aiter__(self) -> SSEBody:
        return self

    async def __anext__(self) -> bytes:
        """The next piece for the client (the ASGI path: Quart sends it)."""
        while True:
            out = await self._next()
            if out is None:
                raise StopAsyncIteration
            if out:  # an NDJSON read may complete no whole line: read on
                return out

    async def relay(self, writer: ClientWriter) -> None:
        """Relay the whole body with ``writer``, here (every frame on this path is held under the open stream and
        walked on each chunk); returns at the body's end or when the client is gone."""
        self._out = writer
        reader = self._reader
        pump = self.pump
        while not self._finished:
            if pump is not None and pump.running and type(reader) is ResponseStream and reader.parkable:
                # Parked: the pump runs _step for each read (below) and hands the stream back only for
                # what needs this task: a write to wait for, the end, a wake-up (a timeout, heartbeat, shutdown).
                go = await reader.park(pump, self._step)
                if go is RESUME:
                    continue
                if go is WOKEN:
                    go = self._deliver(self._failed(reader.woken()))  # type: ignore[arg-type]
            else:
                # _next inline, for the same reason.
                try:
                    data = await reader.receive_chunk()
                except (httpx.TransportError, Interrupted) as exc:
                    out = self._failed(exc)
                else:
                    out = self._after(data)
                go = self._deliver(out)
            if go is False:
                break
            if go is not True and not await writer.write_rest(go):  # type: ignore[arg-type]
                self._gone()
                break

    def _step(self, now: float) -> object:
        """One read of a parked stream, in the pump's task: None to stay parked, else what ``_deliver`` said."""
        reader = self._reader
        try:
            data = reader.read_nowait()
        except (httpx.TransportError, Interrupted) as exc:
            out = self._failed(exc)
        else:
            if data is None:
                reader.arm(now)
                return None
            out = self._after(data)
        go = self._deliver(out)
        # A body that ended with nothing left to write goes back too: its task ends it, as ``_next`` would.
        if go is True and not (self._finished or reader.ended):
            reader.arm(now)
            return None
        return go

    def _deliver(self, out: bytes | None) -> bool | bytes:
        """Write one piece for the client: True (go on), False (the body is over), or the bytes the client's
        socket did not take yet (for ``write_rest``)."""
        if out is None:
            return False
        if not out:
            return True
        tap = self.tap
        writer = self._out
        last = self._finished
        if not last and self._reader.ended:  # what ``_next`` would return next comes without a read: join it
            self._finished = last = True
            tail = self._end()
            if tail:
                out += tail
        if tap is not None:
            tap.seen(out)
        if last and writer.defer(out):  # the terminator carries it: one write, not two
            return False
        rest = writer.write_nowait(out)
        if rest is None:
            self._gone()
            return False
        return rest or True

    def _gone(self) -> None:
        self._finished = True
        if self.tap is not None:
            self.tap.gone = True

    async def _next(self) -> bytes | None:
        """The next piece to send (b"": nothing yet, read again); None at the end."""
        if self._finished:
            return None
        try:
            data = await self._reader.receive_chunk()
        except (httpx.TransportError, Interrupted) as exc:
            return self._failed(exc)
        return self._after(data)

    def _after(self, data: bytes) -> bytes | None:
        """What a read's ``data`` becomes for the client (b"" at the end of the body: what ``_end`` adds)."""
        if data:
            return self._convert(data)
        self._finished = True
        return self._end()

    def _failed(self, exc: httpx.TransportError | Interrupted) -> bytes:
        if type(exc) is Interrupted:  # a heartbeat is due, or the relay is shutting down
            if exc.reason == HEARTBEAT:
                return self._ping()
            self._finished = True
            return self._shutdown()
        # The client already has a 200 and part of the answer: say what happened in-band.
        self._finished = True
        return self._error(exc)  # type: ignore[arg-type]

    def _convert(self, data: bytes) -> bytes:
        events, whole = self._splitter.feed_whole(data)
        for event in events:
            if not well_formed(event):
                self._finished = True
                return whole[: start_of(event, events, whole)] + MALFORMED_SSE
        return whole

    def _end(self) -> bytes | None:
        # The body ended without a blank line after its last event: those bytes go out as the upstream sent
        # them (nothing follows them; an SSE client drops an unterminated event anyway).
        return self._splitter.pending or None

    def _error(self, exc: httpx.TransportError) -> bytes:
        return sse_error_event(exc)

    def _ping(self) -> bytes:
        return PING

    def _shutdown(self) -> bytes:
        return SHUTDOWN_SSE

    def silent_since(self) -> float | None:
        return self._reader.silent_since()

    def interrupt(self, reason: str) -> None:
        self._reader.interrupt(reason)

    async def aclose(self) -> None:
        if isinstance(self._reader, IteratorReader):
            await self._reader.aclose()
        await self._response.aclose()


def start_of(event: bytes, events: list[bytes], whole: bytes) -> int:
    """Where ``event`` (one of ``events``, in order) starts in ``whole``, the bytes they were split from."""
    pos = 0
    for one in events:
        start = whole.find(one, pos)
        if one is event:
            return start
        pos = start + len(one)
    return 0


class NDJSONBody(SSEBody):
    """The seed's browser format: each upstream event's JSON on a line of its own, [DONE] dropped.

    Only completed events become lines, so the output always ends at a line boundary and an error or
    shutdown line is a line of its own.
    """

    __slots__ = ()

    def _convert(self, data: bytes) -> bytes:
        lines = []
        for event in self._splitter.feed(data):
            if not well_formed(event):
                self._finished = True
                lines.append(MALFORMED_NDJSON)
                break
            payload = event_data(event)
            if payload is not None and payload != DONE:
                lines.append(payload + b"\n")
        return b"".join(lines)

    def _end(self) -> bytes | None:
        rest = self._splitter.pending.strip()
        if rest:
            payload = event_data(rest)
            if payload is not None and payload != DONE:
                return payload + b"\n"
        return None

    def _error(self, exc: httpx.TransportError) -> bytes:
        _, body = map_transport_error(exc)
        return json.dumps(body, separators=(",", ":")).encode() + b"\n"

    def _ping(self) -> bytes:
        return b""  # NDJSON has no comment line; an empty read just means "keep reading"

    def _shutdown(self) -> bytes:
        return SHUTDOWN_NDJSON
