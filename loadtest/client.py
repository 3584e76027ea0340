"""A lean HTTP/1.1 client for the load generator: raw trio sockets around an h11 state machine.

Why not httpx on the hot path: one shared ``httpx.AsyncClient`` costs many times a raw trio + h11
client's CPU per received chunk; at 10,000 streams it alone would need more than the two cores we have.
This module only moves bytes between a socket and h11 (a chunked body through ``wire.ChunkedDecoder``);
what the bytes mean (SSE events, sim stamps, usage) is :mod:`loadtest.accounting`'s business.

Exceptions, all subclasses of :class:`ClientError`, map the transport's many failure types at this one
boundary::

    ClientError
     ├── ConnectFailed    TCP (or TLS) connect failed, after the retries
     ├── ConnectionReset  the peer reset or closed the connection before the response ended
     └── ProtocolError    the peer's bytes were not HTTP/1.1

A :class:`Connection` serves one request at a time; after a response ended cleanly (and neither side
asked to close) :meth:`Connection.next_cycle` readies it for the next request on the same socket.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11
import trio

from wire import ChunkedDecoder, ChunkedError

RECEIVE_SIZE = 65536
_END = h11.EndOfMessage()

# Connect errors that a retry can cure: a full listen backlog (SYNs dropped or answered with RST when
# tcp_abort_on_overflow is set), or a server that is still binding. Anything else fails at once.
_RETRYABLE_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ECONNRESET, errno.ETIMEDOUT, errno.EAGAIN})

# struct tcp_info (linux/tcp.h): tcpi_total_retrans is the u32 at byte offset 100. A SYN that the
# server's full accept queue dropped is retransmitted by the kernel after 1 s, invisibly to connect();
# this counter is how we see (and count) those backlog overflows.
_TCP_INFO_TOTAL_RETRANS = 100
_TCP_INFO = getattr(socket, "TCP_INFO", None)


class ClientError(Exception):
    """Base class of the client's errors."""


class ConnectFailed(ClientError):
    pass


class ConnectionReset(ClientError):
    pass


class ProtocolError(ClientError):
    pass


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where requests go: ``http(s)://host:port`` plus the path prefix of the URL (e.g. ``/v1``)."""

    scheme: str
    host: str
    port: int
    base_path: str  # without a trailing slash; "" for the root

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    @property
    def host_header(self) -> bytes:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (host if self.port == default else f"{host}:{self.port}").encode()

    @property
    def root(self) -> str:
        return f"{self.scheme}://{self.host_header.decode()}"


_RESOLVED: dict[tuple[str, int], tuple[int, tuple]] = {}


async def _resolve(endpoint: Endpoint) -> tuple[int, tuple]:
    """The first address of ``endpoint``, resolved once per process: a load run connects thousands of
    times to one host, and trio.open_tcp_stream's per-call resolution and happy-eyeballs nursery are
    work (and, for an IP literal, a nursery per connect) that a load generator need not repeat."""
    key = (endpoint.host, endpoint.port)
    found = _RESOLVED.get(key)
    if found is None:
        try:
            infos = await trio.socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ConnectFailed(f"resolve {endpoint.host}: {exc}") from exc
        family, _, _, _, addr = infos[0]
        found = _RESOLVED[key] = (family, addr)
    return found


async def _connect(family: int, addr: tuple) -> socket.socket:
    """A non-blocking connect to an address resolved already: what ``trio.socket.socket().connect`` does, less
    its per-call address resolution and the scheduler pass that follows it (results/PERF-LOG.md, "load
    generator: first chunks read late"). A checkpoint; the socket is closed on any failure."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        err = sock.connect_ex(addr)
        if err == errno.EINPROGRESS:
            await trio.lowlevel.wait_writable(sock)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        else:
            await trio.lowlevel.checkpoint()
        if err:
            raise OSError(err, f"Error connecting to {addr!r}: {os.strerror(err)}")
        return sock
    except BaseException:
        sock.close()
        raise


def _syn_retransmits(stream: trio.SocketStream) -> int:
    if _TCP_INFO is None:
        return 0
    try:
        info = stream.socket.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 104)
    except OSError:
        return 0
    if len(info) < _TCP_INFO_TOTAL_RETRANS + 4:
        return 0
    return struct.unpack_from("I", info, _TCP_INFO_TOTAL_RETRANS)[0]


async def open_connection(
    endpoint: Endpoint,
    *,
    retries: int = 3,
    retry_delay_s: float = 0.05,
    on_retry: Callable[[int], None] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Connection:
    """Connect to ``endpoint``; retry refused/reset connects (a full backlog) ``retries`` times.

    ``on_retry(n)`` is told of every retry, and of SYN retransmissions the kernel did on its own, so
    the run can report backlog overflow instead of hiding it in the connect time.
    """
    family, addr = await _resolve(endpoint)
    attempt = 0
    while True:
        try:
            raw = await _connect(family, addr)
        except OSError as exc:
            if exc.errno not in _RETRYABLE_ERRNOS or attempt >= retries:
                raise ConnectFailed(f"connect to {endpoint.host}:{endpoint.port}: {exc}") from exc
            attempt += 1
            if on_retry is not None:
                on_retry(1)
            await trio.sleep(retry_delay_s * 2 ** (attempt - 1))
            continue
        break
    stream: trio.abc.Stream = trio.SocketStream(trio.socket.from_stdlib_socket(raw))
    if on_retry is not None:
        syn = _syn_retransmits(stream)  # type: ignore[arg-type]
        if syn:
            on_retry(syn)
    if endpoint.scheme == "https":
        ctx = ssl_context or ssl.create_default_context()
        tls = trio.SSLStream(stream, ctx, server_hostname=endpoint.host, https_compatible=True)
        try:
            await tls.do_handshake()
        except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
            await trio.aclose_forcefully(stream)
            raise ConnectFailed(f"TLS handshake with {endpoint.host}: {exc}") from exc
        return Connection(tls)
    return Connection(stream, raw)


class Connection:
    """One HTTP/1.1 connection: bytes between a trio stream and an h11 client state machine."""

    __slots__ = ("_stream", "_raw", "socket", "_h11", "requests", "_chunked", "_keep_alive", "_pending")

    def __init__(self, stream: trio.abc.Stream, raw: socket.socket | None = None) -> None:
        """``raw``: the plain TCP socket under ``stream``, when there is no TLS between: read directly."""
        self._stream = stream
        self._raw = raw
        transport = stream
        while isinstance(transport, trio.SSLStream):
            transport = transport.transport_stream
        self.socket: trio.socket.SocketType | None = getattr(transport, "socket", None)
        self._h11 = h11.Connection(h11.CLIENT)
        self._chunked: ChunkedDecoder | None = None  # set while a chunked body is read without h11
        self._keep_alive = True
        self._pending = b""
        self.requests = 0  # requests sent on this connection (> 0 before a send means reused)

    async def send_request(self, request: h11.Request, body: h11.Data | None) -> None:
        """Send one request. The events are built once per distinct request and reused by every session:
        h11 validates headers when an event is constructed, not when it is sent."""
        h = self._h11
        data = h.send(request)
        if body is not None:
            data += h.send(body)
        data += h.send(_END)
        self.requests += 1
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ConnectionReset(f"send: {exc}") from exc

    async def _read(self) -> bytes:
        """Up to RECEIVE_SIZE bytes (b"": the peer closed). On a plain socket, what trio's
        ``SocketStream.receive_some`` does, without its layers (conflict detector, wrappers, context managers):
        much of a read's cost in the load generator (results/PERF-LOG.md, "load generator: first chunks read
        late"). A checkpoint either way."""
        raw = self._raw
        try:
            if raw is None:
                return await self._stream.receive_some(RECEIVE_SIZE)
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                data = raw.recv(RECEIVE_SIZE)
            except BlockingIOError:
                while True:
                    await trio.lowlevel.wait_readable(raw)
                    try:
                        return raw.recv(RECEIVE_SIZE)
                    except BlockingIOError:
                        pass
            await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ConnectionReset(f"receive: {exc}") from exc

    async def _receive(self) -> None:
        self._h11.receive_data(await self._read())  # b"" tells h11 the peer closed

    async def receive_response(self) -> h11.Response:
        """Read up to and including the status line and headers of the (final) response."""
        h = self._h11
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                raise self._protocol_error(exc) from exc
            if event is h11.NEED_DATA:
                await self._receive()
            elif type(event) is h11.Response:
                self._take_over_body(event)
                return event
            elif type(event) is h11.InformationalResponse:
                continue
            elif type(event) is h11.ConnectionClosed:
                raise ConnectionReset("connection closed before the response")
            else:  # pragma: no cover - h11 only yields the above before a response
                raise ProtocolError(f"unexpected {event!r}")

    def _take_over_body(self, response: h11.Response) -> None:
        h = self._h11
        chunked = False
        for name, value in response.headers:
            if name == b"transfer-encoding":
                chunked = value.lower() == b"chunked"
            elif name == b"connection" and b"close" in value.lower():
                self._keep_alive = False
        if not chunked or response.http_version != b"1.1":
            return
        leftover, closed = h.trailing_data
        self._chunked = ChunkedDecoder()
        self._h11 = h11.Connection(h11.CLIENT)  # a fresh one for the next request on this connection
        self._pending = leftover
        if closed:
            self._keep_alive = False

    async def receive_body(self) -> tuple[bytes, bool]:
        """Body bytes that are available now, and whether the message ended.

        Waits for at least one byte unless the message ended. Everything one socket read brought is
        returned at once, so the caller does its per-read work (a clock read) once per read, not per
        HTTP chunk.
        """
        dec = self._chunked
        if dec is not None:
            try:  # free unless raised (Python >= 3.11)
                pending = self._pending
                if pending:
                    self._pending = b""
                    out = dec.feed(pending)
                    if dec.done:
                        self._chunked = None
                        if dec.leftover:  # we never pipeline: nothing may follow the response
                            raise ChunkedError("bytes after the end of the response")
                        return out, True
                    if out:
                        return out, False
                while True:
                    data = await self._read()
                    if not data:
                        self._keep_alive = False
                        raise ConnectionReset("peer closed connection without sending complete message body")
                    out = dec.feed(data)
                    if dec.done:
                        self._chunked = None
                        if dec.leftover:  # we never pipeline: nothing may follow the response
                            raise ChunkedError("bytes after the end of the response")
                        return out, True
                    if out:
                        return out, False
            except ChunkedError as exc:
                raise ProtocolError(str(exc)) from exc
        h = self._h11
        parts: list[bytes] = []
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                raise self._protocol_error(exc) from exc
            t = type(event)
            if t is h11.Data:
                parts.append(event.data)  # type: ignore[union-attr]
            elif event is h11.NEED_DATA:
                if parts:
                    return b"".join(parts), False
                await self._receive()
            elif t is h11.EndOfMessage:
                return b"".join(parts), True
            elif t is h11.ConnectionClosed:
                raise ConnectionReset("connection closed mid-response")
            else:  # pragma: no cover
                raise ProtocolError(f"unexpected {event!r}")

    def _protocol_error(self, exc: h11.RemoteProtocolError) -> ClientError:
        # h11 reports an EOF inside a body (peer died, or dropped us) as a protocol error; to a load
        # test that is a reset connection, not a malformed response.
        if self._h11.their_state is h11.ERROR and "peer closed" in str(exc):
            return ConnectionReset(str(exc))
        return ProtocolError(str(exc))

    @property
    def reusable(self) -> bool:
        if not self._keep_alive or self._chunked is not None:
            return False
        h = self._h11
        # After a chunked body read by ChunkedDecoder, h11 is a fresh machine (IDLE): reusable as is.
        return (h.our_state is h11.DONE and h.their_state is h11.DONE) or (
            h.our_state is h11.IDLE and h.their_state is h11.IDLE
        )

    def closed_by_peer(self) -> bool:
        """Whether this idle kept-alive connection is unfit for the next request: the peer closed or reset
        it, or sent bytes nobody asked for. Asked before writing a request on a reused connection, the one
        moment when a request that cannot go out on it provably never reached the peer. One poll(2) per
        reuse, nothing per chunk."""
        if self._pending or self._h11.trailing_data[0]:
            return True
        sock = self.socket
        return sock is not None and sock.is_readable()

    def next_cycle(self) -> None:
        h = self._h11
        if h.our_state is h11.DONE:
            h.start_next_cycle()

    def close(self) -> None:
        """Close now, without a TLS close_notify dance or lingering: the peer learns from the FIN/RST.

        Synchronous, so a caller that must close whatever happens needs no shielded cancel scope; trio's
        ``aclose_forcefully`` gets the same by cancelling a scope, which raises and catches a ``Cancelled`` per
        connection (results/PERF-LOG.md, "load generator: first chunks read late"). Every stream this client
        opens has a socket at its bottom (TLS included): closing it ends the stream."""
        assert self.socket is not None
        self.socket.close()

    async def aclose(self) -> None:
        """:meth:`close`, then one checkpoint that no cancellation interrupts."""
        self.close()
        await trio.lowlevel.cancel_shielded_checkpoint()


def now_ns() -> int:
    """The one clock of cross-process stamps (CLOCK_MONOTONIC); see :mod:`loadtest.record`."""
    return time.monotonic_ns()
