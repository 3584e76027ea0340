"""Sending an answer on time, whatever its protocol: a stream's events at the plan's times, or one body, faults inline.

A route (:mod:`~loadtest.sim._chat`, :mod:`~loadtest.sim._messages`, :mod:`~loadtest.sim._responses`) turns a request
into a :class:`Streamed` (every event's bytes, and which events go out at each timed send) or a :class:`Whole` body,
purely; :func:`serve_reply` sends it. The answer runs in the connection's task; a second task watches the socket
meanwhile, so a client that leaves cancels the answer at once (counted as cancelled, with the time it left).

The stream loop is the sim's per-chunk path: one timer sleep, one ``bytes.join`` of precomputed parts around the
send stamp, and one write per timed send, with the faults as one integer comparison inside the loop rather than
calls around it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import h11
import trio

from loadtest import simcontent
from loadtest.sim._http import RECEIVE_SIZE, Abort, ClosedErrors, send, send_simple
from loadtest.sim._plan import Plan, schedule
from loadtest.sim._state import Sim
from wire import chunk_frame

__all__ = ["Streamed", "Whole", "batches", "layout", "serve_reply"]


@dataclass(slots=True)
class Streamed:
    """A streamed answer: ``events`` in order, ``firsts[k]`` the index of the first event of timed send ``k`` (the
    last send takes every event from its first on, then ``done``). ``content_end``: the events before it carry
    content; a ``drop`` past the last send sends up to there and no further."""

    events: list[simcontent.Stamped]
    firsts: list[int]
    content_end: int
    done: bytes = b""  # after the last event: chat's [DONE]
    malformed: bytes = simcontent.MALFORMED_EVENT  # an event that is not JSON, in the protocol's framing
    error: bytes = b""  # the protocol's error event, for the error:K fault


@dataclass(slots=True)
class Whole:
    """A non-streamed answer: one JSON body, stamped once."""

    body: simcontent.Stamped


def layout(preamble: list, blocks: list[tuple[list, list, list]], tail: list) -> tuple[list, list[int], int]:
    """Events of a protocol that opens and closes blocks around their deltas, grouped into timed sends.

    ``blocks``: (opening events, delta events, closing events) each. Every delta is a timed send; a block's opening
    goes out with its first delta, its closing with the next block's first delta (or with the end), the
    ``preamble`` with the first send, the ``tail`` with the last. Returns (events, firsts, content_end) for
    :class:`Streamed`; with no delta at all, one send carries everything.
    """
    events = list(preamble)
    firsts: list[int] = []
    closing: list = []
    for opening, deltas, close in blocks:
        for k, delta in enumerate(deltas):
            if firsts or k:
                firsts.append(len(events))
            else:
                firsts.append(0)
            if k == 0:
                events += closing
                events += opening
                closing = close
            events.append(delta)
        if not deltas:  # a block without deltas opens and closes with whatever comes next
            events += closing
            events += opening
            closing = close
    content_end = len(events)
    events += closing
    events += tail
    return events, firsts or [0], content_end


class _Exchange:
    """One answer in progress, shared with its EOF-watch task."""

    __slots__ = ("scope", "watch_scope", "watch_done", "gone_ns")

    def __init__(self) -> None:
        self.scope = trio.CancelScope()  # the response; cancelled when the client leaves
        self.watch_scope = trio.CancelScope()
        self.watch_done = trio.Event()
        self.gone_ns: int | None = None  # monotonic ns when the client was seen leaving


async def serve_reply(
    sim: Sim,
    stream,
    conn: h11.Connection,
    nursery: trio.Nursery,
    plan: Plan,
    reply: Streamed | Whole,
    *,
    start: float,
    error_response: tuple[int, bytes, list] | None = None,
    user: str | None = None,
) -> None:
    """Send ``reply`` per ``plan`` (timed from ``start``); counts it started, then completed or cancelled.

    ``error_response``: (status, body, extra headers) to answer instead, for the ``status:N`` fault.
    ``user``: the request's user, recorded with a cancel so a client can pair its close with it.
    """
    sim.stats.on_started()
    exchange = _Exchange()
    finished = False
    nursery.start_soon(_watch_eof, stream, conn, exchange)
    try:
        with exchange.scope:
            if error_response is not None:
                await send_simple(stream, conn, *error_response)
            elif plan.fault == "stall":
                await trio.sleep_forever()
            elif isinstance(reply, Whole):
                await _whole(sim, stream, conn, plan, reply, start)
            else:
                await _stream(sim, stream, conn, plan, reply, start)
            finished = True
    except Abort:
        finished = True
        raise
    finally:
        exchange.watch_scope.cancel()
        if finished:
            sim.stats.on_completed()
        else:
            sim.stats.on_cancelled(exchange.gone_ns or time.monotonic_ns(), user)
        # The watcher must have stopped reading before anyone else reads from this stream.
        with trio.CancelScope(shield=True):
            await exchange.watch_done.wait()
    if not finished:
        raise trio.BrokenResourceError("client went away")


async def _watch_eof(stream, conn: h11.Connection, exchange: _Exchange) -> None:
    """Read while the response is in progress, so a client's EOF cancels it at once."""
    try:
        with exchange.watch_scope:
            try:
                data = await stream.receive_some(RECEIVE_SIZE)
            except ClosedErrors:
                data = b""
            if data:
                # A pipelined next request: keep it for the next cycle and stop watching.
                conn.receive_data(data)
            else:
                exchange.gone_ns = time.monotonic_ns()
                exchange.scope.cancel()
    finally:
        exchange.watch_done.set()


async def _whole(sim: Sim, stream, conn: h11.Connection, plan: Plan, reply: Whole, start: float) -> None:
    """Non-streaming: one body at ttft + (chunks - 1) * interval."""
    fault = plan.fault
    await sim.timer.sleep_until(schedule(plan, start, sim.rng)[-1])
    if fault == "drop":
        raise Abort
    stamp = 0 if plan.deterministic else time.monotonic_ns()
    payload = b"{not json" if fault == "malformed" else reply.body.render(stamp)
    head = [("content-type", "application/json"), ("content-length", str(len(payload)))]
    await send(stream, conn.send(h11.Response(status_code=200, headers=head)))
    if fault == "headers-then-stall":
        await trio.sleep_forever()
    if fault == "drip":
        await _drip(sim, stream, payload, plan.interval, frame=lambda p: conn.send(h11.Data(data=p)))
        conn.send(h11.EndOfMessage())  # no bytes with content-length
    else:
        await send(stream, conn.send(h11.Data(data=payload)) + conn.send(h11.EndOfMessage()))


def batches(reply: Streamed, malformed_at: int = -1) -> list[list[bytes]]:
    """Each timed send's bytes as parts to join with the send stamp: ``stamp.join(parts)`` renders them all.

    Neighbouring events share a part (one event's suffix + the next one's prefix), so a send costs one join
    however many events it carries. ``malformed_at``: the index of the event sent as ``reply.malformed`` instead.
    """
    out = []
    events = reply.events
    ends = [*reply.firsts[1:], len(events)]
    for first, end in zip(reply.firsts, ends, strict=True):
        out.append(_parts(events, first, end, reply.malformed, malformed_at))
    out[-1][-1] += reply.done
    return out


def _parts(events: list, first: int, end: int, malformed: bytes, malformed_at: int) -> list[bytes]:
    parts: list[bytes] = []
    pending = b""
    for i in range(first, end):
        if i == malformed_at:
            pending += malformed
        else:
            parts.append(pending + events[i].prefix)
            pending = events[i].suffix
    parts.append(pending)
    return parts


async def _stream(sim: Sim, stream, conn: h11.Connection, plan: Plan, reply: Streamed, start: float) -> None:
    fault = plan.fault
    times = schedule(plan, start, sim.rng, len(reply.firsts))
    stamp = _zero if plan.deterministic else time.monotonic_ns
    chunked = conn.their_http_version != b"1.0"
    head = [
        ("content-type", "text/event-stream"),
        ("cache-control", "no-cache"),
        ("x-sim-chunks", str(len(reply.events))),
    ]
    if chunked:
        head.append(("transfer-encoding", "chunked"))
    await send(stream, conn.send(h11.Response(status_code=200, headers=head)))
    # Chunked framing by hand: h11's send(Data) costs a state-machine pass per chunk. h11 does not count
    # chunked bytes, so its state stays right and EndOfMessage still produces the terminator.
    frame = chunk_frame if chunked else bytes
    if fault == "headers-then-stall":
        await trio.sleep_forever()
    sends = batches(reply, plan.fault_arg if fault == "malformed" else -1)
    # Timed sends 0..N-2 alone; the last one with the stream's end and the chunked terminator in one write.
    last = len(sends) - 1
    cut = plan.fault_arg if fault in ("drop", "error") else -1  # the send a drop or an error event replaces
    timer = sim.timer
    for k in range(last):
        if k == cut:
            return await _cut(sim, stream, conn, plan, reply, times[k], frame, None)
        await timer.sleep_until(times[k])
        data = (b"%d" % stamp()).join(sends[k])
        if fault == "drip":
            await _drip(sim, stream, data, plan.interval, frame=frame)
        else:
            await send(stream, frame(data))
    if cut >= last:  # past the last send: the content that is left, then the cut
        content = _parts(reply.events, reply.firsts[last], reply.content_end, b"", -1) if cut > last else None
        return await _cut(sim, stream, conn, plan, reply, times[last], frame, content)
    await timer.sleep_until(times[last])
    data = (b"%d" % stamp()).join(sends[last])
    end = conn.send(h11.EndOfMessage())  # chunked: the terminator; HTTP/1.0: nothing, the close ends the body
    if fault == "drip":
        await _drip(sim, stream, data, plan.interval, frame=frame, end=end)
    else:
        await send(stream, frame(data) + end)


async def _cut(sim: Sim, stream, conn: h11.Connection, plan: Plan, reply: Streamed, at: float, frame,
               before: list[bytes] | None) -> None:
    """The stream cut at one send: ``drop`` closes the connection abruptly (after the events of ``before``, parts
    as :func:`batches` makes them, if any); ``error`` sends them and the protocol's error event at the send's time,
    then ends the body cleanly."""
    if before is not None and before == [b""]:
        before = None
    if plan.fault == "drop" and before is None:
        raise Abort
    await sim.timer.sleep_until(at)
    data = b"" if before is None else (b"%d" % (0 if plan.deterministic else time.monotonic_ns())).join(before)
    if plan.fault == "drop":
        await send(stream, frame(data))
        raise Abort
    await send(stream, frame(data + reply.error) + conn.send(h11.EndOfMessage()))


async def _drip(sim: Sim, stream, data: bytes, spread: float, *, frame, end: bytes = b"") -> None:
    """Send ``data`` in pieces of at most 7 bytes, each framed by ``frame``, spread evenly over ``spread`` s.

    ``end`` goes out with the last piece: nothing may await after a response's last byte, or a client
    that leaves as soon as it has the whole response would be counted as cancelled.
    """
    pieces = [data[i : i + 7] for i in range(0, len(data), 7)]
    step = spread / len(pieces) if pieces else 0.0
    at = trio.current_time()
    for i, piece in enumerate(pieces):
        if i == len(pieces) - 1:
            await send(stream, frame(piece) + end)
            return
        await send(stream, frame(piece))
        at += step
        await sim.timer.sleep_until(at)
    await send(stream, end)


def _zero() -> int:
    return 0
