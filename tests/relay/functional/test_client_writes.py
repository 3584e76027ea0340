"""The client write deadline (``client_write_timeout_s``): a client that stops reading cannot hold a stream.

The client sends a streaming request over a raw socket with a small receive buffer and never reads;
the simulated upstream sends megabytes at once, so the relay's writes to that client block. The
relay must give up within the deadline: close the connection, close the upstream request, free the
slot, count it. A shutdown must not wait for such a client either.
"""

from __future__ import annotations

import json
import socket

import httpx
import pytest
import trio

from proxy.config import Settings
from proxy.edge import serve
from proxy.edge._server import FINAL_EVENT_S
from tests.conftest import raw_chat_request, start_relay, start_sim, wait_lines

CHAT = {"model": "moonshot-v1-8k", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
# ~4 MB of chunks as fast as the sim makes them: far more than the socket buffers to the client hold.
FLOOD = {**CHAT, "sim_chunks": 40, "sim_tokens_per_chunk": 20_000, "sim_interval": 0}
PATHS = [pytest.param("on", id="direct"), pytest.param("off", id="asgi")]
# Plain hypercorn writes to a client shielded and without a deadline: only our connection class keeps one.
pytestmark = pytest.mark.fast_paths("the client write deadline is kept by proxy/edge/_tcpserver.py")


async def stuck_client(root: str, body: dict) -> trio.SocketStream:
    """A client with a 4 KB receive buffer that sends ``body`` as a streaming chat request and never reads."""
    host, port = root.removeprefix("http://").split(":")
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: it sets the window
    await sock.connect((host, int(port)))
    stream = trio.SocketStream(sock)
    await stream.send_all(raw_chat_request(host, json.dumps(body).encode()))
    return stream


async def until(predicate, timeout_s: float) -> None:
    with trio.fail_after(timeout_s):
        while not predicate():  # noqa: ASYNC110 - polling another server's counters
            await trio.sleep(0.01)


@pytest.mark.parametrize("direct_writes", PATHS)
async def test_a_client_that_never_reads_is_cut_off_and_its_slot_freed(nursery, access_lines, direct_writes):
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url, client_write_timeout_s=0.5, direct_writes=direct_writes)
    client = await stuck_client(root, FLOOD)
    try:
        await until(lambda: sim.stats.snapshot()["started"] == 1, 5)
        t0 = trio.current_time()
        # the relay hangs up the upstream request (the sim counts it cancelled) ...
        await until(lambda: sim.stats.snapshot()["cancelled"] == 1 and sim.stats.snapshot()["open"] == 0, 10)
        assert trio.current_time() - t0 < 8  # the deadline is 0.5 s after the first write that blocked
        # ... and the client's connection: it is reset, the stream's bytes never all arrive
        received = 0
        with trio.fail_after(5), pytest.raises((trio.BrokenResourceError, ConnectionResetError)):  # noqa: PT012
            while chunk := await client.receive_some(1 << 20):
                received += len(chunk)
            raise ConnectionResetError("EOF")  # a clean EOF is a closed connection too
        assert received < 1_000_000
    finally:
        await client.aclose()
    (line,) = await wait_lines(access_lines, 1)
    assert line["status"] == 200 and line["completed"] is False
    assert line["error"] == "client_write_timeout"
    async with httpx.AsyncClient(timeout=10) as http:
        health = (await http.get(root + "/healthz")).json()
        metrics = (await http.get(root + "/metrics")).text
    assert health["in_flight"] == 1  # this probe only: the stream's slot is free
    assert "moonrelay_client_write_timeouts_total 1.0" in metrics.splitlines()


@pytest.mark.parametrize("direct_writes", PATHS)
async def test_a_shutdown_is_not_held_by_a_client_that_never_reads(monkeypatch, direct_writes):
    grace_s = 0.2
    settings = Settings(
        bind="127.0.0.1:0", upstream="", graceful_timeout_s=grace_s, client_write_timeout_s=60,
        direct_writes=direct_writes,
    )  # fmt: skip
    relay_port = {}
    blocked = trio.Event()  # a write to the relay's client found its socket full
    send_all = trio.SocketStream.send_all

    async def watched_send_all(self, data):
        if self.socket.getsockname()[1] == relay_port.get("port"):
            blocked.set()
        return await send_all(self, data)

    monkeypatch.setattr(trio.SocketStream, "send_all", watched_send_all)
    stop = trio.Event()
    stopped = trio.Event()
    async with trio.open_nursery() as nursery:
        sim = await start_sim(nursery)
        settings.upstream = sim.url

        async def relay(task_status=trio.TASK_STATUS_IGNORED):
            await serve(settings, shutdown_trigger=stop.wait, task_status=task_status)
            stopped.set()

        root = await nursery.start(relay)
        relay_port["port"] = int(root.rsplit(":", 1)[1])
        client = await stuck_client(root, FLOOD)
        try:
            with trio.fail_after(10):
                await blocked.wait()
            t0 = trio.current_time()
            stop.set()
            with trio.move_on_after(grace_s + FINAL_EVENT_S + 3):
                await stopped.wait()
            elapsed = trio.current_time() - t0
        finally:
            await client.aclose()  # unsticks a relay that waits on it, so that a failure ends
        with trio.fail_after(10):
            await stopped.wait()
        nursery.cancel_scope.cancel()
    assert elapsed < grace_s + FINAL_EVENT_S + 3
