"""A minimal Redis client over trio's own sockets: RESP2 commands on one pipelined connection.

Why not a library: coredis (anyio, so it runs under trio) spreads each call over per-connection reader and writer
tasks, and with it ``--state`` cost far more CPU per relayed chunk than its goal. The store needs five commands
(EVALSHA, SCRIPT LOAD, AUTH, SELECT, PING), so this sends them itself: the caller writes its command, one reader
task per connection hands each reply to the caller waiting for it, in order.

- :func:`encode` and :class:`Parser` are the sans-I/O part (bytes in, replies out), tested with plain bytes. The
  parser is a loop, not a recursion, and bounds what it accepts (nesting, string and array lengths, a line, what it
  buffers): the store's replies are small and flat, so anything beyond is a broken or hostile server.
- :class:`RedisConnection` is the I/O shell. A new connection authenticates (``AUTH``) and selects its database before
  any call may use it. A caller cancelled after its command went out leaves its place in the queue, and its reply is
  dropped when it comes; one cancelled while writing (a stalled Redis) breaks the connection, as does any socket
  error or a reply the parser refuses: every waiting call fails with :class:`RedisUnavailable`, and the next call
  reconnects.
"""

from __future__ import annotations

import logging
from collections import deque

import trio

from ._address import RedisAddress

log = logging.getLogger("moonrelay")

# What a reply may hold: the store's deepest is a list of lists, its longest one entry per request of a batch.
MAX_DEPTH = 8
MAX_ARRAY = 100_000
MAX_BULK = 1024 * 1024
MAX_LINE = 64 * 1024  # a type byte and its line (an error message, a length)
MAX_BUFFERED = 16 * 1024 * 1024  # bytes of replies not complete yet


class RedisUnavailable(Exception):
    """No connection, or it broke before the reply came (or the server's reply was not RESP within bounds)."""


class RedisRefused(RedisUnavailable):
    """Redis answered a new connection's ``AUTH`` or ``SELECT`` with an error: wrong credentials, a database it
    does not have. Not a network failure: at start-up, a configuration error."""


class ReplyError(Exception):
    """An error reply (``-ERR ...``, ``-NOSCRIPT ...``)."""


def encode(*args: str | bytes | int | float) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


_INCOMPLETE = object()


def _broken(why: str) -> RedisUnavailable:
    return RedisUnavailable(f"not RESP, or out of bounds: {why}")


class Parser:
    """Bytes in (:meth:`feed`), whole replies out (:meth:`replies`): ints, bytes, None, lists, ReplyError. A reply
    that is not RESP or exceeds a bound raises RedisUnavailable (the connection cannot be trusted any more)."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) > MAX_BUFFERED:
            raise _broken(f"more than {MAX_BUFFERED} bytes buffered")

    def replies(self) -> list[object]:
        out = []
        pos = 0
        while pos < len(self._buf):
            reply, end = self._parse(pos)
            if reply is _INCOMPLETE:
                break
            out.append(reply)
            pos = end
        self._buf = self._buf[pos:]
        return out

    def _parse(self, start: int) -> tuple[object, int]:
        """One whole reply from ``start`` and where it ends, or _INCOMPLETE; arrays on an explicit stack."""
        buf = self._buf
        pos = start
        stack: list[tuple[list, int]] = []  # the arrays being filled: (items so far, items wanted)
        while True:
            eol = buf.find(b"\r\n", pos, pos + MAX_LINE)
            if eol < 0:
                if len(buf) - pos >= MAX_LINE:
                    raise _broken(f"a line longer than {MAX_LINE} bytes")
                return _INCOMPLETE, start
            kind, line, pos = buf[pos : pos + 1], buf[pos + 1 : eol], eol + 2
            value: object
            if kind == b":":
                value = _int(line)
            elif kind == b"+":
                value = bytes(line)
            elif kind == b"-":
                value = ReplyError(line.decode(errors="replace"))
            elif kind == b"$":
                size = _int(line)
                if size > MAX_BULK:
                    raise _broken(f"a string of {size} bytes")
                if size < 0:
                    value = None
                else:
                    if len(buf) < pos + size + 2:
                        return _INCOMPLETE, start
                    if buf[pos + size : pos + size + 2] != b"\r\n":
                        raise _broken("a string longer than its length")
                    value, pos = buf[pos : pos + size], pos + size + 2
            elif kind == b"*":
                count = _int(line)
                if count > MAX_ARRAY:
                    raise _broken(f"an array of {count} items")
                if count > 0:
                    if len(stack) >= MAX_DEPTH - 1:
                        raise _broken(f"arrays nested deeper than {MAX_DEPTH}")
                    stack.append(([], count))
                    continue
                value = None if count < 0 else []
            else:
                raise _broken(f"type byte {bytes(kind)!r}")
            while stack:  # the value ends the arrays it completes
                items, count = stack[-1]
                items.append(value)
                if len(items) < count:
                    break
                stack.pop()
                value = items
            else:
                return value, pos


def _int(line: bytes) -> int:
    try:
        return int(line)
    except ValueError:
        raise _broken(f"{bytes(line[:20])!r} is not a number") from None


class _Waiting:
    __slots__ = ("done", "reply")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.reply: object = None


class RedisConnection:
    """A connection to the server at ``address`` (its credentials and database sent on each new one); calls need
    :meth:`run` serving in a nursery."""

    def __init__(self, address: RedisAddress) -> None:
        self.address = address
        self._stream: trio.abc.Stream | None = None  # the connection calls use
        self._connecting: trio.abc.Stream | None = None  # a new one, until its AUTH and SELECT are answered
        self._waiting: deque[_Waiting] = deque()
        self._send_lock = trio.Lock()
        self._connect_lock = trio.Lock()
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the nursery the connections' reader tasks run in, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None
                self._break()

    async def call(self, *args: str | bytes | int | float) -> object:
        """Send one command and return its reply (raise ReplyError for an error reply). No deadline of its own:
        the caller's cancel scope is one."""
        stream = self._stream or await self._connect()
        reply = await self._exchange(stream, encode(*args))
        if isinstance(reply, RedisUnavailable | ReplyError):
            raise reply
        return reply

    async def _exchange(self, stream: trio.abc.Stream, data: bytes) -> object:
        """Write ``data`` (one command) on ``stream`` and wait for its reply (or the error that broke it)."""
        waiting = _Waiting()
        async with self._send_lock:
            if not self._live(stream):  # broke while we waited for the lock
                raise RedisUnavailable("connection lost")
            self._waiting.append(waiting)
            try:
                await stream.send_all(data)
            except BaseException as exc:  # cancelled or failed mid-write: the stream may hold half a command
                self._break(stream)
                if isinstance(exc, trio.Cancelled):
                    raise
                raise RedisUnavailable(f"send failed: {exc}") from exc
        await waiting.done.wait()
        return waiting.reply

    async def _connect(self) -> trio.abc.Stream:
        """A new connection, authenticated and on its database before any call can use it."""
        async with self._connect_lock:
            if self._stream is not None:
                return self._stream
            if self._nursery is None:
                raise RedisUnavailable("the client is not running")
            address = self.address
            try:
                if address.path is not None:
                    stream: trio.abc.Stream = await trio.open_unix_socket(address.path)
                else:
                    stream = await trio.open_tcp_stream(address.host, address.port)
            except OSError as exc:
                raise RedisUnavailable(f"cannot connect: {exc}") from exc
            handshake = []
            if address.password is not None:
                who = () if address.username is None else (address.username,)
                handshake.append(("AUTH", *who, address.password))
            if address.db:
                handshake.append(("SELECT", address.db))
            self._connecting = stream
            self._nursery.start_soon(self._read, stream)
            try:
                for command in handshake:
                    reply = await self._exchange(stream, encode(*command))
                    if isinstance(reply, RedisUnavailable):
                        raise reply
                    if isinstance(reply, ReplyError):
                        raise RedisRefused(f"Redis refused {command[0]}: {reply}")
            except BaseException:
                self._break(stream)
                raise
            self._connecting, self._stream = None, stream
            return stream

    async def _read(self, stream: trio.abc.Stream) -> None:
        parser = Parser()
        why = None
        try:
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    raise RedisUnavailable("Redis closed the connection")
                parser.feed(data)
                for reply in parser.replies():
                    if not self._waiting:
                        raise RedisUnavailable("a reply nobody asked for")
                    waiting = self._waiting.popleft()
                    waiting.reply = reply
                    waiting.done.set()
        except RedisUnavailable as exc:  # what the waiting calls fail with (and the failover's log line says)
            why = exc
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception as exc:  # noqa: BLE001 - whatever a server sends breaks this connection, never the worker
            log.exception("state: %s: reading a reply failed; the connection is closed", self.address.shown)
            why = RedisUnavailable(f"reading a reply failed: {exc!r}")
        finally:
            self._break(stream, why)

    def _live(self, stream: trio.abc.Stream) -> bool:
        return stream is self._stream or stream is self._connecting

    def _break(self, stream: trio.abc.Stream | None = None, why: RedisUnavailable | None = None) -> None:
        """Close ``stream`` (the connection in use when None); if it is the one in use, every call waiting on it
        fails (with ``why``)."""
        stream = stream or self._stream or self._connecting
        if stream is None:
            return
        if self._live(stream):
            self._stream = self._connecting = None
            waiting, self._waiting = self._waiting, deque()
            for w in waiting:
                w.reply = RedisUnavailable(str(why) if why is not None else "connection lost")
                w.done.set()
        if isinstance(stream, trio.SocketStream):  # synchronous: the reader's receive wakes with ClosedResourceError
            trio.lowlevel.notify_closing(stream.socket)
            stream.socket.close()
