"""Streamed bodies written straight to the client socket (proxy/edge/_direct.py): same bytes as the ASGI path."""

import json

import h11 as h11_module
import httpx
import pytest
import trio

from proxy.edge import _direct as direct
from tests.conftest import open_stream_and_leave, start_relay, start_sim, wait_lines

pytestmark = pytest.mark.fast_paths("direct writes are a fast path")

CHAT = {"model": "moonshot-v1-8k", "stream": True, "messages": [{"role": "user", "content": "hi"}],
        "sim_deterministic": True}


@pytest.fixture
def writes(monkeypatch):
    """Counts of DirectWriter calls: how many chunks went the direct way, and how many had to wait."""
    counts = {"nowait": 0, "rest": 0, "deferred": 0}
    nowait, rest, defer = direct.DirectWriter.write_nowait, direct.DirectWriter.write_rest, direct.DirectWriter.defer

    def counting_nowait(self, data):
        counts["nowait"] += 1
        return nowait(self, data)

    async def counting_rest(self, data):
        counts["rest"] += 1
        return await rest(self, data)

    def counting_defer(self, data):
        done = defer(self, data)
        counts["deferred"] += done
        return done

    monkeypatch.setattr(direct.DirectWriter, "write_nowait", counting_nowait)
    monkeypatch.setattr(direct.DirectWriter, "write_rest", counting_rest)
    monkeypatch.setattr(direct.DirectWriter, "defer", counting_defer)
    return counts


async def _post(url: str, body: dict) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(url, json=body)


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/chat/completions"])
async def test_direct_and_asgi_paths_send_the_same_bytes(nursery, writes, route):
    sim = await start_sim(nursery, chunks=8)
    on = await start_relay(nursery, sim.url)
    off = await start_relay(nursery, sim.url, direct_writes="off")
    via_asgi = await _post(off + route, CHAT)
    assert writes["nowait"] == 0
    via_direct = await _post(on + route, CHAT)
    # the body went the direct way (one write per upstream read, and reads may join chunks), the last
    # piece with hypercorn's terminator
    assert writes["nowait"] >= 1 and writes["deferred"] == 1
    assert via_direct.status_code == via_asgi.status_code == 200
    assert via_direct.headers["transfer-encoding"] == "chunked"
    assert via_direct.content == via_asgi.content
    if route == "/v1/chat/completions":
        direct_from_sim = await _post(sim.url + "/chat/completions", CHAT)
        assert via_direct.content == direct_from_sim.content


async def test_last_piece_goes_out_with_the_terminator_in_one_write(nursery, monkeypatch):
    """Head, one write per piece before the last, then last piece + terminator: one ``send`` fewer per response."""
    from hypercorn.events import RawData

    from proxy.edge import _tcpserver as keepalive

    sent = []  # what hypercorn's own writes carried (heads, terminators), in order
    protocol_send = keepalive.TCPServer.protocol_send

    async def recording(self, event):
        if type(event) is RawData:
            sent.append(self.pending + event.data)
        await protocol_send(self, event)

    monkeypatch.setattr(keepalive.TCPServer, "protocol_send", recording)
    sim = await start_sim(nursery, chunks=8)
    root = await start_relay(nursery, sim.url)
    response = await _post(root + "/v1/chat/completions", CHAT)
    assert response.status_code == 200 and response.content.endswith(b"data: [DONE]\n\n")
    head, end = sent
    assert head.startswith(b"HTTP/1.1 200")
    # the end write holds the sim's whole last read (last content chunk .. [DONE]) framed, then "0\r\n\r\n"
    assert end.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")
    assert b'"finish_reason":"stop"' in end


async def test_a_whole_answer_goes_out_in_one_write(nursery, monkeypatch):
    """A non-streamed answer (the relay has its whole body): head, body and end in one ``send``, not three."""
    from hypercorn.events import RawData

    from proxy.edge import _tcpserver as keepalive

    written = []  # what each of hypercorn's writes put on the socket
    protocol_send = keepalive.TCPServer.protocol_send

    async def recording(self, event):
        held = getattr(self, "hold_head", False)
        if type(event) is RawData and not held and (self.pending or event.data):
            written.append(self.pending + event.data)
        await protocol_send(self, event)

    monkeypatch.setattr(keepalive.TCPServer, "protocol_send", recording)
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url)
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(2):  # the second on the same connection: nothing held over from the first
            written.clear()
            response = await client.post(root + "/v1/chat/completions", json={**CHAT, "stream": False})
            assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"]
            [whole] = written
            assert whole.startswith(b"HTTP/1.1 200") and whole.endswith(response.content)


async def test_keep_alive_connection_serves_the_next_request_after_a_direct_body(nursery, writes):
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url)
    async with httpx.AsyncClient(timeout=10) as client:
        first = await client.post(root + "/v1/chat/completions", json=CHAT)
        second = await client.post(root + "/v1/chat/completions", json=CHAT)
        health = await client.get(root + "/healthz")
    assert first.content == second.content and first.content.endswith(b"data: [DONE]\n\n")
    assert health.json()["status"] == "ok"
    assert writes["nowait"] > 0


async def test_slow_reader_gets_every_byte_through_backpressure(nursery, writes):
    # ~4 MB of chunks against a client that reads nothing at first: the socket fills, writes wait.
    body = {**CHAT, "sim_chunks": 40, "sim_tokens_per_chunk": 20_000, "sim_interval": 0}
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url)
    expected = (await _post(sim.url + "/chat/completions", body)).content
    assert len(expected) > 2_000_000
    host, port = root.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n").encode()
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(head + payload)
        with trio.fail_after(10):
            while writes["rest"] == 0:  # noqa: ASYNC110 - the relay found the socket full and waits for us
                await trio.sleep(0.01)
        raw = b""
        with trio.fail_after(20):
            while chunk := await stream.receive_some(1 << 20):
                raw += chunk
    response = h11_body(raw)
    assert response == expected


def h11_body(raw: bytes) -> bytes:
    import h11

    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    conn.receive_data(b"")
    out = []
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Data):
            out.append(event.data)
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed) or event is h11.NEED_DATA:
            break
    return b"".join(out)


async def test_http10_client_gets_a_close_delimited_body(nursery, writes):
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url)
    expected = (await _post(sim.url + "/chat/completions", CHAT)).content
    host, port = root.removeprefix("http://").split(":")
    payload = json.dumps(CHAT).encode()
    head = (f"POST /v1/chat/completions HTTP/1.0\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\n\r\n").encode()
    stream = await trio.open_tcp_stream(host, int(port))
    raw = b""
    async with stream:
        await stream.send_all(head + payload)
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                raw += chunk
    head_part, _, body = raw.partition(b"\r\n\r\n")
    assert head_part.startswith(b"HTTP/1.1 200") and b"transfer-encoding" not in head_part.lower()
    assert body == expected
    assert writes["nowait"] > 0


async def test_client_gone_mid_stream_cancels_upstream_and_logs_incomplete(nursery, writes, access_lines):
    sim = await start_sim(nursery, chunks=200, interval=0.01)
    root = await start_relay(nursery, sim.url)
    await open_stream_and_leave(root, CHAT)
    with trio.fail_after(5):
        while sim.stats.snapshot()["cancelled"] < 1:  # noqa: ASYNC110 - the sim's counters cannot be awaited
            await trio.sleep(0.01)
    (line,) = await wait_lines(access_lines, 1)
    assert line["completed"] is False and line["status"] == 200
    assert 0 < line["chunks"] < 200
    assert writes["nowait"] > 0


class _GoneWriter:
    def write_nowait(self, data: bytes) -> None:
        return None  # the client's socket is gone


class _Upstream:
    """A body reader (``proxy.transport.READER``) with five events, one per read."""

    ended = False  # the end is only known from the empty read

    def __init__(self) -> None:
        self.reads = 0

    async def receive_chunk(self) -> bytes:
        self.reads += 1
        return b'data: {"n": %d}\n\n' % self.reads if self.reads <= 5 else b""


async def test_direct_relay_stops_and_marks_the_tap_when_the_client_is_gone():
    from proxy.edge import Tap
    from proxy.stream import _bodies as relay
    from proxy.transport import READER

    upstream = _Upstream()
    tap = Tap()
    body = relay.SSEBody(httpx.Response(200, content=b"", extensions={READER: upstream}), tap=tap)
    await body.relay(_GoneWriter())
    assert tap.gone and tap.chunks == 1 and upstream.reads == 1  # stopped at the first failed write
    with pytest.raises(StopAsyncIteration):
        await body.__anext__()
    assert upstream.reads == 1


# -- a write cut short: the frame is finished or the connection closed, never bytes after half a frame ------------


class _Server:
    """What a DirectWriter reads of proxy.edge's TCPServer."""

    def __init__(self, timeout_s: float) -> None:
        self.pending = b""
        self.writes = direct.ClientWrites(timeout_s)
        self.write_timed_out = False


class _HalfOs:
    """``os`` for proxy.edge whose first ``write`` sends only half: a socket buffer that is almost full."""

    def __init__(self) -> None:
        self.halved = False

    def write(self, fd: int, data: bytes) -> int:
        import os

        if not self.halved:
            self.halved = True
            data = data[: len(data) // 2]
        return os.write(fd, data)


def _sending_body() -> h11_module.Connection:
    conn = h11_module.Connection(h11_module.SERVER)
    conn.receive_data(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    conn.next_event()
    conn.next_event()
    conn.send(h11_module.Response(status_code=200, headers=[]))  # no length: chunked
    return conn


async def _tcp_pair(sndbuf: int | None = None) -> tuple[trio.SocketStream, trio.socket.SocketType]:
    import socket

    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    peer = trio.socket.socket()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await peer.connect(listener.getsockname())
    ours, _ = await listener.accept()
    listener.close()
    if sndbuf is not None:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    return trio.SocketStream(ours), peer


async def _received(peer: trio.socket.SocketType) -> tuple[bytes, bool]:
    """Everything the peer can read, and whether the connection ended in a reset."""
    raw = b""
    with trio.fail_after(5):
        while True:
            try:
                data = await peer.recv(1 << 16)
            except ConnectionResetError:
                return raw, True
            if not data:
                return raw, False
            raw += data


async def test_a_write_cancelled_after_half_its_frame_finishes_the_frame_or_closes(monkeypatch):
    stream, peer = await _tcp_pair()
    with peer:
        monkeypatch.setattr(direct, "os", _HalfOs())
        writer = direct.DirectWriter(_sending_body(), stream, trio.Lock(), _Server(5.0))
        piece = b"x" * 1000
        with trio.CancelScope() as scope:
            scope.cancel()  # already cancelled as the write starts: the client left, or a drain ended the stream
            rest = writer.write_nowait(piece)
            assert rest and len(rest) < len(piece)  # half of the frame is on the wire
            await writer.write_rest(rest)
        # The connection goes on (hypercorn's terminator, say) unless the cancelled write closed it.
        sent = await writer.write(b"after")
        await stream.aclose()
        raw, _ = await _received(peer)
    frame = b"3e8\r\n" + piece + b"\r\n"
    if sent:
        assert raw == frame + b"5\r\nafter\r\n"  # the frame was finished, then the next one
    else:
        assert frame.startswith(raw)  # the connection was closed: at most that frame, nothing after it


async def test_a_write_waiting_for_the_lock_when_cancelled_leaves_whole_frames():
    stream, peer = await _tcp_pair()
    with peer:
        lock = trio.Lock()
        writer = direct.DirectWriter(_sending_body(), stream, lock, _Server(5.0))
        piece = b"y" * 1000
        held, release = trio.Event(), trio.Event()

        async def hypercorn_writing() -> None:
            async with lock:
                held.set()
                await release.wait()

        async def let_go() -> None:
            release.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hypercorn_writing)
            await held.wait()
            rest = writer.write_nowait(piece)
            assert rest == b"3e8\r\n" + piece + b"\r\n"  # nothing written: the whole frame waits for the lock
            with trio.CancelScope() as scope:
                scope.cancel()
                nursery.start_soon(let_go)
                await writer.write_rest(rest)
        sent = await writer.write(b"after")
        await stream.aclose()
        raw, _ = await _received(peer)
    frame, after = b"3e8\r\n" + piece + b"\r\n", b"5\r\nafter\r\n"
    assert raw in (frame + after, after) if sent else frame.startswith(raw)


async def _close_after(sock: trio.socket.SocketType, delay_s: float) -> None:
    await trio.sleep(delay_s)
    sock.close()


async def test_a_write_past_the_deadline_aborts_the_connection():
    stream, peer = await _tcp_pair(sndbuf=4096)
    with peer:
        server = _Server(0.2)
        writer = direct.DirectWriter(_sending_body(), stream, trio.Lock(), server)
        t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            # Without a deadline the write waits (shielded) for as long as the peer lives: end the peer then.
            nursery.start_soon(_close_after, peer, 3.0)
            while await writer.write(b"z" * 65536):  # the peer never reads: a write waits, then runs out of time
                pass
            nursery.cancel_scope.cancel()
        assert trio.current_time() - t0 < 2
        assert server.write_timed_out
        assert writer.write_nowait(b"more") is None  # shut down: no byte can follow the cut frame
        await stream.aclose()
        raw, reset = await _received(peer)
    assert reset or not raw.endswith(b"0\r\n\r\n")  # the client sees the connection end, never a clean body
