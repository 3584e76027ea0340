"""A non-streaming HTTP/1.1 load client: trio + h11 and nothing else, closed loop or open loop.

Closed loop (:func:`closed_loop`): ``connections`` kept-alive connections, each sending ``per_connection``
requests one after another; what it measures is CPU per request on the server side, so it only counts.

Open loop (:func:`open_loop`): requests due at a fixed rate, each sent at its due time on an idle kept-alive
connection (a new one when none is idle), whatever the earlier ones are doing; its latency is counted from the
instant it was due, not from when it was sent, so a client or server that falls behind shows as latency instead of
a slower offered rate (the coordinated-omission trap of closed-loop tools). Every request ends within
``timeout_s``; the run ends when the last one did.

The request is built once (its bytes are the same for every call); responses are parsed by h11, bodies drained
and dropped. Times are ``time.perf_counter_ns`` (trio's clock reads the same counter).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import h11
import trio

RECEIVE_BYTES = 65536


def request_bytes(host: str, port: int, path: str, body: bytes, api_key: str | None = None) -> bytes:
    headers = [("Host", f"{host}:{port}"), ("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    if api_key:
        headers.append(("Authorization", f"Bearer {api_key}"))
    conn = h11.Connection(h11.CLIENT)
    return conn.send(h11.Request(method="POST", target=path, headers=headers)) + conn.send(h11.Data(data=body)) + \
        conn.send(h11.EndOfMessage())  # fmt: skip


class Connection:
    """One kept-alive client connection: send the prepared request, read one whole response."""

    __slots__ = ("stream", "h11")

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)

    async def call(self, data: bytes) -> int:
        """Send ``data`` (a whole request) and read its response; its status. Raises on a broken connection."""
        conn = self.h11
        # The request's bytes are prepared once; h11 is told of the request so it frames the response.
        conn.send(h11.Request(method="POST", target="/", headers=[("Host", "x"), ("Content-Length", "0")]))
        conn.send(h11.EndOfMessage())
        await self.stream.send_all(data)
        status = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                chunk = await self.stream.receive_some(RECEIVE_BYTES)
                conn.receive_data(chunk)
            elif type(event) is h11.Response:
                status = event.status_code
            elif type(event) is h11.EndOfMessage:
                break
            elif type(event) is h11.ConnectionClosed:
                raise trio.BrokenResourceError("closed before the response ended")
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            raise trio.BrokenResourceError("the server closes this connection")
        return status


@dataclass
class Outcome:
    """What a run saw: each finished request's latency in ns (from its due time in the open loop), status counts,
    failures by kind, and the client's own CPU seconds."""

    latencies_ns: list[int] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    wall_s: float = 0.0
    client_cpu_s: float = 0.0
    connections: int = 0

    def fail(self, kind: str) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)


async def _connect(host: str, port: int) -> Connection:
    return Connection(await trio.open_tcp_stream(host, port))


async def closed_loop(host: str, port: int, data: bytes, connections: int, per_connection: int) -> Outcome:
    """``connections`` connections x ``per_connection`` requests each, back to back."""
    out = Outcome(connections=connections)

    async def one_connection() -> None:
        try:
            conn = await _connect(host, port)
        except OSError:
            out.fail("connect")
            return
        async with conn.stream:
            for _ in range(per_connection):
                t0 = time.perf_counter_ns()
                try:
                    status = await conn.call(data)
                except (OSError, trio.BrokenResourceError, h11.ProtocolError):
                    out.fail("broken")
                    return
                out.latencies_ns.append(time.perf_counter_ns() - t0)
                out.statuses[status] = out.statuses.get(status, 0) + 1

    cpu0, wall0 = time.process_time(), time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(one_connection)
    out.sent = sum(out.statuses.values()) + sum(out.failures.values())
    out.wall_s, out.client_cpu_s = time.perf_counter() - wall0, time.process_time() - cpu0
    return out


async def open_loop(host: str, port: int, data: bytes, rate: float, duration_s: float, *, timeout_s: float = 10.0,
                    max_connections: int = 2_000) -> Outcome:  # fmt: skip
    """Requests due every ``1 / rate`` s for ``duration_s``; each one's latency from its due time."""
    out = Outcome()
    idle: list[Connection] = []
    opened = 0
    total = int(rate * duration_s)
    period_ns = 1e9 / rate

    async def one(due_ns: int) -> None:
        nonlocal opened
        with trio.move_on_after(timeout_s) as scope:
            conn = idle.pop() if idle else None
            if conn is None:
                if opened >= max_connections:
                    out.fail("client_connections_exhausted")
                    return
                opened += 1
                try:
                    conn = await _connect(host, port)
                except OSError:
                    opened -= 1
                    out.fail("connect")
                    return
            try:
                status = await conn.call(data)
            except (OSError, trio.BrokenResourceError, h11.ProtocolError):
                opened -= 1
                conn.stream.socket.close()
                out.fail("broken")
                return
            out.latencies_ns.append(time.perf_counter_ns() - due_ns)
            out.statuses[status] = out.statuses.get(status, 0) + 1
            idle.append(conn)
        if scope.cancelled_caught:
            opened -= 1
            if conn is not None:
                conn.stream.socket.close()
            out.fail("timeout")

    cpu0, wall0 = time.process_time(), time.perf_counter()
    async with trio.open_nursery() as nursery:
        start_ns = time.perf_counter_ns() + 20_000_000
        for i in range(total):
            due_ns = start_ns + int(i * period_ns)
            await trio.sleep_until((due_ns - time.perf_counter_ns()) / 1e9 + trio.current_time())
            nursery.start_soon(one, due_ns)
            out.sent += 1
    out.wall_s, out.client_cpu_s = time.perf_counter() - wall0, time.process_time() - cpu0
    out.connections = opened
    for conn in idle:
        conn.stream.socket.close()
    return out
