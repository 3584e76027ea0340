"""A minimal Redis client over trio's own sockets: RESP2 commands on one pipelined connection.

Why not a library: coredis 6.9 (anyio, so it runs under trio) costs ~200 µs of CPU per call here, spread over its
per-connection reader and writer tasks; with it ``--state`` cost +29.6 % CPU per chunk on the bench's relay-cost
scenario (results/state-cost-2026-12-04/RESULTS.md), against a +10 % goal. The store needs four commands (EVALSHA,
SCRIPT LOAD, SELECT, PING), so this sends them itself: the caller writes its command, one reader task per
connection hands each reply to the caller waiting for it, in order.

- :func:`encode` and :class:`Parser` are the sans-I/O part (bytes in, replies out), tested with plain bytes.
- :class:`Connection` is the I/O shell. A caller cancelled after its command went out leaves its place in the queue,
  and its reply is dropped when it comes; one cancelled while writing (a stalled Redis) breaks the connection, as
  does any socket error: every waiting call fails with :class:`RedisUnavailable`, and the next call reconnects.
"""

from __future__ import annotations

from collections import deque
from urllib.parse import parse_qs, urlsplit

import trio


class RedisUnavailable(Exception):
    """No connection, or it broke before the reply came."""


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


class Parser:
    """Bytes in (:meth:`feed`), whole replies out (:meth:`replies`): ints, bytes, None, lists, ReplyError."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> None:
        self._buf += data

    def replies(self) -> list[object]:
        out = []
        pos = 0
        while True:
            reply, end = self._parse(pos)
            if reply is _INCOMPLETE:
                break
            out.append(reply)
            pos = end
        self._buf = self._buf[pos:]
        return out

    def _parse(self, pos: int) -> tuple[object, int]:
        buf = self._buf
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return _INCOMPLETE, pos
        kind, line, after = buf[pos : pos + 1], buf[pos + 1 : eol], eol + 2
        if kind == b":":
            return int(line), after
        if kind == b"+":
            return bytes(line), after
        if kind == b"-":
            return ReplyError(line.decode(errors="replace")), after
        if kind == b"$":
            size = int(line)
            if size < 0:
                return None, after
            if len(buf) < after + size + 2:
                return _INCOMPLETE, pos
            return buf[after : after + size], after + size + 2
        if kind == b"*":
            count = int(line)
            if count < 0:
                return None, after
            items = []
            for _ in range(count):
                item, after = self._parse(after)
                if item is _INCOMPLETE:
                    return _INCOMPLETE, pos
                items.append(item)
            return items, after
        raise RedisUnavailable(f"not RESP: {bytes(buf[pos : pos + 20])!r}")


class _Waiting:
    __slots__ = ("done", "reply")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.reply: object = None


class Connection:
    """``redis://HOST:PORT/DB`` or ``unix:///PATH?db=N``; calls need :meth:`run` serving in a nursery."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.scheme = parts.scheme
        if parts.scheme == "unix":
            self.path, self.db = parts.path, int(parse_qs(parts.query).get("db", ["0"])[0])
        elif parts.scheme == "redis":
            self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 6379
            self.db = int(parts.path.strip("/") or 0)
        else:
            raise ValueError(f"{url!r}: expected redis://HOST:PORT/DB or unix:///PATH?db=N")
        self._stream: trio.abc.Stream | None = None
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
        waiting = _Waiting()
        data = encode(*args)
        async with self._send_lock:
            if stream is not self._stream:  # broke while we waited for the lock
                raise RedisUnavailable("connection lost")
            self._waiting.append(waiting)
            try:
                await stream.send_all(data)
            except BaseException as exc:  # cancelled or failed mid-write: the stream may hold half a command
                self._break()
                if isinstance(exc, trio.Cancelled):
                    raise
                raise RedisUnavailable(f"send failed: {exc}") from exc
        await waiting.done.wait()
        reply = waiting.reply
        if isinstance(reply, RedisUnavailable | ReplyError):
            raise reply
        return reply

    async def _connect(self) -> trio.abc.Stream:
        async with self._connect_lock:
            if self._stream is not None:
                return self._stream
            if self._nursery is None:
                raise RedisUnavailable("the client is not running")
            try:
                if self.scheme == "unix":
                    stream: trio.abc.Stream = await trio.open_unix_socket(self.path)
                else:
                    stream = await trio.open_tcp_stream(self.host, self.port)
            except OSError as exc:
                raise RedisUnavailable(f"cannot connect: {exc}") from exc
            self._stream = stream
            self._nursery.start_soon(self._read, stream)
            if self.db:
                await self.call("SELECT", self.db)
            return stream

    async def _read(self, stream: trio.abc.Stream) -> None:
        parser = Parser()
        try:
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    raise RedisUnavailable("Redis closed the connection")
                parser.feed(data)
                for reply in parser.replies():
                    waiting = self._waiting.popleft()
                    waiting.reply = reply
                    waiting.done.set()
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, RedisUnavailable, IndexError, ValueError):
            pass  # a broken or garbled connection: every waiting call fails, the next one reconnects
        finally:
            if self._stream is stream:
                self._break()

    def _break(self) -> None:
        """Close the connection; every call waiting on it fails."""
        stream, self._stream = self._stream, None
        waiting, self._waiting = self._waiting, deque()
        for w in waiting:
            w.reply = RedisUnavailable("connection lost")
            w.done.set()
        if isinstance(stream, trio.SocketStream):  # synchronous: the reader's receive wakes with ClosedResourceError
            trio.lowlevel.notify_closing(stream.socket)
            stream.socket.close()
