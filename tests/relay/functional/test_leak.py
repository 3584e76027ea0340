"""What a relay keeps of the requests it served: nothing, whatever they were.

A relay that runs for months without a restart must not grow with the requests it has served. After a warm-up,
N more requests of one kind (streamed or not, NDJSON, pass-through, a new connection each, a client that leaves,
an upstream that fails or breaks mid-stream, a refusal, a fallback, a client key's limits, with the limits counted
in this worker or in Redis) through a real relay on real sockets must leave no more live objects than a small fixed
bound (tests/support/retained.py: live objects by type, allocated bytes by line, after a collection), and
``/healthz``'s counts (requests in flight, streams, open connections, tasks) back at their idle values. Nor may a
request leave a cycle for the collector: refcounting frees it when it ends.

The relay and the client run in this process, so the censuses see all of it; the simulated upstream is a child
process (it keeps its last requests for its tests: not the relay's growth). trio keeps the ended cancel scopes'
deadlines in its own heap until they pass (it prunes them at twice the live ones plus a thousand): before each census
the clock jumps past the short deadlines a request leaves there (Quart's body timeout, the keep-alive, the connect
timeout), not past the relay's own (first byte, heartbeats), so what the relay itself keeps of a request still shows.
"""

from __future__ import annotations

import collections
import gc
import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import h11
import pytest
import trio
import trio.testing

from proxy.observability import LOGGER
from tests.conftest import start_relay
from tests.support.children import start_child, stop_child
from tests.support.retained import Census, Retained, grown

WARM_UP = 10  # requests of a kind before the first census: pools filled, caches made, code paths run once
REQUESTS = 48  # requests of a kind between the two censuses
MOST_OBJECTS = 16  # live objects more after them, at most: a leak of one object per request shows three times over
MOST_BYTES = 24 * 1024  # allocated bytes more after them, at most: 512 per request, and room for one body read
# (~11 KB) that a pooled upstream connection may still hold at one census and not the other
SETTLE_S = 5.0  # the longest wait for the relay's counts to come back before a census, in seconds
JUMP_S = 100.0  # past Quart's body timeout (60 s), the keep-alive (set below), the connect timeout; short of 300 s

CHAT = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**CHAT, "stream": True}


class Kind:
    """One kind of request: what is sent, on which connection, and whether the client reads the whole answer."""

    def __init__(self, name: str, method: str, target: str, body: dict | bytes | None = None, *, key: str = "",
                 status: int | tuple[int, ...] = 200, new_connection: bool = False,
                 leave: bool = False) -> None:  # fmt: skip
        self.name, self.method, self.target = name, method, target
        self.statuses = status if isinstance(status, tuple) else (status,)
        self.body = json.dumps(body).encode() if isinstance(body, dict) else body
        self.key = key
        self.new_connection = new_connection or leave
        self.leave = leave  # the client closes its connection once the first body bytes came

    def head(self, host: str) -> h11.Request:
        headers = [("host", host)]
        if self.body is not None:
            headers += [("content-type", "application/json"), ("content-length", str(len(self.body)))]
        if self.key:
            headers.append(("authorization", f"Bearer {self.key}"))
        if self.new_connection:
            headers.append(("connection", "close"))
        return h11.Request(method=self.method, target=self.target, headers=headers)

    def __repr__(self) -> str:
        return self.name


async def send(root: str, kind: Kind, n: int) -> bytes:
    """``n`` requests of ``kind`` one after another, each read to its end (or left at its first bytes); the last
    one's body."""
    host, port = root.removeprefix("http://").split(":")
    stream = conn = None
    body = b""
    try:
        for _ in range(n):
            if stream is None:
                stream = await trio.open_tcp_stream(host, int(port))
                conn = h11.Connection(h11.CLIENT)
            out = conn.send(kind.head(root))
            if kind.body is not None:
                out += conn.send(h11.Data(data=kind.body))
            await stream.send_all(out + conn.send(h11.EndOfMessage()))
            status = None
            body = b""
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif type(event) is h11.Response:
                    status = event.status_code
                elif type(event) is h11.Data:
                    body += event.data
                    if kind.leave:
                        break
                elif type(event) in (h11.EndOfMessage, h11.ConnectionClosed):
                    break
            assert status in kind.statuses, (kind, status)
            if kind.new_connection or conn.our_state is h11.MUST_CLOSE or conn.their_state is not h11.DONE:
                await stream.aclose()
                stream = None
            else:
                conn.start_next_cycle()
    finally:
        if stream is not None:
            await stream.aclose()
    return body


PROBE = Kind("healthz", "GET", "/healthz", new_connection=True)


async def worker_counts(root: str) -> dict:
    """``/healthz``'s counts (in flight, streams, open connections, tasks), the probe's own request and connection
    among them."""
    counts = json.loads(await send(root, PROBE, 1))
    assert counts.pop("status") == "ok"
    return counts


@pytest.fixture
def sim_url():
    """The simulated upstream in a child process: answers at once, five chunks."""
    argv = [sys.executable, "-m", "loadtest.sim", "--bind", "127.0.0.1:0", "--ttft", "0", "--interval", "0",
            "--chunks", "5"]  # fmt: skip
    proc, url = start_child(argv, "sim listening on ", dict(os.environ), None)
    try:
        yield url
    finally:
        stop_child(proc)


class Dropped(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)  # the line is made, then dropped


@contextmanager
def relay_logs_dropped() -> Iterator[None]:
    """The relay's log lines (the access log, a fallback's warning) made and dropped: pytest keeps every record a
    test logs (on the root logger, and on each logger that does not propagate), and those would be what grows."""
    saved = []
    for name in ("moonrelay", LOGGER):
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.propagate))
        logger.handlers[:] = [Dropped()]
        logger.propagate = False
    try:
        yield
    finally:
        for logger, handlers, propagate in saved:
            logger.handlers[:] = handlers
            logger.propagate = propagate


async def assert_keeps_nothing(clock: trio.testing.MockClock, root: str, kinds: list[Kind]) -> None:
    """Each kind in turn: a warm-up, a census, ``REQUESTS`` more, a census; what grew is within the bounds, and
    ``/healthz``'s counts are back to their idle values.

    tracemalloc runs from the warm-up to the second census only (what a request frees was allocated under it, so
    the figures are net), and the warm-up is what lets a kind replace the previous kind's objects first."""
    retained = Retained()
    failures = []
    await trio.testing.wait_all_tasks_blocked()
    idle = await worker_counts(root)
    assert idle["in_flight"] == idle["connections"] == 1 and idle["streams"] == 0, idle
    with relay_logs_dropped():
        for kind in kinds:
            retained.start()
            try:
                await send(root, kind, WARM_UP)
                before = await census(clock, retained, root, idle)
                await send(root, kind, REQUESTS)
                growth = grown(before, await census(clock, retained, root, idle))
            finally:
                retained.stop()
            if growth.objects > MOST_OBJECTS or growth.bytes > MOST_BYTES:
                failures.append(f"{REQUESTS} requests '{kind}' kept {growth.report()}")
            counts = await worker_counts(root)
            if counts != idle:
                failures.append(f"after {kind}: /healthz {counts}, idle {idle}")
    assert not failures, "\n".join(failures)


async def census(clock: trio.testing.MockClock, retained: Retained, root: str, idle: dict) -> Census:
    """What is alive once the relay has handled everything sent (the last response's end, the client's close, a
    client that left: its slots given back, in Redis too), then once the short deadlines that left (hypercorn's
    keep-alive timer with the fast paths off included) have passed.

    A task waiting for Redis's answer, or a connection task that has yet to read its client's close, counts as
    blocked to trio, so the relay's own counts say when it is done: ``/healthz`` back at its idle values (a call
    leaves them once its slots are back, a connection once it closed). Counts that never come back are reported by
    the caller, after at most ``SETTLE_S``."""
    with trio.move_on_after(SETTLE_S):
        while await worker_counts(root) != idle:
            await trio.testing.wait_all_tasks_blocked()
    await trio.testing.wait_all_tasks_blocked()
    clock.jump(JUMP_S)
    await trio.testing.wait_all_tasks_blocked()
    return retained.take()


@pytest.mark.slow
async def test_requests_of_every_kind_leave_nothing_behind(nursery, mock_clock, sim_url):
    mock_clock.rate = 1.0  # real time, plus the jumps before each census
    root = await start_relay(nursery, sim_url, passthrough="on", keep_alive_s=5.0, heartbeat_s=150.0)
    stream = {**CHAT, "stream": True}
    kinds = [
        Kind("chat", "POST", "/v1/chat/completions", CHAT),
        Kind("chat stream", "POST", "/v1/chat/completions", stream),
        Kind("NDJSON stream", "POST", "/chat/completions", stream),
        Kind("chat stream, a new connection each", "POST", "/v1/chat/completions", stream, new_connection=True),
        Kind("client leaves mid-stream", "POST", "/v1/chat/completions", {**stream, "sim_chunks": 50}, leave=True),
        Kind("upstream answers 500", "POST", "/v1/chat/completions", {**CHAT, "sim_fault": "status:500"},
             status=500),  # fmt: skip
        Kind("upstream breaks mid-stream", "POST", "/v1/chat/completions", {**stream, "sim_fault": "drop:2"}),
        Kind("invalid JSON", "POST", "/v1/chat/completions", b"{not json", status=400),
        Kind("no such route", "GET", "/nowhere", status=404),
        Kind("models", "GET", "/v1/models"),
        Kind("pass-through", "POST", "/v1/embeddings", {"model": "moonshot-v1-embedding", "input": "hi"}),
        Kind("metrics", "GET", "/metrics"),
        Kind("healthz", "GET", "/healthz"),
    ]
    await assert_keeps_nothing(mock_clock, root, kinds)


def refused_url() -> str:
    """A base URL whose port nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.mark.slow
@pytest.mark.parametrize("state", ["local", "redis"])
async def test_fallbacks_and_client_limits_leave_nothing_behind(nursery, mock_clock, sim_url, tmp_path, request,
                                                                state):  # fmt: skip
    """The same with several upstreams (an unreachable one falling back to the sim, one without a fallback whose
    circuit opens), upstream slots, and client keys with limits, counted here or in a real Redis."""
    mock_clock.rate = 1.0
    keys = tmp_path / "keys.txt"
    keys.write_text("sk-open name=open concurrent=50\nsk-shut name=shut rpm=1\n")
    tables = [
        {"name": "primary", "base_url": refused_url(), "default": True, "fallbacks": ["backup"],
         "max_concurrent": 50, "breaker_failures": 0},
        {"name": "backup", "base_url": sim_url, "models": ["backup-*"], "max_concurrent": 50},
        {"name": "dead", "base_url": refused_url(), "models": ["dead-*"]},
    ]  # fmt: skip
    extra = {"state": request.getfixturevalue("redis_server").url} if state == "redis" else {}
    root = await start_relay(nursery, "http://flat-upstream.invalid/v1", upstreams=tables, api_keys_file=str(keys),
                             retries=0, keep_alive_s=5.0, heartbeat_s=150.0, **extra)  # fmt: skip
    kinds = [
        Kind("fallback, streamed", "POST", "/v1/chat/completions", STREAM, key="sk-open"),
        Kind("fallback", "POST", "/v1/chat/completions", CHAT, key="sk-open"),
        Kind("fallback, client leaves", "POST", "/v1/chat/completions", {**STREAM, "sim_chunks": 50},
             key="sk-open", leave=True),  # fmt: skip
        # 502 until its circuit opens, then 503 at once
        Kind("no fallback, unreachable", "POST", "/v1/chat/completions", {**CHAT, "model": "dead-1"}, key="sk-open",
             status=(502, 503)),  # fmt: skip
        # 429 after the first of each minute
        Kind("a key over its limit", "POST", "/v1/chat/completions", STREAM, key="sk-shut", status=(200, 429)),
        Kind("no key", "POST", "/v1/chat/completions", STREAM, status=401),
    ]
    await assert_keeps_nothing(mock_clock, root, kinds)


def cyclic_garbage() -> list[str]:
    """The types of what only the cycle collector could free now (collected, then dropped)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = [f"{type(obj).__module__}.{type(obj).__qualname__}" for obj in gc.garbage]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    return found


@pytest.mark.parametrize("kind", [
    Kind("chat", "POST", "/v1/chat/completions", CHAT),
    Kind("chat stream", "POST", "/v1/chat/completions", STREAM),
    Kind("NDJSON stream", "POST", "/chat/completions", STREAM),
    Kind("chat stream, a new connection each", "POST", "/v1/chat/completions", STREAM, new_connection=True),
    Kind("client leaves mid-stream", "POST", "/v1/chat/completions", {**STREAM, "sim_chunks": 50}, leave=True),
    Kind("upstream breaks mid-stream", "POST", "/v1/chat/completions", {**STREAM, "sim_fault": "drop:2"}),
], ids=repr)  # fmt: skip
async def test_a_served_request_is_freed_without_the_collector(nursery, sim_url, kind):
    """Nothing of the relay's own is left in a cycle: refcounting frees a request when it ends. A cycle would keep it
    (and what it refers to: hypercorn's stream, the connection) until a collection of the generation it reached,
    which for a long stream is the oldest, and with the relay's GC policy that runs rarely (proxy/gcpolicy.py)."""
    root = await start_relay(nursery, sim_url, passthrough="on")
    with relay_logs_dropped():
        await send(root, kind, 3)
        gc.collect()
        gc.disable()
        try:
            await send(root, kind, 5)
            await trio.testing.wait_all_tasks_blocked()
            ours = [name for name in cyclic_garbage() if name.startswith("proxy.")]
        finally:
            gc.enable()
    assert not ours, collections.Counter(ours)
