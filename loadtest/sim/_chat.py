"""``POST /v1/chat/completions``: the completion and stream shapes, timed by the request's plan, faults inline.

One chat response runs in the connection's task; a second task watches the socket meanwhile, so a client
that leaves cancels the response at once (counted as cancelled, with the time it left). The stream loop is
the sim's per-chunk path: one timer sleep, one render of precomputed bytes (:mod:`loadtest.simcontent`)
and one write per chunk, with the faults as comparisons inside the loop rather than calls around it.
"""

from __future__ import annotations

import time

import h11
import trio

from loadtest import simcontent
from loadtest.sim._http import RECEIVE_SIZE, Abort, ClosedErrors, send, send_error
from loadtest.sim._plan import Plan, schedule, truthy
from loadtest.sim._state import Sim
from wire import chunk_frame

__all__ = ["serve_chat"]


class _Exchange:
    """One chat response in progress, shared with its EOF-watch task."""

    __slots__ = ("scope", "watch_scope", "watch_done", "gone_ns")

    def __init__(self) -> None:
        self.scope = trio.CancelScope()  # the response; cancelled when the client leaves
        self.watch_scope = trio.CancelScope()
        self.watch_done = trio.Event()
        self.gone_ns: int | None = None  # monotonic ns when the client was seen leaving


async def serve_chat(sim: Sim, stream, conn: h11.Connection, nursery: trio.Nursery, body: dict, plan: Plan) -> None:
    """Answer one chat request per ``plan``; counts it started, then completed or cancelled."""
    start = trio.current_time()
    sim.stats.on_started()
    exchange = _Exchange()
    finished = False
    nursery.start_soon(_watch_eof, stream, conn, exchange)
    try:
        with exchange.scope:
            await _respond(sim, stream, conn, body, plan, start)
            finished = True
    except Abort:
        finished = True
        raise
    finally:
        exchange.watch_scope.cancel()
        if finished:
            sim.stats.on_completed()
        else:
            user = body.get("user") if isinstance(body.get("user"), str) else None
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


async def _respond(sim: Sim, stream, conn: h11.Connection, body: dict, plan: Plan, start: float) -> None:
    fault = plan.fault
    if fault == "status":
        return await send_error(stream, conn, plan.fault_arg)
    if fault == "stall":
        await trio.sleep_forever()

    model = body.get("model") if isinstance(body.get("model"), str) and body.get("model") else None
    model = model or simcontent.DEFAULT_MODEL
    messages = body.get("messages")
    digest = simcontent.request_hash(model, messages)
    if plan.deterministic:
        completion_id = "chatcmpl-" + digest[:12].hex()
        created = simcontent.DETERMINISTIC_CREATED
    else:
        completion_id = f"chatcmpl-{sim.rng.getrandbits(96):024x}"
        created = int(time.time())
    chunks = plan.chunks
    output = plan.output_tokens
    words = simcontent.tokens(digest, chunks * plan.tokens_per_chunk if output is None else output)
    prompt = simcontent.prompt_tokens(messages)
    times = schedule(plan, start, sim.rng)
    stamp = _zero if plan.deterministic else time.monotonic_ns
    chunked = conn.their_http_version != b"1.0"

    if not truthy(body.get("stream", False)):
        # Non-streaming: one body at ttft + (chunks - 1) * interval.
        content = simcontent.completion(
            completion_id=completion_id,
            created=created,
            model=model,
            words=words,
            chunks=chunks,
            tokens_per_chunk=plan.tokens_per_chunk,
            prompt=prompt,
            output_tokens=output,
        )
        await sim.timer.sleep_until(times[-1])
        if fault == "drop":
            raise Abort
        payload = b"{not json" if fault == "malformed" else content.render(stamp())
        head = [("content-type", "application/json"), ("content-length", str(len(payload)))]
        await send(stream, conn.send(h11.Response(status_code=200, headers=head)))
        if fault == "headers-then-stall":
            await trio.sleep_forever()
        if fault == "drip":
            await _drip(sim, stream, payload, plan.interval, frame=lambda p: conn.send(h11.Data(data=p)))
            conn.send(h11.EndOfMessage())  # no bytes with content-length
        else:
            await send(stream, conn.send(h11.Data(data=payload)) + conn.send(h11.EndOfMessage()))
        return

    include_usage = isinstance(body.get("stream_options"), dict) and truthy(
        body["stream_options"].get("include_usage")
    )
    events = simcontent.stream_events(
        completion_id=completion_id,
        created=created,
        model=model,
        words=words,
        chunks=chunks,
        tokens_per_chunk=plan.tokens_per_chunk,
        prompt=prompt,
        include_usage=include_usage,
        output_tokens=output,
    )
    head = [
        ("content-type", "text/event-stream"),
        ("cache-control", "no-cache"),
        ("x-sim-chunks", str(len(events))),
    ]
    if chunked:
        head.append(("transfer-encoding", "chunked"))
    await send(stream, conn.send(h11.Response(status_code=200, headers=head)))
    # Chunked framing by hand: h11's send(Data) costs a state-machine pass per chunk. h11 does not count
    # chunked bytes, so its state stays right and EndOfMessage still produces the terminator.
    frame = chunk_frame if chunked else bytes
    if fault == "headers-then-stall":
        await trio.sleep_forever()
    # Content chunks 0..N-2 alone; the last content chunk, the final chunk(s), [DONE] and the chunked
    # terminator in one write.
    last = max(chunks - 1, 0)
    timer = sim.timer
    for k in range(last):
        if fault == "drop" and k == plan.fault_arg:
            raise Abort
        await timer.sleep_until(times[k])
        if fault == "malformed" and k == plan.fault_arg:
            data = simcontent.MALFORMED_EVENT
        else:
            data = events[k].render(stamp())
        if fault == "drip":
            await _drip(sim, stream, data, plan.interval, frame=frame)
        else:
            await send(stream, frame(data))
    await timer.sleep_until(times[last])
    if fault == "drop":  # K >= last: the content chunks that are left, but no final chunk
        if plan.fault_arg > last and chunks:
            await send(stream, frame(events[last].render(stamp())))
        raise Abort
    ns = stamp()
    tail = [
        simcontent.MALFORMED_EVENT if fault == "malformed" and plan.fault_arg == k else events[k].render(ns)
        for k in range(last, len(events))
    ]
    tail.append(simcontent.DONE_EVENT)
    data = b"".join(tail)
    if fault == "drip":
        await _drip(sim, stream, data, plan.interval, frame=frame, end=conn.send(h11.EndOfMessage()))
    elif chunked:
        await send(stream, frame(data) + conn.send(h11.EndOfMessage()))
    else:
        await send(stream, data)
        conn.send(h11.EndOfMessage())


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
