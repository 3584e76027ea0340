"""The request's observer of its response as it goes out: the head, each piece written, the body's tail for the log."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ._bodywatch import BodyWatch
from ._tcpserver import request_body_unread

STREAM_TYPES = (b"text/event-stream", b"application/x-ndjson")


class Tap:
    """One observed call: the response's head and body as they go out, and what the log and metrics need of them.

    Its ``send`` is the ``send`` the app gets. One slotted object per call instead of two closures and
    their cells: it lives as long as the stream. The body's hot path is ``seen`` (a direct writer calls
    it too, :mod:`proxy.edge`): an increment and two reference moves.
    """

    __slots__ = (
        "chunks", "first_ns", "prev", "last", "gone", "completed", "status", "head_ns", "streamed", "content_type",
        "length", "_send", "_rid", "_cors", "_metrics", "_watch", "_ending",
    )  # fmt: skip

    def __init__(self, send: Callable | None = None, rid: bytes = b"", cors: list | None = None,
                 metrics: Any = None, watch: BodyWatch | None = None,
                 ending: Callable[[], Awaitable[None]] | None = None) -> None:  # fmt: skip
        self.gone = False  # a direct write found the client gone (the body then ends as if complete)
        self.completed = False  # the last body message was sent
        self.chunks = 0
        self.first_ns = 0
        self.prev = self.last = b""  # the last two chunks: usage is in the tail
        self.status = 0
        self.head_ns = 0
        self.streamed = False
        self.content_type = b""
        self.length: int | None = None  # body bytes still to come, when a content-length frames the response
        self._send = send
        self._rid = rid
        self._cors = cors or []
        self._metrics = metrics
        self._watch = watch  # without the fast paths: whether the request's body was read to the end
        self._ending = ending  # run once, before the response's last bytes go out (the request's slots back)

    def seen(self, body: bytes) -> None:
        # The hot path: one call per chunk. Keep it to an increment and two reference moves.
        self.chunks += 1
        if not self.first_ns and body[:1] != b":":  # an SSE heartbeat comment is not a first chunk
            self.first_ns = time.monotonic_ns()
        self.prev, self.last = self.last, body

    @property
    def tail(self) -> bytes:
        return self.prev + self.last if self.prev else self.last

    async def send(self, message: dict) -> None:
        if message["type"] == "http.response.body":
            body = message.get("body")
            if body:
                self.seen(body)
            if not message.get("more_body", False):
                self.completed = True  # before the send: the server may cancel us as it ends the response
                with trio.CancelScope(shield=True):  # see proxy.edge._tcpserver: the last send must not be cut
                    if self._ending is not None:
                        await self._end()
                    await self._send(message)  # type: ignore[misc]
                return
            if body and self.length is not None:  # a response framed by its length ends with its last bytes
                self.length -= len(body)
                if self.length <= 0 and self._ending is not None:
                    with trio.CancelScope(shield=True):
                        await self._end()
        elif message["type"] == "http.response.start":
            self._start(message)
        await self._send(message)  # type: ignore[misc]

    async def _end(self) -> None:
        ending, self._ending = self._ending, None
        await ending()  # type: ignore[misc]

    def _start(self, message: dict) -> None:
        self.status = message["status"]
        self.head_ns = time.monotonic_ns()
        headers = []
        content_type = b""
        for name, value in message.get("headers", ()):
            if name == b"x-request-id":  # the upstream's own id: keep it, under another name
                name = b"x-upstream-request-id"
            elif name == b"content-type":
                content_type = value
            elif name == b"content-length":
                self.length = int(value)
            headers.append((name, value))
        headers.append((b"x-request-id", self._rid))
        headers.extend(self._cors)
        if request_body_unread() if self._watch is None else not self._watch.done:
            headers.append((b"connection", b"close"))
        message["headers"] = headers
        self.content_type = content_type
        self.streamed = content_type.startswith(STREAM_TYPES)
        if self.streamed and self._metrics is not None:
            self._metrics.in_flight.inc()
