"""A scripted upstream that records every request exactly as it arrives on the socket (target bytes,
headers, body) and answers with bytes the test chooses: what the relay really sends, with no client
library normalising it first."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import h11
import trio

from tests.support.scripted import read_request

OK = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"ok":true}'


@dataclass
class Recorded:
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""


@dataclass
class Recorder:
    url: str  # http://127.0.0.1:PORT (no path)
    requests: list[Recorded] = field(default_factory=list)
    reply: Callable[[Recorded], bytes] = lambda _: OK  # a whole response; the connection closes after it

    @property
    def targets(self) -> list[bytes]:
        return [r.target for r in self.requests]


async def _handle(recorder: Recorder, stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER)
    async with stream:
        request = await read_request(conn, stream)
        if request is None:
            return
        event, body = request
        got = Recorded(event.method, event.target, list(event.headers), body)
        recorder.requests.append(got)
        reply = recorder.reply(got)
        head, sep, body = reply.partition(b"\r\n\r\n")
        await stream.send_all(head + b"\r\nconnection: close" + sep + body)


async def serve_recorder(*, task_status: trio.TaskStatus[Recorder] = trio.TASK_STATUS_IGNORED) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    recorder = Recorder(f"http://127.0.0.1:{port}")
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(trio.serve_listeners, partial(_handle, recorder), listeners))
        task_status.started(recorder)


async def raw_request(root: str, request_line_target: str, method: str = "GET", headers: str = "",
                      body: bytes = b"") -> tuple[int, bytes]:  # fmt: skip
    """Send one request with ``request_line_target`` exactly as given; the status and the whole response."""
    host, port = root.removeprefix("http://").split(":")
    length = f"content-length: {len(body)}\r\n" if body or method in ("POST", "PUT", "PATCH") else ""
    head = f"{method} {request_line_target} HTTP/1.1\r\nhost: {host}\r\n{headers}{length}connection: close\r\n\r\n"
    stream = await trio.open_tcp_stream(host, int(port))
    seen = b""
    async with stream:
        await stream.send_all(head.encode("latin-1") + body)
        with trio.fail_after(5):
            while data := await stream.receive_some(65536):
                seen += data
    return int(seen.split(b" ", 2)[1]), seen
