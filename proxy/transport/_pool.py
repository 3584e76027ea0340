"""A lean HTTP/1.1 transport for httpx: trio sockets, h11 framing, an O(1) connection pool.

Why not httpx's default transport: httpcore's pool re-examines every connection on each request and
each response close, and wraps every read in anyio layers, so the CPU per relayed chunk grows with
the number of streams. This transport keeps idle
connections in a per-origin list (pop/append), bounds the total with one semaphore, and reads with one
cancel scope per read.

It plugs in behind ``httpx.AsyncClient(transport=H11Transport(...))``, so the relay keeps httpx's
request/response API, and maps every low-level failure to httpx's own exceptions here, at one
boundary (``ConnectError``, ``ConnectTimeout``, ``ReadTimeout``, ``ReadError``, ``PoolTimeout``,
``RemoteProtocolError``).

A request is sent twice only when the upstream provably never saw it: a pooled connection found closed
before any byte of the request was written (readable at pick-up, or the first write failed having
written nothing) is replaced by a new one. Any later failure goes to the caller: a POST the upstream
may have read (a paid completion) is never repeated here. A connection is reused only when nothing is
left unread after the response: bytes past its end are nobody's answer.
"""

from __future__ import annotations

import collections
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterable

import h11
import httpx
import trio

from wire import ChunkedDecoder, ChunkedError

from ._connection import READER, REUSABLE, Connection, Timeouts, Unsent, is_dead, send_all, send_first, unread
from ._response import ResponseStream
from ._watchdog import Watchdog

DEFAULT_TIMEOUTS = Timeouts()
_LENGTH_REQUIRED = frozenset({"POST", "PUT", "PATCH"})  # httpx says Content-Length: 0 for these without a body


class H11Transport(Watchdog, httpx.AsyncBaseTransport):
    """HTTP/1.1 over trio for httpx, keep-alive pooled per origin, limits set deliberately."""

    def __init__(
        self,
        *,
        max_connections: int = 0,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        ssl_context: ssl.SSLContext | None = None,
        max_idle_per_origin: int = 10_000,
    ) -> None:
        self._timeouts = timeouts
        self._ssl_context = ssl_context
        self._max_idle = max_idle_per_origin
        self._idle: dict[tuple[bytes, bytes, int], collections.deque[Connection]] = {}  # most recently used last
        self._limit = trio.Semaphore(max_connections) if max_connections > 0 else None
        self._closed = False
        self._busy = 0  # connections handed out and not yet released
        self._drained: trio.Event | None = None
        Watchdog.__init__(self)
        self._literals: dict[str, int] = {}  # host -> address family of an IP literal, 0 for a name

    @property
    def idle_connections(self) -> int:
        return sum(len(v) for v in self._idle.values())

    def _ssl(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    async def _connect(self, origin: tuple[bytes, bytes, int], timeout_s: float) -> Connection:
        scheme, host, port = origin
        hostname = host.decode("ascii")
        with trio.move_on_after(timeout_s):
            try:
                tcp = await self._open_tcp(hostname, port)
            except OSError as exc:
                reason = exc.strerror or exc
                raise httpx.ConnectError(f"cannot connect to upstream {hostname}:{port}: {reason}") from exc
            if scheme == b"https":
                tls = trio.SSLStream(tcp, self._ssl(), server_hostname=hostname, https_compatible=True)
                ok = False
                try:
                    await tls.do_handshake()
                    ok = True
                except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
                    cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else exc
                    raise httpx.ConnectError(f"TLS handshake with upstream {hostname}:{port} failed: {cause}") from exc
                finally:
                    if not ok:  # failed, timed out or cancelled: the socket must not wait for the GC
                        await trio.aclose_forcefully(tcp)
                return Connection(origin, tls, tcp.socket.fileno(), plain=False)
            return Connection(origin, tcp, tcp.socket.fileno(), plain=True)
        raise httpx.ConnectTimeout(f"connecting to upstream {hostname}:{port} took longer than {timeout_s:g} s")

    async def _open_tcp(self, host: str, port: int) -> trio.SocketStream:
        """A TCP stream to ``host``; an IP literal is connected to directly.

        ``trio.open_tcp_stream`` resolves even a literal (``getaddrinfo``) and races attempts in a
        nursery of its own, for every request that opens an upstream connection. A name still goes through it
        (happy eyeballs).
        """
        family = self._literals.get(host)
        if family is None:
            try:
                family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
            except ValueError:
                family = 0
            self._literals[host] = family
        if not family:
            return await trio.open_tcp_stream(host, port)
        sock = trio.socket.socket(family, socket.SOCK_STREAM)
        try:
            await sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        return trio.SocketStream(sock)  # sets TCP_NODELAY, as open_tcp_stream's streams have

    async def _acquire(
        self, origin: tuple[bytes, bytes, int], timeouts: dict[str, float | None], *, fresh: bool = False
    ) -> tuple[Connection, bool]:
        """A connection to ``origin`` and whether it was reused from the pool."""
        if self._limit is not None:
            pool_s = timeouts.get("pool") or self._timeouts.pool_s
            with trio.move_on_after(pool_s) as scope:
                await self._limit.acquire()
            if scope.cancelled_caught:
                raise httpx.PoolTimeout(f"no upstream connection free within {pool_s:g} s")
        try:
            idle = None if fresh else self._idle.get(origin)
            while idle:
                conn = idle.pop()
                # A pooled connection the server has closed shows as readable (EOF); skip it.
                if is_dead(conn):
                    await conn.close()
                    continue
                self._busy += 1
                return conn, True
            conn = await self._connect(origin, timeouts.get("connect") or self._timeouts.connect_s)
            self._busy += 1
            return conn, False
        except BaseException:
            if self._limit is not None:
                self._limit.release()
            raise

    async def release(self, conn: Connection, *, reusable: bool) -> None:
        """Take ``conn`` back when its response ended (``ResponseStream``): kept idle if ``reusable``, else closed."""
        self._unwatch(conn)
        try:
            states = (conn.h11.our_state, conn.h11.their_state) if conn.h11 is not None else None
            if reusable and not self._closed and states in REUSABLE and not unread(conn):
                if states[0] is h11.DONE:
                    conn.h11.start_next_cycle()
                idle = self._idle.get(conn.origin)
                if idle is None:
                    idle = self._idle[conn.origin] = collections.deque()
                if len(idle) < self._max_idle:
                    conn.idle_since = trio.current_time()
                    idle.append(conn)
                    return
            await conn.close()
        finally:
            if self._limit is not None:
                self._limit.release()
            self._busy -= 1
            if not self._busy and self._drained is not None:
                self._drained.set()

    async def expire_idle(self, now: float) -> None:
        """Close the pooled connections idle for ``pool_idle_s`` or longer (each deque's oldest come first)."""
        cutoff = now - self._timeouts.pool_idle_s
        for idle in list(self._idle.values()):
            while idle and idle[0].idle_since <= cutoff:
                await idle.popleft().close()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body: bytes | Upload
        if isinstance(request.stream, httpx.ByteStream):
            body = b"".join([part async for part in request.stream])
        else:
            body = Upload(request.stream)  # type: ignore[arg-type]  # streamed: sent part by part as it comes
        return await self._request(request.method, request.url, request.headers.raw, body,
                                   request.extensions.get("timeout", {}))  # fmt: skip

    async def send_bytes(self, method: str, url: httpx.URL, headers: list[tuple[bytes, bytes]], body: bytes | None,
                         timeouts: dict[str, float | None]) -> httpx.Response:  # fmt: skip
        """:meth:`handle_async_request` for a body in hand (or none), without an ``httpx.Request`` built only to be
        taken apart here: ``Host`` and ``Content-Length`` are added where and as httpx adds them, so the upstream
        reads the same bytes."""
        auto = [(b"Host", url.netloc)]
        if body is None:
            if method in _LENGTH_REQUIRED:
                auto.append((b"Content-Length", b"0"))
            headers = [*auto, *headers]
        else:
            headers = [*auto, *headers, (b"Content-Length", b"%d" % len(body))]
        return await self._request(method, url, headers, body or b"", timeouts)

    async def _request(self, method: str | bytes, url: httpx.URL, headers: list[tuple[bytes, bytes]],
                       body: bytes | Upload, timeouts: dict[str, float | None]) -> httpx.Response:  # fmt: skip
        origin = (url.raw_scheme, url.raw_host, url.port or (443 if url.raw_scheme == b"https" else 80))
        head = h11.Request(method=method, target=url.raw_path, headers=headers)
        conn, reused = await self._acquire(origin, timeouts)
        try:
            return await self._exchange(conn, head, body)
        except Unsent:
            if not reused:
                raise
        # A pooled connection the upstream had reset, found by a first write that wrote nothing: the request
        # never left, so it goes out on a new connection. Any other failure (the request, or part of it, may
        # have reached the upstream) is raised to the caller, never re-sent.
        conn, _ = await self._acquire(origin, timeouts, fresh=True)
        return await self._exchange(conn, head, body)

    async def _exchange(self, conn: Connection, head: h11.Request, body: bytes | Upload) -> httpx.Response:
        try:
            idle_s = self._timeouts.idle_s
            out = conn.h11.send(head)
            if type(body) is Upload:
                await send_first(conn, out, idle_s)
                await body.send(conn, idle_s)
                await send_all(conn, conn.h11.send(h11.EndOfMessage()), idle_s)
            else:
                if body:
                    out += conn.h11.send(h11.Data(data=body))
                await send_first(conn, out + conn.h11.send(h11.EndOfMessage()), idle_s)
            self._watch(conn)
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    await conn.receive("the response headers", self._watching)
                elif type(event) is h11.Response:
                    break
                elif type(event) is not h11.InformationalResponse:
                    raise httpx.RemoteProtocolError("upstream closed the connection without a response")
        except BaseException:
            await self.release(conn, reusable=False)
            raise
        chunked = None
        keep_alive = True
        if head.method != b"HEAD" and event.status_code not in (204, 304):
            # h11 accepts no transfer coding but chunked, so the header's presence means chunked.
            if any(name == b"transfer-encoding" for name, _ in event.headers):
                chunked = ChunkedDecoder()
                keep_alive = event.http_version == b"1.1" and not any(
                    name == b"connection" and b"close" in value.lower() for name, value in event.headers
                )
                conn.body = b""
                rest, _ = conn.h11.trailing_data  # what the read that completed the head brought of the body
                # h11 is done with this response (the decoder takes the body): not held while it streams
                # (its state machine and buffer, per open stream); a fresh one serves the next request.
                conn.h11 = None
                if rest:
                    try:
                        conn.body = chunked.feed(rest)
                    except ChunkedError as exc:
                        await self.release(conn, reusable=False)
                        raise httpx.RemoteProtocolError(f"upstream sent invalid HTTP: {exc}") from exc
        stream = ResponseStream(conn, self, self._timeouts.idle_s, chunked, keep_alive)
        return httpx.Response(
            status_code=event.status_code,
            headers=event.headers.raw_items(),
            stream=stream,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": event.reason, READER: stream},
        )

    async def aclose(self) -> None:
        """Close the idle connections; each one in use is closed when its response ends (:meth:`drained`)."""
        self._closed = True
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                await conn.close()

    async def drained(self) -> None:
        """Until no connection is in use: after :meth:`aclose`, the last response ended and its connection closed
        (a reload retires an upstream's transport once its requests are done)."""
        while self._busy:
            self._drained = trio.Event()
            await self._drained.wait()
        self._drained = None


class Upload:
    """A request body that streams: each part goes upstream as the client's side yields it.

    Framing follows the request's headers (h11 decides): its Content-Length when the client gave
    one, else chunked. Its parts are taken only once the head was sent, so a re-send (see
    ``H11Transport.handle_async_request``) never needs a part again. An upstream that takes no part
    for the idle timeout ends it with WriteTimeout; a slow client only delays the parts.
    """

    __slots__ = ("_parts",)

    def __init__(self, parts: AsyncIterable[bytes]) -> None:
        self._parts = parts

    async def send(self, conn: Connection, idle_s: float) -> None:
        """Send every part (the head is out already; the end of the message is the caller's)."""
        async for part in self._parts:
            if part:
                try:
                    data = conn.h11.send(h11.Data(data=part))
                except h11.LocalProtocolError as exc:  # more than the declared Content-Length
                    raise httpx.WriteError(f"request body does not match its length: {exc}") from exc
                await send_all(conn, data, idle_s)
