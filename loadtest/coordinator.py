"""The shards' meeting point: a barrier that hands out one start time, and an NTP-like clock exchange.

``loadtest coordinate --bind HOST:PORT --shards N`` (or ``--coordinator-bind`` on one shard) waits until all N
shards (``--shard i/N --coordinator HOST:PORT``) have joined, then tells each the same start instant, ``--lead``
seconds ahead on the coordinator's clock. Before a shard says it is ready it measures its clock against the
coordinator's the way NTP does: it sends its wall time ``t1``, the coordinator answers with its own ``t``, the
shard reads ``t4``; ``t - (t1 + t4) / 2`` is the offset of the coordinator's clock from the shard's, exact
when the two legs take equally long and never wrong by more than half the round trip. Of ``ROUNDS``
exchanges the one with the shortest round trip is kept. A shard then starts when *the coordinator's* clock
reads the start time, so machines whose clocks disagree still start together, to within that half round trip,
and the merge (:mod:`loadtest.merge`) reports each shard's offset and uncertainty.

Protocol: JSON lines over TCP, shard to coordinator ``{"hello": {"shard": i, "shards": N, "host": h}}``, then
``{"ping": t1}`` answered ``{"pong": t1, "t": t}`` (``ROUNDS`` times), then ``{"ready": {"offset_ns", "rtt_ns"}}``;
once every shard is ready the coordinator sends each ``{"start_ns": S}`` (its wall clock, ns since the epoch)
and closes. A refusal (wrong N, a shard index taken twice) is ``{"error": "..."}``. A shard that leaves before
the start gives its index back, so a restarted pod can join again.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from dataclasses import dataclass
from functools import partial

import trio

from loadtest.client import now_ns
from wire import url_host

__all__ = ["Agreement", "CoordinatorError", "Joined", "join", "serve_coordinator"]

ROUNDS = 8
CONNECT_WITHIN_S = 300.0  # how long a shard waits for its coordinator to come up
HELLO_TIMEOUT_S = 30.0
MAX_LINE = 4096


class CoordinatorError(RuntimeError):
    """The coordinator refused this shard, or could not be reached."""


@dataclass(frozen=True)
class Agreement:
    """What a shard learned from the coordinator."""

    start_unix_ns: int  # the agreed start on the coordinator's wall clock
    offset_ns: int  # coordinator's wall clock minus this shard's, at the best exchange
    rtt_ns: int  # that exchange's round trip: the offset is right to within half of it
    t0_ns: int  # the start on this process's monotonic clock


@dataclass(frozen=True)
class Joined:
    """A shard as the coordinator saw it."""

    shard: int
    host: str
    peer: str
    offset_ns: int
    rtt_ns: int


class _Lines:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = b""

    async def read(self) -> dict:
        while b"\n" not in self.buf:
            if len(self.buf) > MAX_LINE:
                raise CoordinatorError("line too long")
            data = await self.stream.receive_some(MAX_LINE)
            if not data:
                raise CoordinatorError("connection closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        try:
            msg = json.loads(line)
        except ValueError:
            raise CoordinatorError(f"not JSON: {line[:80]!r}") from None
        if not isinstance(msg, dict):
            raise CoordinatorError("not a JSON object")
        return msg

    async def send(self, msg: dict) -> None:
        await self.stream.send_all(json.dumps(msg).encode() + b"\n")


# --- the shard -----------------------------------------------------------------------------------------


async def _connect(host: str, port: int, within_s: float) -> trio.SocketStream:
    """Connect, retrying while the coordinator is not up yet (pods and hosts start in any order)."""
    deadline = trio.current_time() + within_s
    delay, said = 0.1, False
    while True:
        try:
            return await trio.open_tcp_stream(host, port)
        except OSError as exc:
            if trio.current_time() + delay > deadline:
                raise CoordinatorError(f"coordinator {host}:{port}: {exc} (tried for {within_s:g} s)") from exc
            if not said:
                print(f"loadtest: waiting for the coordinator at {host}:{port} ({exc})", file=sys.stderr, flush=True)
                said = True
        await trio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def join(host: str, port: int, shard: int, shards: int, *, rounds: int = ROUNDS,
               connect_within_s: float = CONNECT_WITHIN_S) -> Agreement:
    """Join the coordinator at ``host:port`` as shard ``shard`` of ``shards``; return when the start is known.

    Connecting is retried for ``connect_within_s`` (the coordinator may start after the shard). The returned
    ``t0_ns`` may lie in the past if the start message came late (a lead shorter than the delay).
    """
    stream = await _connect(host, port, connect_within_s)
    async with stream:
        lines = _Lines(stream)
        try:
            await lines.send({"hello": {"shard": shard, "shards": shards, "host": socket.gethostname()}})
            best: tuple[int, int] | None = None
            for _ in range(rounds):
                t1 = time.time_ns()
                await lines.send({"ping": t1})
                msg = await lines.read()
                t4 = time.time_ns()
                if "error" in msg:
                    raise CoordinatorError(str(msg["error"]))
                if msg.get("pong") != t1 or not isinstance(msg.get("t"), int):
                    raise CoordinatorError(f"unexpected answer {msg!r}")
                rtt, offset = t4 - t1, msg["t"] - (t1 + t4) // 2
                if best is None or rtt < best[0]:
                    best = (rtt, offset)
            assert best is not None
            rtt, offset = best
            await lines.send({"ready": {"offset_ns": offset, "rtt_ns": rtt}})
            msg = await lines.read()
        except (trio.BrokenResourceError, OSError) as exc:
            raise CoordinatorError(f"coordinator {host}:{port}: {exc}") from exc
        if "error" in msg:
            raise CoordinatorError(str(msg["error"]))
        start = msg.get("start_ns")
        if not isinstance(start, int):
            raise CoordinatorError(f"unexpected answer {msg!r}")
    # The start on our wall clock is start - offset; on the monotonic clock, that far from now.
    wall, mono = time.time_ns(), now_ns()
    return Agreement(start_unix_ns=start, offset_ns=offset, rtt_ns=rtt, t0_ns=mono + (start - offset - wall))


# --- the coordinator ----------------------------------------------------------------------------------


class _Barrier:
    def __init__(self, shards: int, lead_s: float, clock) -> None:
        self.clock = clock
        self.shards = shards
        self.lead_ns = int(lead_s * 1e9)
        self.ready: dict[int, Joined] = {}
        self.taken: set[int] = set()
        self.go = trio.Event()
        self.start_ns = 0
        self.sent: set[int] = set()
        self.all_sent = trio.Event()

    def arrive(self, joined: Joined) -> None:
        self.ready[joined.shard] = joined
        if len(self.ready) == self.shards:
            self.start_ns = self.clock() + self.lead_ns
            self.go.set()


async def _wait_for_start(barrier: _Barrier, stream: trio.SocketStream) -> bool:
    """Wait for the start; False if the shard left first (a ready shard says nothing more: EOF means gone)."""
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            try:
                await stream.receive_some(1)
            except (trio.BrokenResourceError, OSError):
                pass
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch)
        await barrier.go.wait()
        nursery.cancel_scope.cancel()
    return barrier.go.is_set()


async def _shard_conn(barrier: _Barrier, on_join, stream: trio.SocketStream) -> None:
    lines = _Lines(stream)
    shard: int | None = None
    peer = "?"
    try:
        try:
            host, port = stream.socket.getpeername()[:2]
            peer = f"{url_host(host)}:{port}"
        except OSError:
            pass
        with trio.move_on_after(HELLO_TIMEOUT_S) as hello_scope:
            hello = (await lines.read()).get("hello")
        if hello_scope.cancelled_caught or not isinstance(hello, dict):
            return
        i, n = hello.get("shard"), hello.get("shards")
        if n != barrier.shards or type(i) is not int or not 0 <= i < barrier.shards:
            await lines.send({"error": f"this coordinator runs {barrier.shards} shards; shard {i}/{n} does not fit"})
            return
        if i in barrier.taken or barrier.go.is_set():
            await lines.send({"error": f"shard {i}/{n} has joined already"})
            return
        shard = i
        barrier.taken.add(i)
        while True:
            msg = await lines.read()
            if "ping" in msg:
                await lines.send({"pong": msg["ping"], "t": barrier.clock()})
            elif isinstance(msg.get("ready"), dict):
                r = msg["ready"]
                joined = Joined(i, str(hello.get("host", "?")), peer, int(r.get("offset_ns", 0)),
                                int(r.get("rtt_ns", 0)))
                break
            else:
                await lines.send({"error": f"unexpected {msg!r}"})
                return
        barrier.arrive(joined)
        on_join(joined)
        if not await _wait_for_start(barrier, stream):
            return  # it left while waiting
        await lines.send({"start_ns": barrier.start_ns})
        barrier.sent.add(i)
        if len(barrier.sent) == barrier.shards:
            barrier.all_sent.set()
        shard = None  # it has its start: the index stays taken
    except (CoordinatorError, trio.BrokenResourceError, OSError):
        pass
    finally:
        if shard is not None:  # it left before the start: another may take its index
            barrier.taken.discard(shard)
            barrier.ready.pop(shard, None)
        await trio.aclose_forcefully(stream)


async def serve_coordinator(
    host: str, port: int, shards: int, *, lead_s: float = 2.0, on_join=None, clock=time.time_ns,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> tuple[int, list[Joined]]:
    """Serve until every one of ``shards`` shards has its start; returns ``(start_unix_ns, [Joined])``.

    ``task_status.started("HOST:PORT")`` once listening (port 0: the real one). ``on_join(Joined)`` is told of
    each shard as it becomes ready. ``clock`` is the reference (wall clock, ns since the epoch).
    """
    barrier = _Barrier(shards, lead_s, clock)
    async with trio.open_nursery() as nursery:
        handler = partial(_shard_conn, barrier, on_join or (lambda _j: None))
        listeners = await nursery.start(partial(trio.serve_tcp, handler, port, host=host, handler_nursery=nursery))
        task_status.started(f"{url_host(host)}:{listeners[0].socket.getsockname()[1]}")
        await barrier.all_sent.wait()
        nursery.cancel_scope.cancel()
    return barrier.start_ns, sorted(barrier.ready.values(), key=lambda j: j.shard)
