"""``python -m bench.soakload``: the soak's mixed load (``bench.soak``), as a process of its own, for as long as asked.

A raw trio + h11 client, as ``bench.rawclient``, that keeps counters and nothing else: its memory stays flat
however many requests it sends, so its own growth never shows in what it measures. ``--connections C`` loops
(a closed loop: each sends its next request when the last ended) go through the kinds of ``MIX`` in turn:
streamed and not, NDJSON, a new connection per request, a client that leaves mid-stream, the upstream answering
500 or breaking mid-stream (the sim's faults, ``loadtest/sim/_plan.py``), a body that is not JSON; ``--kind NAME``
sends that kind alone, ``--requests N`` stops after N requests. ``--hold N`` instead opens N streams that each stay
open ``--hold-s`` seconds (the sim sends one chunk at once, the next one then), spread over ``--ramp-s``, waits for
all of them to end and stops.

Prints one JSON object when it ends: requests and outcomes by kind, the process's CPU seconds and wall time.
SIGINT/SIGTERM end it early, with the same summary.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11
import trio

from wire import raise_nofile_limit, wait_for_stop_signal

RECEIVE_BYTES = 65536
TIMEOUT_S = 60.0  # one request, start to end; a request past it is counted as "timeout"


@dataclass(frozen=True)
class Kind:
    name: str
    target: str
    body: bytes
    status: int = 200
    new_connection: bool = False
    leave: bool = False  # close the connection once the first body bytes came


def _chat(**fields: object) -> bytes:
    return json.dumps({"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "hi"}], **fields}).encode()


# One round of the mix; the shares are the counts. Non-streamed and streamed requests on kept-alive connections
# weigh most, as in a real relay's day; every other kind comes in every round.
MIX: tuple[Kind, ...] = (
    *[Kind("chat", "/v1/chat/completions", _chat())] * 4,
    *[Kind("stream", "/v1/chat/completions", _chat(stream=True))] * 4,
    Kind("ndjson", "/chat/completions", _chat(stream=True)),
    Kind("new connection", "/v1/chat/completions", _chat(stream=True), new_connection=True),
    Kind("client leaves", "/v1/chat/completions", _chat(stream=True, sim_chunks=50, sim_interval=0.01), leave=True),
    Kind("upstream 500", "/v1/chat/completions", _chat(sim_fault="status:500"), status=500),
    Kind("upstream breaks", "/v1/chat/completions", _chat(stream=True, sim_fault="drop:2")),
    Kind("bad JSON", "/v1/chat/completions", b"{not json", status=400),
)


class Counts:
    """Requests by kind and outcome: a few dozen integers whatever the run's length."""

    def __init__(self) -> None:
        self.by_kind: collections.Counter[tuple[str, str]] = collections.Counter()

    def add(self, kind: str, outcome: str) -> None:
        self.by_kind[kind, outcome] += 1

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())

    def summary(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for (kind, outcome), n in sorted(self.by_kind.items()):
            out.setdefault(kind, {})[outcome] = n
        return out


class Connection:
    """One kept-alive client connection, opened when first needed."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.stream: trio.SocketStream | None = None
        self.h11: h11.Connection | None = None

    async def request(self, kind: Kind) -> int | None:
        """Send ``kind`` and read its answer (to its end, or to its first body bytes); its status."""
        if self.stream is None:
            self.stream = await trio.open_tcp_stream(self.host, self.port)
            self.h11 = h11.Connection(h11.CLIENT)
        conn = self.h11
        assert conn is not None
        headers = [("host", self.host), ("content-type", "application/json"), ("content-length", str(len(kind.body)))]
        if kind.new_connection:
            headers.append(("connection", "close"))
        await self.stream.send_all(conn.send(h11.Request(method="POST", target=kind.target, headers=headers))
                                   + conn.send(h11.Data(data=kind.body)) + conn.send(h11.EndOfMessage()))  # fmt: skip
        status = None
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await self.stream.receive_some(RECEIVE_BYTES))
            elif type(event) is h11.Response:
                status = event.status_code
            elif type(event) is h11.Data and kind.leave:
                await self.close()
                return status
            elif type(event) in (h11.EndOfMessage, h11.ConnectionClosed):
                break
        if kind.new_connection or conn.our_state is h11.MUST_CLOSE or conn.their_state is not h11.DONE:
            await self.close()
        else:
            conn.start_next_cycle()
        return status

    async def close(self) -> None:
        if self.stream is not None:
            stream, self.stream = self.stream, None
            await stream.aclose()


async def loop(host: str, port: int, counts: Counts, until: float, offset: int, kinds: tuple[Kind, ...] = MIX,
               left: list[int] | None = None) -> None:  # fmt: skip
    """One closed-loop client: ``kinds`` in turn (from ``offset``) until ``until`` (trio time), or until the
    requests ``left`` (shared by every loop) are all sent."""
    conn = Connection(host, port)
    i = offset
    try:
        while trio.current_time() < until:
            if left is not None:
                if left[0] <= 0:
                    break
                left[0] -= 1
            kind = kinds[i % len(kinds)]
            i += 1
            outcome = "timeout"
            with trio.move_on_after(TIMEOUT_S):
                try:
                    status = await conn.request(kind)
                    outcome = "ok" if status == kind.status else f"status {status}"
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError) as exc:
                    outcome = type(exc).__name__
            if outcome != "ok":
                await conn.close()
            counts.add(kind.name, outcome)
    finally:
        await conn.close()


async def hold_one(host: str, port: int, body: bytes, counts: Counts) -> None:
    conn = Connection(host, port)
    outcome = "timeout"
    try:
        status = await conn.request(Kind("hold", "/v1/chat/completions", body, new_connection=True))
        outcome = "ok" if status == 200 else f"status {status}"
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError) as exc:
        outcome = type(exc).__name__
    finally:
        await conn.close()
        counts.add("hold", outcome)


async def run(args: argparse.Namespace, counts: Counts) -> None:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    async with trio.open_nursery() as outer:
        outer.start_soon(_stop_on_signal, outer.cancel_scope)
        async with trio.open_nursery() as nursery:
            if args.hold:
                body = _chat(stream=True, sim_chunks=2, sim_interval=args.hold_s)
                for _ in range(args.hold):
                    nursery.start_soon(hold_one, host, port, body, counts)
                    await trio.sleep(args.ramp_s / args.hold)
            else:
                until = trio.current_time() + args.duration
                kinds = tuple(k for k in MIX if k.name == args.kind)[:1] if args.kind else MIX
                left = [args.requests] if args.requests else None
                for c in range(args.connections):
                    nursery.start_soon(loop, host, port, counts, until, c * 5, kinds, left)
        outer.cancel_scope.cancel()


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    await wait_for_stop_signal()
    scope.cancel()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soakload", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="the relay's root URL (http://HOST:PORT)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of the mix")
    p.add_argument("--connections", type=int, default=20, help="closed loops at once")
    p.add_argument("--kind", choices=sorted({k.name for k in MIX}), help="only this kind of the mix")
    p.add_argument("--requests", type=int, default=0, help="stop after this many requests (and --duration)")
    p.add_argument("--hold", type=int, default=0, help="instead of the mix: this many streams held open at once")
    p.add_argument("--hold-s", type=float, default=30.0, help="how long each held stream stays open")
    p.add_argument("--ramp-s", type=float, default=10.0, help="the held streams open over this long")
    args = p.parse_args(argv)
    raise_nofile_limit()
    counts = Counts()
    cpu0, wall0 = time.process_time(), time.monotonic()
    trio.run(run, args, counts)
    print(json.dumps({
        "requests": counts.total, "by_kind": counts.summary(), "cpu_s": round(time.process_time() - cpu0, 2),
        "wall_s": round(time.monotonic() - wall0, 2),
    }), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
