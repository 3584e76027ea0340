"""The shared wire toolkit (wire/) with bytes and sockets: chunk framing, the chunked decoder, listening
sockets and addresses, the fd limit, stop signals. Both the relay and the load generator depend on these."""

from __future__ import annotations

import os
import resource
import signal
import socket
from pathlib import Path

import h11
import pytest
import trio
import trio.testing

import wire
from wire import ChunkedDecoder, ChunkedError, chunk_frame, listen_socket, split_bind, url_host


def _h11_chunk(data: bytes) -> bytes:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    conn.next_event()
    conn.send(h11.Response(status_code=200, headers=[("transfer-encoding", "chunked")]))
    return conn.send(h11.Data(data=data))


@pytest.mark.parametrize("data", [b"x", b"data: {}\n\n", b"\r\n" * 300, bytes(range(256)) * 70])
def test_chunk_frame_is_h11s_bytes(data):
    assert chunk_frame(data) == _h11_chunk(data)


def test_the_relays_inline_framing_is_chunk_frame():
    """proxy/serving/_direct.py frames inline (no call per chunk): the expression must stay wire's."""
    source = (Path(wire.__file__).parents[1] / "proxy" / "serving" / "_direct.py").read_text()
    assert source.count('b"%x\\r\\n%b\\r\\n" % (len(data), data)') == 2


def test_decoder_reads_what_chunk_frame_writes_split_anywhere():
    pieces = [b"a", b"data: 1\n\n", b"z" * 5000]
    body = b"".join(chunk_frame(p) for p in pieces) + b"0\r\nx-t: 1\r\n\r\n"
    for step in (1, 2, 3, 7, 4096, len(body)):
        dec = ChunkedDecoder()
        got = b"".join(dec.feed(body[i : i + step]) for i in range(0, len(body), step))
        assert got == b"".join(pieces) and dec.done and dec.leftover == b""


def test_bytes_after_the_end_are_leftover_never_body():
    dec = ChunkedDecoder()
    assert dec.feed(b"2\r\nok\r\n0\r\n\r\nHTTP/1.1") == b"ok"
    assert dec.done and dec.leftover == b"HTTP/1.1"
    assert dec.feed(b" 200") == b"" and dec.leftover == b"HTTP/1.1 200"


@pytest.mark.parametrize(
    "line, n", [(b"1f", 31), (b"1F", 31), (b"a;ext=1", 10), (b"a \t; e", 10), (b"0" * 15 + b"a", 10)]
)
def test_chunk_size_accepts_hex_and_extensions(line, n):
    assert ChunkedDecoder().feed(line + b"\r\n" + b"x" * n + b"\r\n") == b"x" * n


@pytest.mark.parametrize(
    "wire_bytes",
    [
        b"0x1f\r\n",
        b"1_0\r\n",
        b" 3\r\n",
        b"+3\r\n",
        b"-1\r\n",
        b"\r\n",
        b"1f \r\n",
        b"0" * 16 + b"3\r\n",
        b"3\r\nabcXY",
        b"1" * 5000,
    ],
)
def test_invalid_coding_raises(wire_bytes):
    with pytest.raises(ChunkedError):
        ChunkedDecoder().feed(wire_bytes)


@pytest.mark.parametrize(
    "bind, expected",
    [("127.0.0.1:80", ("127.0.0.1", 80)), ("[::1]:0", ("::1", 0)), (":9", ("127.0.0.1", 9)), ("9", ("127.0.0.1", 9))],
)
def test_split_bind(bind, expected):
    assert split_bind(bind) == expected


@pytest.mark.parametrize("bind", ["host", "host:", "host:x1"])
def test_split_bind_refuses_a_missing_port(bind):
    with pytest.raises(ValueError):
        split_bind(bind)


def test_url_host_brackets_ipv6():
    assert (url_host("::1"), url_host("127.0.0.1")) == ("[::1]", "127.0.0.1")


def test_listen_socket_listens_and_shares_its_port():
    first = listen_socket("127.0.0.1", 0, 16, reuse_port=True)
    port = first.getsockname()[1]
    second = listen_socket("127.0.0.1", port, 16, reuse_port=True)
    holder = listen_socket("127.0.0.1", port, 16, reuse_port=True, listen=False)
    try:
        assert not first.getblocking() and first.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        assert not holder.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        assert first.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        for s in (first, second, holder):
            s.close()


def test_listen_socket_without_reuse_port_refuses_a_taken_port_and_closes_its_socket():
    taken = listen_socket("127.0.0.1", 0, 16)
    try:
        with pytest.raises(OSError):
            listen_socket("127.0.0.1", taken.getsockname()[1], 16)
    finally:
        taken.close()


def test_raise_nofile_limit_returns_the_limit_in_force():
    assert wire.raise_nofile_limit() == resource.getrlimit(resource.RLIMIT_NOFILE)


async def test_wait_for_stop_signal_returns_the_signal():
    async with trio.open_nursery() as nursery:
        got = []

        async def waiter() -> None:
            got.append(await wire.wait_for_stop_signal())

        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        os.kill(os.getpid(), signal.SIGTERM)
    assert got == [signal.SIGTERM]


def test_wire_imports_neither_side_nor_a_framework():
    """Neutral ground: the relay's code, the load generator's and framework internals stay out of wire/."""
    import ast

    found = []
    for path in Path(wire.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            found += [
                f"{path.name}: {n}"
                for n in names
                if n.split(".")[0] in {"proxy", "loadtest", "hypercorn", "quart", "quart_trio", "h11", "httpx"}
            ]
    assert found == []
