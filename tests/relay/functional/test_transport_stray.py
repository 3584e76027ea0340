"""Stray bytes after a complete response (issue 17, item 5): a connection that holds any is never reused, so
the next request gets its own answer, not bytes that look like one. Scripted raw upstreams, plain and TLS."""

from __future__ import annotations

import ssl
from contextlib import suppress
from functools import partial

import httpx
import pytest
import trio
import trustme

from proxy.transport import H11Transport
from tests.relay.functional.test_transport_resend import read_request

STRAY = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n"stray"'


def answer(body: bytes, framing: str) -> bytes:
    if framing == "chunked":
        return b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


class StrayUpstream:
    """Answers every request with its arrival number ("1", "2", ...) on a kept-alive connection; the first
    answer is followed by STRAY: in the same write (``late`` False) or, once ``idle`` is set, in a write of
    its own. ``wrap`` turns the accepted stream into what is served (TLS)."""

    def __init__(self, framing: str, late: bool = False, wrap=None) -> None:
        self.framing = framing
        self.late = late
        self.wrap = wrap
        self.idle = trio.Event()  # set by the test once the first answer is read and the connection pooled
        self.arrivals = 0
        self.connections = 0

    async def handle(self, stream: trio.abc.Stream) -> None:
        self.connections += 1
        if self.wrap is not None:
            stream = await self.wrap(stream)
        async with stream:
            with suppress(trio.BrokenResourceError):  # a client that closes with the stray bytes unread resets
                await self._answer(stream)

    async def _answer(self, stream: trio.abc.Stream) -> None:
        buf = b""
        while True:
            request, buf = await read_request(stream, buf)
            if request is None:
                return
            self.arrivals += 1
            out = answer(b"%d" % self.arrivals, self.framing)
            if self.arrivals == 1 and not self.late:
                out += STRAY
            await stream.send_all(out)
            if self.arrivals == 1 and self.late:
                await self.idle.wait()
                await stream.send_all(STRAY)


async def _get(transport: H11Transport, url: str) -> bytes:
    response = await transport.handle_async_request(httpx.Request("GET", url))
    try:
        return await response.aread()
    finally:
        await response.aclose()


async def _serve(nursery, upstream: StrayUpstream) -> int:
    listeners = await nursery.start(partial(trio.serve_tcp, upstream.handle, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1]


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("late", [False, True], ids=["same-write", "while-idle"])
async def test_stray_bytes_after_a_response_are_never_read_as_the_next_answer(nursery, framing, late):
    upstream = StrayUpstream(framing, late)
    url = f"http://127.0.0.1:{await _serve(nursery, upstream)}/v1/x"
    transport = H11Transport()
    try:
        assert await _get(transport, url) == b"1"
        if late:
            [conn] = [conn for conns in transport._idle.values() for conn in conns]
            upstream.idle.set()
            with trio.fail_after(5):
                await trio.lowlevel.wait_readable(conn.fd)  # the stray bytes are in while it sits in the pool
        assert await _get(transport, url) == b"2"
        assert upstream.arrivals == 2 and upstream.connections == 2
    finally:
        await transport.aclose()


class _Coalescing(trio.abc.Stream):
    """A transport stream that holds one write back and sends it with the next, so two TLS records share
    one TCP segment: the client's socket read takes both, the second stays in its TLS buffer, unread."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.hold = False
        self.held = b""

    async def send_all(self, data) -> None:
        if self.hold:
            self.hold = False
            self.held = bytes(data)
            await trio.lowlevel.checkpoint()
            return
        data, self.held = self.held + bytes(data), b""
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes=None) -> bytes:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_stray_tls_record_after_a_response_is_never_read_as_the_next_answer(nursery):
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    async def wrap(tcp: trio.abc.Stream) -> trio.abc.Stream:
        coalescing = _Coalescing(tcp)
        tls = trio.SSLStream(coalescing, server_ctx, server_side=True, https_compatible=True)
        await tls.do_handshake()
        coalescing.hold = upstream.connections == 1  # the first answer's record waits for the stray one
        return tls

    upstream = StrayUpstream("content-length", late=True, wrap=wrap)
    upstream.idle.set()  # the stray record follows at once, in the same TCP write
    url = f"https://127.0.0.1:{await _serve(nursery, upstream)}/v1/x"
    transport = H11Transport(ssl_context=client_ctx)
    try:
        assert await _get(transport, url) == b"1"
        assert await _get(transport, url) == b"2"
        assert upstream.arrivals == 2 and upstream.connections == 2
    finally:
        await transport.aclose()
