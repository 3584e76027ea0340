"""The h11 transport (proxy/transport/) on its own: pooling and the chunked body path, over real sockets."""

from functools import partial

import httpx
import pytest
import trio
import trio.testing

from proxy.transport import H11Transport, Timeouts, read_body, reader
from tests.conftest import start_sim

CHAT = b'{"model": "moonshot-v1-8k", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'


async def _stream(transport: H11Transport, url: str, body: bytes = CHAT) -> bytes:
    request = httpx.Request("POST", url, content=body, headers={"content-type": "application/json"})
    response = await transport.handle_async_request(request)
    body_reader = reader(response)
    out = b""
    try:
        while chunk := await body_reader.receive_chunk():
            out += chunk
    finally:
        await response.aclose()
    return out


async def test_chunked_stream_is_decoded_and_its_connection_reused(nursery, monkeypatch):
    sim = await start_sim(nursery, chunks=6)
    transport = H11Transport()
    connects = []
    real_open = transport._open_tcp

    async def counting_open(host, port):
        connects.append((host, port))
        return await real_open(host, port)

    monkeypatch.setattr(transport, "_open_tcp", counting_open)
    async with httpx.AsyncClient(timeout=10) as client:
        direct = await client.post(sim.url + "/chat/completions", content=CHAT)
    first = await _stream(transport, sim.url + "/chat/completions")
    assert transport.idle_connections == 1
    second = await _stream(transport, sim.url + "/chat/completions")
    assert len(connects) == 1 and transport.idle_connections == 1
    for body in (first, second):
        assert body.count(b"data: ") == direct.content.count(b"data: ")
        assert body.endswith(b"data: [DONE]\n\n")
    await transport.aclose()


async def _scripted_upstream(nursery, answer: bytes) -> str:
    """A one-shot upstream that reads a request head and writes ``answer``, then keeps the socket open."""

    async def handle(stream):
        async with stream:
            seen = b""
            while b"\r\n\r\n" not in seen:
                seen += await stream.receive_some(65536)
            await stream.send_all(answer)
            await trio.sleep_forever()

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1/x"


HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"


@pytest.mark.parametrize(("extra", "tail", "reused"), [
    (b"", b"", True),
    (b"connection: close\r\n", b"", False),
    (b"", b"HTTP/1.1 200 OK\r\n", False),  # bytes after the body: nothing we asked for
])  # fmt: skip
async def test_reuse_follows_the_head_and_what_follows_the_body(nursery, extra, tail, reused):
    url = await _scripted_upstream(nursery, HEAD + extra + b"\r\n7\r\ndata: 1\r\n0\r\n\r\n" + tail)
    transport = H11Transport()
    assert await _stream(transport, url) == b"data: 1"
    assert transport.idle_connections == (1 if reused else 0)
    await transport.aclose()


@pytest.mark.parametrize("body", [b"zz\r\nxx\r\n", b"3\r\nabcXY0\r\n\r\n"])
async def test_invalid_chunked_body_is_a_protocol_error(nursery, body):
    url = await _scripted_upstream(nursery, HEAD + b"\r\n" + body)
    transport = H11Transport()
    with pytest.raises(httpx.RemoteProtocolError):
        await _stream(transport, url)
    assert transport.idle_connections == 0
    await transport.aclose()


async def test_eof_inside_a_chunked_body_is_a_protocol_error(nursery):
    async def handle(stream):
        async with stream:
            seen = b""
            while b"\r\n\r\n" not in seen:
                seen += await stream.receive_some(65536)
            await stream.send_all(HEAD + b"\r\n7\r\ndata: 1\r\n")

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    transport = H11Transport()
    with pytest.raises(httpx.RemoteProtocolError, match="before the response ended"):
        await _stream(transport, f"http://127.0.0.1:{port}/v1/x")
    await transport.aclose()


async def test_idle_connections_are_closed_once_they_expire(nursery, mock_clock):
    """A pooled connection goes after ``pool_idle_s`` unused (its fd too), not when the upstream next answers: a
    burst's thousands of connections do not stay open once the load is gone. Reuse starts its idle time again."""
    mock_clock.rate = 1.0  # real time over real sockets, plus the jumps below
    sim = await start_sim(nursery, chunks=1)
    transport = H11Transport(timeouts=Timeouts(pool_idle_s=30.0))
    await nursery.start(transport.run_watchdog)
    url = sim.url + "/chat/completions"
    await _stream(transport, url)
    mock_clock.jump(20)
    await _stream(transport, url)  # the same connection, idle again from now
    mock_clock.jump(20)
    await trio.testing.wait_all_tasks_blocked()
    assert transport.idle_connections == 1
    mock_clock.jump(11)
    await trio.testing.wait_all_tasks_blocked()
    assert transport.idle_connections == 0
    assert sim.stats.snapshot()["started"] == 2
@pytest.mark.parametrize("encoded", [False, True])
async def test_read_body_joins_the_reads_and_undoes_a_content_encoding(nursery, encoded):
    """``read_body``: the whole body of a length-framed answer (what httpx's ``aread`` gives: a gzip'd one decoded),
    and the connection back in the pool."""
    import gzip

    text = b'{"id":"x","choices":[]}' * 50
    body = gzip.compress(text) if encoded else text
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % len(body)
    url = await _scripted_upstream(nursery, head + (b"content-encoding: gzip\r\n" if encoded else b"") + b"\r\n" + body)
    transport = H11Transport()
    response = await transport.handle_async_request(httpx.Request("POST", url, content=b"{}"))
    try:
        whole = await read_body(response)
        assert whole == text and type(whole) is bytes  # h11 reads bytearrays; a Quart body must be bytes
    finally:
        await response.aclose()
    assert transport.idle_connections == 1
    await transport.aclose()


@pytest.mark.parametrize(("method", "body"), [("POST", b'{"model":"m"}'), ("GET", None), ("POST", None)])
async def test_send_bytes_writes_what_an_httpx_request_writes(nursery, method, body):
    """``send_bytes`` skips building an ``httpx.Request``; the upstream still reads the same bytes (Host and
    Content-Length where httpx puts them)."""
    seen: list[bytes] = []

    async def handle(stream):
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + len(body or b""):
                data += await stream.receive_some(65536)
            seen.append(data)
            await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    url = httpx.URL(f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/v1/x")
    headers = [(b"accept-encoding", b"identity"), (b"authorization", b"Bearer k"), (b"accept", b"application/json")]
    transport = H11Transport()
    for send in (lambda: transport.handle_async_request(httpx.Request(method, url, headers=headers, content=body)),
                 lambda: transport.send_bytes(method, url, headers, body, {})):  # fmt: skip
        response = await send()
        assert await read_body(response) == b"{}"
        await response.aclose()
    assert len(seen) == 2 and seen[0] == seen[1], seen
    await transport.aclose()
