"""A lean HTTP/1.1 transport for httpx: trio sockets, h11 framing, an O(1) connection pool.

Why not httpx's default transport: httpcore's pool re-examines every connection on each request and
each response close, and wraps every read in anyio layers. Measured here with one shared
``httpx.AsyncClient``, a relayed chunk cost 0.64 ms of CPU at 100 streams and 1.8 ms at 1,000 —
the pool bookkeeping grows with N. This transport keeps idle connections in a per-origin list
(pop/append), bounds the total with one semaphore, and reads with one cancel scope per read.

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

import heapq
import ipaddress
import itertools
import math
import os
import socket
import ssl
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

import h11
import httpx
import trio

from .chunked import ChunkedDecoder, ChunkedError

_READ_SIZE = 65536
_NEXT_PART = "the next part of the response"
READER = "moonrelay.reader"  # response extension: the body reader, for callers that skip httpx's iterators
HEARTBEAT = "heartbeat"  # Interrupted reasons: the upstream has been silent a while (the response goes on) ...
SHUTDOWN = "shutdown"  # ... or the relay is stopping (the response ends)


# h11 states (ours, theirs) of a connection that may serve another request: after a response h11
# read to its end, or a fresh state machine after a body decoded by ChunkedDecoder.
_REUSABLE = ((h11.DONE, h11.DONE), (h11.IDLE, h11.IDLE))


class _Unsent(httpx.WriteError):
    """The connection failed before it took any byte of the request: the upstream cannot have seen it."""


class Interrupted(Exception):
    """A wait for upstream bytes cut short on purpose (see ``_ResponseStream.interrupt``); not a transport error."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect_s: float = 10.0
    first_byte_s: float = 300.0
    idle_s: float = 300.0  # between two reads of a response body
    pool_s: float = 30.0
    total_s: float = 3600.0  # the whole exchange, headers and body


class _Connection:
    __slots__ = (
        "origin", "stream", "h11", "fd", "plain", "deadline", "total", "queued", "gen", "expired", "ping", "body",
    )  # fmt: skip

    def __init__(self, origin: tuple[bytes, bytes, int], stream: trio.abc.Stream, fd: int, plain: bool) -> None:
        self.origin = origin
        self.stream = stream
        self.h11: h11.Connection | None = self.new_h11()  # None while a chunked body streams (decoded by us)
        self.body = b""  # body bytes decoded by a ChunkedDecoder and not yet handed out
        self.fd = fd  # the socket's fd, waited on directly
        self.plain = plain  # no TLS: read the fd ourselves
        self.deadline = math.inf  # absolute trio time at which the current wait expires
        self.total = math.inf
        self.queued = math.inf  # the due time of this connection's live entry in the watchdog's heap
        self.gen = 0  # bumps per request, so the watchdog can drop stale entries
        self.expired: str | None = None  # a timeout's name, or SHUTDOWN
        self.ping = False  # a heartbeat asked the current wait to stop (looked at only when a wait fails)

    @staticmethod
    def new_h11() -> h11.Connection:
        return h11.Connection(h11.CLIENT, max_incomplete_event_size=256 * 1024)

    async def receive(self, what: str, watched: bool) -> None:
        """Read once into h11; a deadline that passes while waiting ends in ReadTimeout.

        With the watchdog running (``watched``), the wait carries no cancel scope: the watchdog
        wakes an expired waiter through ``notify_closing``. Two cancel scopes per chunk (idle and
        total deadlines) were ~13 % of the relay's CPU in a py-spy profile at 1,000 streams.
        """
        data = await self.read(what, watched)
        try:
            self.h11.receive_data(data)
        except h11.RemoteProtocolError as exc:
            raise httpx.RemoteProtocolError(f"upstream sent invalid HTTP: {exc}") from exc

    async def read(self, what: str, watched: bool) -> bytes:
        """The bytes of one socket read (b"" at EOF), under the same deadlines as ``receive``."""
        if self.expired:
            raise self._stopped(what)
        if watched:
            return await self._read(what)
        data = None
        with trio.move_on_at(min(self.deadline, self.total)):
            data = await self._read(what)
        if data is None:
            raise httpx.ReadTimeout(f"upstream sent nothing for {what} in time")
        return data

    async def _read(self, what: str) -> bytes:
        try:
            if self.plain:
                # Wait, then read the fd: trio's recv tries first and raises BlockingIOError on
                # the (usual) empty socket before it waits; this skips that exception per chunk.
                while True:
                    await trio.lowlevel.wait_readable(self.fd)
                    try:
                        return os.read(self.fd, _READ_SIZE)
                    except BlockingIOError:
                        continue
            return await self.stream.receive_some(_READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise self.read_failed(exc, what) from exc

    def read_failed(self, exc: BaseException, what: str) -> Exception:
        """What a read that failed with ``exc`` means: a timeout or shutdown, a heartbeat, or a broken connection."""
        if self.expired:
            return self._stopped(what)
        if self.ping and type(exc) is trio.ClosedResourceError:
            # Woken by notify_closing for a heartbeat: nothing was read, the socket (TLS too) is intact.
            self.ping = False
            return Interrupted(HEARTBEAT)
        return httpx.ReadError(f"upstream connection broken while waiting for {what}")

    def _stopped(self, what: str) -> Exception:
        if self.expired == SHUTDOWN:
            return Interrupted(SHUTDOWN)
        return httpx.ReadTimeout(f"upstream sent nothing for {what} within the {self.expired} timeout")

    def expire(self, reason: str) -> None:
        self.expired = reason
        trio.lowlevel.notify_closing(self.fd)

    def next_event(self) -> object:
        try:
            return self.h11.next_event()
        except h11.RemoteProtocolError as exc:
            raise httpx.RemoteProtocolError(f"upstream sent invalid HTTP: {exc}") from exc

    async def close(self) -> None:
        with trio.CancelScope(shield=True):
            try:
                await trio.aclose_forcefully(self.stream)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass


class _ResponseStream(httpx.AsyncByteStream):
    """The response body: yields what each socket read completed, then gives the connection back."""

    __slots__ = ("_conn", "_transport", "_idle_s", "_done", "_closed", "_pinged", "_chunked", "_keep_alive")

    def __init__(
        self, conn: _Connection, transport: H11Transport, idle_s: float, chunked: ChunkedDecoder | None = None,
        keep_alive: bool = True,
    ) -> None:  # fmt: skip
        """``chunked``: decode the body here instead of through h11 (see :mod:`proxy.chunked`); h11 has
        parsed the head, and ``keep_alive`` says whether that head allows reusing the connection."""
        self._conn = conn
        self._transport = transport
        self._idle_s = idle_s
        self._done = False
        self._closed = False
        self._pinged = False  # the last wait was cut short by a heartbeat: the silence (and its deadline) goes on
        self._chunked = chunked
        self._keep_alive = keep_alive

    async def receive_chunk(self) -> bytes:
        """The body bytes one socket read completed; b"" at the end of the body.

        Everything one read completed goes out as one piece: a relay that is behind sends fewer,
        larger writes instead of falling further behind. No async generator on this path: the
        relay calls it directly (see ``reader()``), so nothing is left for the GC to finalise.
        """
        conn = self._conn
        watched = self._transport._watching
        while not self._done:
            data = self._drain()
            if data:
                conn.deadline = math.inf  # not waiting: a slow client is not upstream silence
                return data
            if not self._done:
                if self._pinged:
                    self._pinged = False
                    due = conn.deadline
                else:
                    due = conn.deadline = trio.current_time() + self._idle_s
                if due < conn.queued and watched:
                    self._transport._queue(conn, due)  # earlier than the heap knows: rare (first-byte → idle)
                try:
                    if self._chunked is None:
                        await conn.receive(_NEXT_PART, watched)
                    elif conn.plain and watched and not conn.expired:
                        # conn.read's plain, watched case inline: two frames fewer held under every open
                        # stream and walked through on every read.
                        try:
                            await trio.lowlevel.wait_readable(conn.fd)
                            data = os.read(conn.fd, _READ_SIZE)
                        except BlockingIOError:
                            continue
                        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                            raise conn.read_failed(exc, _NEXT_PART) from exc
                        self._feed(data)
                    else:
                        self._feed(await conn.read(_NEXT_PART, watched))
                except Interrupted:
                    self._pinged = True
                    raise
        return b""

    def _feed(self, data: bytes) -> None:
        if not data:
            raise httpx.RemoteProtocolError("upstream closed the connection before the response ended")
        try:
            self._conn.body = self._chunked.feed(data)  # type: ignore[union-attr]
        except ChunkedError as exc:
            raise httpx.RemoteProtocolError(f"upstream sent invalid HTTP: {exc}") from exc

    @property
    def ended(self) -> bool:
        """The last ``receive_chunk`` returned the body's last bytes: the next one returns b"" without waiting."""
        return self._done

    def silent_since(self) -> float | None:
        """The trio time since which this response has been waiting for upstream bytes; None if not waiting."""
        deadline = self._conn.deadline
        if deadline == math.inf or self._done or self._closed:
            return None
        return deadline - self._idle_s

    def interrupt(self, reason: str) -> None:
        """Make the current wait for upstream bytes raise ``Interrupted(reason)`` in the reading task.

        HEARTBEAT acts only on a waiting response and leaves it usable (read again to go on);
        SHUTDOWN also stops any later read. Both wake the waiter through ``notify_closing``, like
        the watchdog's timeouts: no cancel scope per read.
        """
        conn = self._conn
        if self._done or self._closed or conn.expired:
            return
        waiting = conn.deadline != math.inf
        if reason == SHUTDOWN:
            conn.expired = SHUTDOWN
        elif waiting:
            conn.ping = True
        if waiting:
            trio.lowlevel.notify_closing(conn.fd)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while chunk := await self.receive_chunk():
            yield chunk

    def _drain(self) -> bytes:
        conn = self._conn
        if self._chunked is not None:
            data, conn.body = conn.body, b""
            self._done = self._chunked.done
            return data
        parts = []
        while True:
            event = conn.next_event()
            if type(event) is h11.Data:
                parts.append(event.data)
            elif event is h11.NEED_DATA:
                break
            elif type(event) is h11.EndOfMessage:
                self._done = True
                break
            elif event is h11.PAUSED:
                break
            elif type(event) is h11.ConnectionClosed:
                raise httpx.RemoteProtocolError("upstream closed the connection before the response ended")
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        conn = self._conn
        reusable = self._done
        if self._chunked is not None:
            # h11 saw only the head; a fresh state machine serves the next request on this socket.
            reusable = reusable and self._keep_alive and not self._chunked.leftover
            if reusable:
                conn.h11 = conn.new_h11()
        await self._transport._release(conn, reusable=reusable)


class H11Transport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over trio for httpx, keep-alive pooled per origin, limits set deliberately."""

    def __init__(
        self,
        *,
        max_connections: int = 0,
        timeouts: Timeouts = Timeouts(),
        ssl_context: ssl.SSLContext | None = None,
        max_idle_per_origin: int = 10_000,
    ) -> None:
        self._timeouts = timeouts
        self._ssl_context = ssl_context
        self._max_idle = max_idle_per_origin
        self._idle: dict[tuple[bytes, bytes, int], list[_Connection]] = {}
        self._limit = trio.Semaphore(max_connections) if max_connections > 0 else None
        self._closed = False
        self._watching = False
        self._deadlines: list[tuple[float, int, _Connection, int]] = []
        self._seq = itertools.count()
        self._literals: dict[str, int] = {}  # host -> address family of an IP literal, 0 for a name

    async def run_watchdog(self, *, tick_s: float = 0.1, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Enforce first-byte, idle and total timeouts for every connection from one task.

        Each read only stores an absolute deadline; this task wakes every ``tick_s``, pops the
        deadlines that passed from a heap, re-queues those that moved, and expires the rest.
        Without it running, each read falls back to its own cancel scope.
        """
        self._watching = True
        task_status.started()
        try:
            heap = self._deadlines
            while True:
                await trio.sleep(tick_s)
                now = trio.current_time()
                while heap and heap[0][0] <= now:
                    at, _, conn, gen = heapq.heappop(heap)
                    if conn.gen != gen or at != conn.queued:
                        continue  # that request is over, or a newer entry stands for it
                    due = min(conn.deadline, conn.total)
                    if due > now:
                        # Moved on since it was queued (or not waiting: look again after an idle period).
                        self._queue(conn, due if due != math.inf else now + self._timeouts.idle_s)
                    else:
                        conn.queued = math.inf
                        conn.expire("total" if conn.total <= now else "idle or first-byte")
        finally:
            self._watching = False

    def _queue(self, conn: _Connection, due: float) -> None:
        conn.queued = due
        heapq.heappush(self._deadlines, (due, next(self._seq), conn, conn.gen))

    def _watch(self, conn: _Connection) -> None:
        now = trio.current_time()
        conn.gen += 1
        conn.expired = None
        conn.ping = False
        conn.deadline = now + self._timeouts.first_byte_s
        conn.total = now + self._timeouts.total_s
        if self._watching:
            self._queue(conn, min(conn.deadline, conn.total))

    @property
    def idle_connections(self) -> int:
        return sum(len(v) for v in self._idle.values())

    def _ssl(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    async def _connect(self, origin: tuple[bytes, bytes, int], timeout_s: float) -> _Connection:
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
                return _Connection(origin, tls, tcp.socket.fileno(), plain=False)
            return _Connection(origin, tcp, tcp.socket.fileno(), plain=True)
        raise httpx.ConnectTimeout(f"connecting to upstream {hostname}:{port} took longer than {timeout_s:g} s")

    async def _open_tcp(self, host: str, port: int) -> trio.SocketStream:
        """A TCP stream to ``host``; an IP literal is connected to directly.

        ``trio.open_tcp_stream`` resolves even a literal (``getaddrinfo``) and races attempts in a
        nursery of its own: 4.9 % of the relay's CPU in a py-spy profile at 1,000 new streams, where
        each request opened an upstream connection. A name still goes through it (happy eyeballs).
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
    ) -> tuple[_Connection, bool]:
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
                if _is_dead(conn):
                    await conn.close()
                    continue
                return conn, True
            return await self._connect(origin, timeouts.get("connect") or self._timeouts.connect_s), False
        except BaseException:
            if self._limit is not None:
                self._limit.release()
            raise

    async def _release(self, conn: _Connection, *, reusable: bool) -> None:
        conn.gen += 1
        conn.deadline = conn.total = conn.queued = math.inf
        try:
            states = (conn.h11.our_state, conn.h11.their_state) if conn.h11 is not None else None
            if reusable and not self._closed and states in _REUSABLE and not _unread(conn):
                if states[0] is h11.DONE:
                    conn.h11.start_next_cycle()
                idle = self._idle.setdefault(conn.origin, [])
                if len(idle) < self._max_idle:
                    idle.append(conn)
                    return
            await conn.close()
        finally:
            if self._limit is not None:
                self._limit.release()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        origin = (url.raw_scheme, url.raw_host, url.port or (443 if url.raw_scheme == b"https" else 80))
        timeouts = request.extensions.get("timeout", {})
        body: bytes | _Upload
        if isinstance(request.stream, httpx.ByteStream):
            body = b"".join([part async for part in request.stream])
        else:
            body = _Upload(request.stream)  # type: ignore[arg-type]  # streamed: sent part by part as it comes
        head = h11.Request(method=request.method, target=url.raw_path, headers=request.headers.raw)
        conn, reused = await self._acquire(origin, timeouts)
        try:
            return await self._exchange(conn, head, body)
        except _Unsent:
            if not reused:
                raise
        # A pooled connection the upstream had reset, found by a first write that wrote nothing: the request
        # never left, so it goes out on a new connection. Any other failure (the request, or part of it, may
        # have reached the upstream) is raised to the caller, never re-sent.
        conn, _ = await self._acquire(origin, timeouts, fresh=True)
        return await self._exchange(conn, head, body)

    async def _exchange(self, conn: _Connection, head: h11.Request, body: bytes | _Upload) -> httpx.Response:
        try:
            idle_s = self._timeouts.idle_s
            out = conn.h11.send(head)
            if type(body) is _Upload:
                await _send_first(conn, out, idle_s)
                await body.send(conn, idle_s)
                await _send_all(conn, conn.h11.send(h11.EndOfMessage()), idle_s)
            else:
                if body:
                    out += conn.h11.send(h11.Data(data=body))
                await _send_first(conn, out + conn.h11.send(h11.EndOfMessage()), idle_s)
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
            await self._release(conn, reusable=False)
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
                # (its state machine and buffer, ~1 KB per open stream); a fresh one serves the next request.
                conn.h11 = None
                if rest:
                    try:
                        conn.body = chunked.feed(rest)
                    except ChunkedError as exc:
                        await self._release(conn, reusable=False)
                        raise httpx.RemoteProtocolError(f"upstream sent invalid HTTP: {exc}") from exc
        stream = _ResponseStream(conn, self, self._timeouts.idle_s, chunked, keep_alive)
        return httpx.Response(
            status_code=event.status_code,
            headers=event.headers.raw_items(),
            stream=stream,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": event.reason, READER: stream},
        )

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                await conn.close()


class _Upload:
    """A request body that streams: each part goes upstream as the client's side yields it.

    Framing follows the request's headers (h11 decides): its Content-Length when the client gave
    one, else chunked. Its parts are taken only once the head was sent, so a re-send (see
    ``H11Transport.handle_async_request``) never needs a part again. An upstream that takes no part
    for the idle timeout ends it with WriteTimeout; a slow client only delays the parts.
    """

    __slots__ = ("_parts",)

    def __init__(self, parts: AsyncIterable[bytes]) -> None:
        self._parts = parts

    async def send(self, conn: _Connection, idle_s: float) -> None:
        """Send every part (the head is out already; the end of the message is the caller's)."""
        async for part in self._parts:
            if part:
                try:
                    data = conn.h11.send(h11.Data(data=part))
                except h11.LocalProtocolError as exc:  # more than the declared Content-Length
                    raise httpx.WriteError(f"request body does not match its length: {exc}") from exc
                await _send_all(conn, data, idle_s)


async def _send_first(conn: _Connection, data: bytes, timeout_s: float) -> None:
    """The request's first write: ``_Unsent`` if the connection failed before taking a byte of it.

    A plain socket gets one ``os.write`` first: no scheduler round trip when it takes it all (nearly
    always), and a failure there is known to have written nothing. After a partial write, and over
    TLS (whose records may have gone out in part), a failure may have delivered bytes: WriteError.
    """
    if conn.plain:
        try:
            sent = os.write(conn.fd, data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise _Unsent("upstream connection was closed before the request was sent") from exc
        if sent == len(data):
            return
        data = data[sent:]
    await _send_all(conn, data, timeout_s)


async def _send_all(conn: _Connection, data: bytes, timeout_s: float) -> None:
    with trio.move_on_after(timeout_s) as scope:
        try:
            await conn.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise httpx.WriteError("upstream connection broke while sending the request") from exc
    if scope.cancelled_caught:
        raise httpx.WriteTimeout(f"upstream took no request body for {timeout_s:g} s")


def _unread(conn: _Connection) -> bool:
    """Bytes past the end of the response are already off the socket: in h11's buffer (any framing h11
    read), or, over TLS, decrypted or still-encrypted records the socket's readability cannot show."""
    data, closed = conn.h11.trailing_data
    if data or closed:
        return True
    if conn.plain:
        return False
    stream = conn.stream
    return bool(stream.pending() or getattr(getattr(stream, "_incoming", None), "pending", 0))  # type: ignore[attr-defined]


def _is_dead(conn: _Connection) -> bool:
    """At pick-up from the pool: a readable idle socket holds EOF, a reset or bytes nobody asked for; not reused."""
    stream = conn.stream
    sock = getattr(stream, "socket", None)
    if sock is None:
        sock = getattr(getattr(stream, "transport_stream", None), "socket", None)
    if sock is None:
        return False
    try:
        return bool(sock.is_readable())
    except OSError:
        return True


class _IteratorReader:
    """``receive_chunk``/``aclose`` over any httpx response (the httpcore transport's, say)."""

    __slots__ = ("_it",)

    def __init__(self, response: httpx.Response) -> None:
        self._it = response.aiter_raw()

    async def receive_chunk(self) -> bytes:
        try:
            return await self._it.__anext__()
        except StopAsyncIteration:
            return b""

    async def aclose(self) -> None:
        await self._it.aclose()

    ended = False  # not known here before the iterator says so

    def silent_since(self) -> float | None:
        return None  # not known here: no heartbeats over other transports

    def interrupt(self, reason: str) -> None:
        pass  # cannot be woken: on shutdown hypercorn's graceful timeout ends these


def reader(response: httpx.Response) -> _ResponseStream | _IteratorReader:
    """The cheapest way to read ``response``'s body chunk by chunk.

    Our transport's reader skips httpx's three async-generator layers per chunk; any other
    transport gets a plain wrapper around ``aiter_raw``.
    """
    found = response.extensions.get(READER)
    return found if found is not None else _IteratorReader(response)
