"""Our hypercorn connection (``TCPServer``): keep-alive timeouts that work under quart-trio + hypercorn 0.18.

Under quart-trio, once a connection has served one request, hypercorn's keep-alive timer never fires
under a QuartTrio app (a bare ASGI app under the same hypercorn closes an idle connection after
``keep_alive_timeout``), so idle client connections hold their fds until the client leaves. Two
causes, two small fixes:

1. hypercorn re-arms the timer from inside the app's last ``send``, and quart-trio has already
   cancelled that task (it saw ``http.disconnect``), so the new timer task dies at once: each
   response's last body message is sent shielded (:func:`send_last`, :func:`shielding_last`; the
   observability layer, :class:`proxy.observability.Observer`, does it for every call). The socket write
   itself is shielded already, and bounded by the client write deadline (``TCPServer._send_rest``,
   :func:`._direct.send_rest`), so this adds no new way to block. (The timer below needs no
   task, but the shield is still what lets a response on a closing connection end cleanly:
   without it tests/relay/functional/test_direct.py's HTTP/1.0 and ``connection: close`` cases fail.)
   The same layer marks a response sent before its request body was read as ``connection: close``
   (:func:`request_body_unread`).
2. With a live timer, a connection the *client* closes would linger until the timer runs out
   (hypercorn does not stop it on EOF: each closed connection kept an fd and two tasks):
   ``TCPServer`` stops the timer when the read side ends.

Instead of hypercorn's timer task (``TrioSingleTask``: a task started and a task cancelled for every
request, a visible share of the relay's CPU), the timer is a deadline
on the cancel scope around the connection's read loop, moved at each idle/busy change.

The same ``TCPServer`` also names itself in a context variable for the app's tasks, so a streamed
body can write its chunks straight to the socket (:mod:`._direct`), and writes hypercorn's own
bytes (response heads, terminators, whole small responses) with one non-blocking ``os.write`` where the
socket takes them, instead of ``send_all`` under a ``trio.Lock`` and a shielded scope: four scheduler
round trips per write (lock acquire and ``send_all``'s two checkpoints each side). Only when the buffer
is full, or another write holds the lock, does the rest go hypercorn's way, with the client write
deadline added: a client that stops reading has its connection aborted after ``client_write_timeout_s``
instead of holding the write (and the request's stream and upstream slot) forever. Bytes a direct writer
left in ``pending`` (a body's last piece) go out first, in the same write.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import h11
import hypercorn.trio.run
import trio
from hypercorn.events import Closed, Event, RawData
from hypercorn.protocol import ProtocolWrapper
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.tcp_server import MAX_RECV
from hypercorn.trio.tcp_server import TCPServer as _HypercornTCPServer
from hypercorn.typing import ConnectionState
from hypercorn.utils import parse_socket_addr

from ._direct import CONNECTION, NO_CONFIG, ClientWrites, abort, send_rest
from ._taken import TAKEN


async def send_last(send: Callable, message: dict) -> None:
    """Send a response's last body message shielded (see 1. above)."""
    with trio.CancelScope(shield=True):
        await send(message)


def shielding_last(send: Callable) -> Callable:
    """``send`` with each response's last body message shielded, for a call that is not observed."""

    async def send_shielding_last(message: dict) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            with trio.CancelScope(shield=True):
                await send(message)
        else:
            await send(message)

    return send_shielding_last


def write_timed_out() -> bool:
    """A write on this task's connection ran past the client write deadline (once per request: its log line)."""
    return getattr(CONNECTION.get(), "write_timed_out", False)


def request_body_unread() -> bool:
    """The response starts before its request's body was read to the end (a 401, 413 or 415 sent early).

    hypercorn closes such a connection once the response ends (h11 cannot start the next request),
    without telling the client; a client that then reuses it gets "Server disconnected without sending
    a response" (it raced our close: tests/relay/functional/test_reliability.py's 413 case failed in CI). So the head
    says ``connection: close``, as nginx's 413 does; h11 then also marks the connection as closing.
    """
    server = CONNECTION.get()
    conn = getattr(getattr(getattr(server, "protocol", None), "protocol", None), "connection", None)
    if type(conn) is h11.Connection and conn.their_state is h11.SEND_BODY:
        TAKEN.early_close += 1
        return True
    return False


class _IdleDeadline:
    """hypercorn's keep-alive timer (``restart``/``stop``, as ``TrioSingleTask``) as a deadline on ``scope``."""

    __slots__ = ("scope", "_timeout_s")

    def __init__(self, timeout_s: float) -> None:
        self.scope = trio.CancelScope()  # entered around the read loop; a passed deadline ends the connection
        self._timeout_s = timeout_s

    async def restart(self, task_group: object, action: Callable) -> None:
        self.scope.deadline = trio.current_time() + self._timeout_s

    async def stop(self) -> None:
        self.scope.deadline = math.inf


class OpenConnections:
    """Client connections a worker serves now (``/healthz``): counted from the connection's start to its end,
    whichever connection class serves it, so that after any load it is back to what the probe itself holds."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


NOT_COUNTED = OpenConnections()  # for a connection whose hypercorn config was not made by proxy.edge


class TCPServer(_HypercornTCPServer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        TAKEN.own_connection += 1
        self.idle_task = _IdleDeadline(self.config.keep_alive_timeout)  # type: ignore[assignment]
        self.pending = b""  # framed body bytes left for the next write (._direct.DirectWriter.defer)
        self.hold_head = False  # the next write is a whole response's head: it waits for its body (._inline)
        # Plain TCP only: a TLS stream's bytes are not the socket's.
        self._fd = self.stream.socket.fileno() if type(self.stream) is trio.SocketStream else -1
        # The read loop is ours (_read_data reads the fd): it can tell a request in flight that its client left.
        self.watches_eof = self._fd >= 0 and self.config.read_timeout is None
        self.eof_scope: trio.CancelScope | None = None
        self.client_eof = False
        # The client write deadline (._direct.send_rest); set when a write ran past it: the connection was
        # aborted, and the request it served says so in its log line and the metrics (proxy.observability).
        self.writes: ClientWrites = getattr(self.config, "client_writes", None) or NO_CONFIG
        self.write_timed_out = False

    async def protocol_send(self, event: Event) -> None:
        if type(event) is RawData:
            data = event.data
            if self.hold_head:  # a whole response's head: it goes out with the body, one write instead of two
                self.hold_head = False
                self.pending += data
                return
            if self.pending:
                data, self.pending = self.pending + data, b""
            elif not data:  # h11's end of a length-framed body: nothing to write
                return
            if self._fd >= 0 and not self.send_lock.locked() and self._keeps_alive():
                try:
                    sent = os.write(self._fd, data)
                except OSError:  # a full buffer, or the peer is gone: hypercorn's send_all handles both its way
                    sent = 0
                if sent == len(data):
                    TAKEN.raw_write += 1
                    return
                data = data[sent:]
            await self._send_rest(data)
            return
        if type(event) is Closed and self.pending:  # no terminator came (an app error): the piece still goes
            pending, self.pending = self.pending, b""
            await self._send_rest(pending)
        await super().protocol_send(event)

    async def _send_rest(self, data: bytes) -> None:
        """hypercorn's write (locked, shielded), with the client write deadline: past it, the connection is aborted."""
        sent = await send_rest(self.stream, self.send_lock, data, self.writes)
        if sent is None:
            self.write_timed_out = True
            abort(self.stream)
        if not sent:
            await self.protocol.handle(Closed())

    async def _close(self) -> None:
        """hypercorn's close, without its half-close when the client has closed already (the usual end of a
        connection): ``send_eof`` is a ``shutdown`` and a scheduler round trip that ``close`` makes moot."""
        if self.client_eof:
            await self.stream.aclose()
        else:
            await super()._close()

    def _keeps_alive(self) -> bool:
        """The connection stays open after this response (h11's keep-alive state).

        A connection about to close keeps hypercorn's yielding writes: it closes with ``aclose`` right
        after, and request bytes still unread then (an upload refused with 413) make the kernel reset
        the connection; with the writes not yielding, the client had no turn to read the response first
        (tests/relay/functional/test_passthrough.py's 413 case failed 2 runs in 3).
        """
        conn = getattr(getattr(self.protocol, "protocol", None), "connection", None)
        return getattr(getattr(conn, "_cstate", None), "keep_alive", False) is True

    async def run(self) -> None:
        CONNECTION.set(self)  # this connection's task only; the app's tasks spawned from it inherit it
        opened = getattr(self.config, "connections", NOT_COUNTED)
        opened.count += 1
        try:
            if self._fd < 0:
                await super().run()  # TLS: hypercorn's handshake first
                return
            # hypercorn's run() for a plain TCP stream, in this one frame (held under every open connection;
            # hypercorn's own also tells TLS from TCP by catching an AttributeError, per connection).
            sock = self.stream.socket
            try:
                client = parse_socket_addr(sock.family, sock.getpeername())
                server = parse_socket_addr(sock.family, sock.getsockname())
                async with TaskGroup() as task_group:
                    self._task_group = task_group
                    self.protocol = ProtocolWrapper(
                        self.app, self.config, self.context, task_group, ConnectionState(self.state), False,
                        client, server, self.protocol_send, "http/1.1",
                    )  # fmt: skip
                    await self.protocol.initiate()
                    await self.idle_task.restart(self._task_group, self._idle_timeout)
                    await self._read_data()
            except OSError:
                pass
            finally:
                await self._close()
        finally:
            opened.count -= 1
            # hypercorn's protocol holds our protocol_send, a cycle the size of the whole connection (its
            # h11 state, streams, last request): broken here, refcounting frees it now instead of the GC later.
            self.protocol = None  # type: ignore[assignment]

    async def _read_data(self) -> None:
        """hypercorn's read loop (same exits) under the keep-alive deadline; on plain TCP, reading the fd itself.

        hypercorn reads through ``SocketStream.receive_some`` → trio's socket ``recv`` wrapper (a
        ``fail_after`` scope, an error-translating context manager, a first ``recv`` that raises
        BlockingIOError on the usual empty socket): five frames held under every open connection and
        walked on every read. Here: wait on the fd, then ``os.read`` it; the first read tries at once (a
        new connection's request is usually there already), later ones wait first (a keep-alive
        connection is usually idle).
        """
        idle = self.idle_task.scope  # type: ignore[attr-defined]
        try:
            with idle:
                if not self.watches_eof:
                    await super()._read_data()
                else:
                    TAKEN.own_read_loop += 1
                    fd = self._fd
                    handle = self.protocol.handle
                    sock = self.stream.socket
                    wait = False
                    while sock.fileno() == fd:  # -1 once closed by another task (the number may be reused)
                        try:
                            if wait:
                                await trio.lowlevel.wait_readable(fd)
                                if sock.fileno() != fd:  # closed while this task waited to run
                                    break
                            data = os.read(fd, MAX_RECV)
                        except BlockingIOError:
                            wait = True
                            continue
                        except (OSError, trio.ClosedResourceError, trio.BusyResourceError):
                            break  # reset, or closed under us (notify_closing): hypercorn's broken/closed stream
                        wait = True
                        ended = self.client_eof = not data
                        await handle(RawData(data))
                        # Not held while waiting: a request's bytes would live as long as its stream, a
                        # cost per open stream that grows with the prompt.
                        del data
                        if ended:
                            break
                    if self.eof_scope is not None:  # a request no body task watches (._inline): gone
                        self.eof_scope.cancel()
                    await handle(Closed())
        finally:
            idle.deadline = math.inf  # the peer is gone (or the timer fired): nothing left to time
        if idle.cancelled_caught:  # idle for keep_alive_timeout: close, as hypercorn's timer task would
            TAKEN.idle_close += 1
            with trio.CancelScope(shield=True):
                await self._initiate_server_close()


def _tcp_server(app: Any, config: Any, context: Any, state: Any, stream: Any) -> Any:
    """The connection hypercorn's trio worker makes for ``stream`` (and awaits): ours where the config asks for the
    fast paths (it counts itself), else hypercorn's, counted around its run."""
    if getattr(config, "fast_paths", False):
        return TCPServer(app, config, context, state, stream)
    server = _HypercornTCPServer(app, config, context, state, stream)
    return _counted(server, getattr(config, "connections", NOT_COUNTED))


async def _counted(server: _HypercornTCPServer, opened: OpenConnections) -> None:
    opened.count += 1
    try:
        await server.run()
    finally:
        opened.count -= 1


def install() -> None:
    """Make hypercorn's trio worker build its connections through :func:`_tcp_server` (it names the class by
    module global). A config without ``fast_paths = True`` still gets hypercorn's own."""
    hypercorn.trio.run.TCPServer = _tcp_server  # type: ignore[misc,assignment]
