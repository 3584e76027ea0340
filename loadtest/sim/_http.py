"""The sim's HTTP/1.1 by hand, over trio and h11: reading requests, writing responses, TLS.

Everything here is per connection or per response but :func:`send`, a plain function the chat loop calls
per chunk (with ``wire.chunk_frame`` for the framing). The listening socket is ``wire.listen_socket``.
"""

from __future__ import annotations

import os
import ssl
import time
from pathlib import Path

import h11
import trio

from loadtest import simcontent
from wire import url_host

__all__ = [
    "RECEIVE_SIZE", "ClosedErrors", "Abort", "send", "next_event", "send_simple", "send_error",
    "rate_limit_headers", "path_of", "format_url", "write_tls_files", "server_ssl_context",
]

RECEIVE_SIZE = 65536
# The errors that mean the peer went away (or our own abrupt close): they end a connection quietly.
ClosedErrors = (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError, ssl.SSLError)


class Abort(Exception):
    """Close the connection now, without finishing the response (the ``drop`` fault)."""


async def send(stream: trio.abc.Stream, data: bytes) -> None:
    """``stream.send_all(data)``, with a fast path for plain sockets whose send buffer has room.

    trio's ``SocketStream.send_all`` passes through two checkpoints per call; the direct non-blocking write
    skips them (the caller's timer sleep is its checkpoint). A partial write or a full buffer falls back to trio.
    The relay has the same fast path in three places (proxy/edge/_direct.py, _connection.py,
    proxy/transport/_connection.py), each inline with its own failure meaning; this one is the sim's.
    """
    # At 1,000 streams the direct write saves a large share of the sim's CPU per chunk.
    if type(stream) is trio.SocketStream:
        try:
            sent = os.write(stream.socket.fileno(), data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise trio.BrokenResourceError(str(exc)) from exc
        if sent == len(data):
            return
        data = data[sent:]
    await stream.send_all(data)


async def next_event(stream: trio.abc.Stream, conn: h11.Connection):
    """The connection's next h11 event, reading from the stream as h11 needs."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await stream.receive_some(RECEIVE_SIZE))


async def send_simple(stream, conn: h11.Connection, status: int, body: bytes, extra: list | None = None) -> None:
    """A whole JSON response in one write."""
    headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
    headers += extra or []
    data = conn.send(h11.Response(status_code=status, headers=headers))
    data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
    await send(stream, data)


async def send_error(stream, conn: h11.Connection, status: int, message: str | None = None,
                     kind: str | None = None) -> None:
    """Moonshot's error body for ``status`` (with its rate-limit headers on 429), or ``{message, kind}``."""
    await send_simple(stream, conn, status, simcontent.error_body(status, message, kind), rate_limit_headers(status))


def rate_limit_headers(status: int, *, moonshot: bool = True) -> list[tuple[str, str]]:
    """What a 429 carries: ``retry-after``, and Moonshot's ``x-ratelimit-*`` unless ``moonshot`` is false."""
    if status != 429:
        return []
    if not moonshot:
        return [("retry-after", "1")]
    reset = int(time.time()) + 1
    return [("retry-after", "1"), ("x-ratelimit-limit", "3"), ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", str(reset))]


def path_of(target: str) -> str:
    """The request target's path: no query, no trailing slash."""
    return target.split("?", 1)[0].rstrip("/") or "/"


def format_url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://{url_host(host)}:{port}/v1"


def write_tls_files(tls_dir: str | os.PathLike, host: str) -> None:
    """Issue a trustme CA and a server cert for ``host``, localhost and 127.0.0.1 into ``tls_dir``."""
    import trustme

    directory = Path(tls_dir)
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    names = list(dict.fromkeys([host, "localhost", "127.0.0.1", "::1"]))
    cert = ca.issue_cert(*names)
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(directory / "server.pem"), append=True)
    cert.private_key_pem.write_to_path(str(directory / "server.key"))


def server_ssl_context(tls_dir: str | os.PathLike) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(Path(tls_dir) / "server.pem"), str(Path(tls_dir) / "server.key"))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx
