"""First chunks that arrive together: every session's TTFC stamp is taken at its read, before any of them is
parsed, and never before the bytes were sent."""

import json
import os
import time

import h11
import trio
import trio.testing

import loadtest.protocols
from loadtest.accounting import StreamAccounting
from loadtest.client import Endpoint
from loadtest.record import SessionRecord
from loadtest.session import ConnectionSlot, build_request, run_session
from tests.support.scripted import ScriptedServer, read_request

SESSIONS = 20
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def _framed(event: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(event), event)


def _event(seq: int, of: int) -> bytes:
    choice = {"index": 0, "delta": {"content": "x"}, **({"finish_reason": "stop"} if seq == of - 1 else {})}
    body = {"id": "c", "object": "chat.completion.chunk", "choices": [choice],
            "sim": {"ns": time.monotonic_ns(), "seq": seq, "of": of}}
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


class HeldFirstChunks(ScriptedServer):
    """Answers each request with its head only; the test writes the body to every connection itself."""

    def __init__(self) -> None:
        self.streams: list[trio.SocketStream] = []

    async def _handle(self, stream: trio.SocketStream) -> None:
        if await read_request(h11.Connection(h11.SERVER), stream):
            await stream.send_all(HEAD)
            self.streams.append(stream)
            await trio.sleep_forever()

    def write_all(self, data: bytes) -> None:
        """The same bytes to every connection in one synchronous loop: all are readable at the client at once."""
        for s in self.streams:
            os.write(s.socket.fileno(), data)


async def test_first_chunks_read_together_are_all_stamped_before_any_is_parsed(nursery, monkeypatch):
    parsed: list[int] = []

    class Spy(StreamAccounting):
        """The real accounting, noting when a session's first bytes reached it."""

        def feed(self, data: bytes, t_ns: int) -> None:
            if self.rec.first_chunk_ns is None:
                parsed.append(time.monotonic_ns())
            super().feed(data, t_ns)

    monkeypatch.setattr(loadtest.protocols, "StreamAccounting", Spy)
    server = await nursery.start(HeldFirstChunks().serve)
    ep = Endpoint.from_url(server.url)
    spec = build_request(ep, model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=None, stream=True)
    recs = [SessionRecord(intended_ns=time.monotonic_ns()) for _ in range(SESSIONS)]
    slots = [ConnectionSlot() for _ in recs]
    async with trio.open_nursery() as sessions:
        for rec, slot in zip(recs, slots, strict=True):
            sessions.start_soon(run_session, ep, spec, rec, slot)
        await trio.testing.wait_all_tasks_blocked()  # every session has its head and waits for body bytes
        assert len(server.streams) == SESSIONS and all(r.headers_ns for r in recs)
        sent = time.monotonic_ns()
        server.write_all(_framed(_event(0, 2)))
        await trio.testing.wait_all_tasks_blocked()
        server.write_all(_framed(_event(1, 2)) + _framed(b"data: [DONE]\n\n") + b"0\r\n\r\n")
    for slot in slots:
        await slot.aclose()
    assert all(r.completed for r in recs), [r.error_detail for r in recs]
    stamps = [r.first_chunk_ns for r in recs]
    assert min(stamps) >= sent  # never before the bytes were there
    assert len(parsed) == SESSIONS
    assert max(stamps) < min(parsed)  # no session's parsing delayed another's stamp
