"""No silent re-send (issue 17, item 2): a request goes out a second time only when it provably never reached the
upstream. A scripted raw upstream counts every request that arrives, on every connection."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from contextlib import suppress

import httpx
import pytest
import trio

from proxy.transport import H11Transport
from proxy.transport._connection import Connection
from tests.conftest import start_relay
from tests.support.scripted import ScriptedServer

KEEP, CLOSE, RESET = "keep", "close", "reset"  # what the upstream does with the connection after it answers


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


async def read_request(stream: trio.SocketStream, buf: bytes) -> tuple[bytes | None, bytes]:
    """One whole request (head and Content-Length body) from ``stream``, and what was read after it; None at EOF."""
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some(65536)
        if not data:
            return None, buf
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        data = await stream.receive_some(65536)
        if not data:
            return None, buf
        rest += data
    return head + b"\r\n\r\n" + rest[:length], rest[length:]


def reset(stream: trio.SocketStream) -> None:
    """Make the coming close send RST instead of FIN."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class Upstream(ScriptedServer):
    """Raw HTTP/1.1 upstream. ``script(n, request)`` says what the n-th request on a connection (from 0) gets:
    the bytes to write (b"" for no answer) and KEEP, CLOSE or RESET. Every request that arrives is recorded."""

    def __init__(self, script: Callable[[int, bytes], tuple[bytes, str]]) -> None:
        self.script = script
        self.arrivals: list[bytes] = []
        self.connections = 0

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        async with stream:
            with suppress(trio.BrokenResourceError):  # the client's reset ends only this connection
                await self._answer(stream)

    async def _answer(self, stream: trio.SocketStream) -> None:
        buf = b""
        n = 0
        while True:
            request, buf = await read_request(stream, buf)
            if request is None:
                return
            self.arrivals.append(request)
            answer, then = self.script(n, request)
            n += 1
            if answer:
                await stream.send_all(answer)
            if then == RESET:
                reset(stream)
            if then != KEEP:
                return

    def count(self, marker: bytes) -> int:
        return sum(marker in request for request in self.arrivals)


async def _post(transport: H11Transport, url: str, body: bytes) -> bytes:
    request = httpx.Request("POST", url, content=body, headers={"content-type": "application/json"})
    response = await transport.handle_async_request(request)
    try:
        return await response.aread()
    finally:
        await response.aclose()


def _pooled(transport: H11Transport) -> Connection:
    [conn] = [conn for conns in transport._idle.values() for conn in conns]
    return conn


@pytest.mark.parametrize("then", [RESET, CLOSE])
async def test_a_request_the_upstream_read_is_never_sent_again(nursery, then):
    # The second request on the kept-alive connection is read whole, then the connection is reset (or closed)
    # without an answer. It may have started a paid completion: the caller gets the error, nothing is re-sent.
    upstream = await nursery.start(Upstream(lambda n, _: (ok(b"{}"), KEEP) if n == 0 else (b"", then)).serve)
    transport = H11Transport()
    try:
        assert await _post(transport, upstream.url, b'{"n": "first"}') == b"{}"
        assert transport.idle_connections == 1
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            await _post(transport, upstream.url, b'{"n": "second"}')
        assert upstream.count(b'"second"') == 1
        assert upstream.connections == 1
        assert transport.idle_connections == 0
    finally:
        await transport.aclose()


@pytest.mark.parametrize("then", [CLOSE, RESET])
async def test_a_pooled_connection_closed_while_idle_is_replaced_without_error(nursery, then):
    # The good path: the upstream closes an idle keep-alive connection (its keep-alive timeout); the
    # relay sees that before writing a byte and sends the request on a new connection.
    upstream = await nursery.start(Upstream(lambda n, request: (ok(b"{}"), then)).serve)
    transport = H11Transport()
    try:
        await _post(transport, upstream.url, b'{"n": "first"}')
        with trio.fail_after(5):
            await trio.lowlevel.wait_readable(_pooled(transport).fd)  # the FIN or RST is in
        assert await _post(transport, upstream.url, b'{"n": "second"}') == b"{}"
        assert upstream.count(b'"second"') == 1 and upstream.connections == 2
    finally:
        await transport.aclose()


async def test_a_reset_first_seen_by_the_write_is_replaced_without_error(nursery, monkeypatch):
    # The RST lands after the pool's check (simulated: the check is skipped): the first write fails with
    # nothing written, so the upstream never saw the request and it goes out on a new connection.
    upstream = await nursery.start(Upstream(lambda n, request: (ok(b"{}"), RESET)).serve)
    transport = H11Transport()
    try:
        await _post(transport, upstream.url, b'{"n": "first"}')
        with trio.fail_after(5):
            await trio.lowlevel.wait_readable(_pooled(transport).fd)
        monkeypatch.setattr("proxy.transport._pool.is_dead", lambda conn: False)
        assert await _post(transport, upstream.url, b'{"n": "second"}') == b"{}"
        assert upstream.count(b'"second"') == 1 and upstream.connections == 2
    finally:
        await transport.aclose()


COMPLETION = b'{"id":"c1","object":"chat.completion","model":"moonshot-v1-8k","choices":[]}'
CHAT = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "hi"}]}


async def test_relay_answers_502_and_sends_a_read_completion_once_whatever_the_retries(nursery):
    upstream = await nursery.start(Upstream(lambda n, _: (ok(COMPLETION), KEEP) if n == 0 else (b"", RESET)).serve)
    root = await start_relay(nursery, upstream.url, retries=3, retry_max_wait_s=0.1)
    async with httpx.AsyncClient(timeout=10) as client:
        first = await client.post(root + "/v1/chat/completions", json={**CHAT, "user": "first"})
        second = await client.post(root + "/v1/chat/completions", json={**CHAT, "user": "second"})
    assert first.status_code == 200 and first.content == COMPLETION
    assert second.status_code == 502
    error = second.json()["error"]
    assert set(error) == {"message", "type", "code"} and error["type"] == "upstream_error"
    assert upstream.count(b'"second"') == 1
    assert upstream.connections == 1
