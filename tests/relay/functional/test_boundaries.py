"""In-band markers (heartbeat pings, error and shutdown events) land only at event boundaries.

A scripted upstream splits an event mid-JSON across two reads and then stalls (a heartbeat is due),
resets the connection, or stalls until the relay shuts down. The client's exact body bytes are
checked: every event parses (every ``data:`` payload is whole JSON), and each marker is an event of
its own. Both the direct-write path and the plain ASGI path (``direct_writes = "off"``).
"""

from __future__ import annotations

import json
import socket
import struct
from functools import partial

import h11
import pytest
import trio

from proxy.config import Settings
from proxy.edge import serve
from proxy.protocol import SHUTDOWN_NDJSON, SHUTDOWN_SSE
from proxy.stream import PING
from tests.conftest import raw_chat_request, start_relay
from tests.support.scripted import ScriptedServer, read_request

CHAT = {"model": "moonshot-v1-8k", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


def chunk(k: int) -> bytes:
    obj = {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": f"t{k}"}}]}
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


E1, E2, E3 = chunk(1), chunk(2), chunk(3)
DONE = b"data: [DONE]\n\n"
HALF = len(E2) // 2  # inside E2's JSON


class SplittingUpstream(ScriptedServer):
    """Answers every chat request with E1 and half of E2 in one write, then does ``then``:

    ``"stall"``: waits ``stall_s`` and sends the rest (E2's second half, E3, [DONE]);
    ``"reset"``: waits ``stall_s`` (so the relay reads the half on its own) and resets the connection;
    ``"hang"``: sends nothing more until the relay hangs up.
    """

    def __init__(self, then: str, stall_s: float = 0.5) -> None:
        self.then = then
        self.stall_s = stall_s
        self.sent_half = trio.Event()

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            if not await read_request(conn, stream):
                return
            head = conn.send(h11.Response(status_code=200, headers=[("content-type", "text/event-stream")]))
            await stream.send_all(head + conn.send(h11.Data(data=E1 + E2[:HALF])))
            self.sent_half.set()
            if self.then == "hang":
                await trio.sleep_forever()
            await trio.sleep(self.stall_s)
            if self.then == "reset":
                stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return  # closing with SO_LINGER 0: a reset
            rest = conn.send(h11.Data(data=E2[HALF:] + E3 + DONE)) + conn.send(h11.EndOfMessage())
            await stream.send_all(rest)


async def raw_body(root: str, path: str, started: trio.Event | None = None) -> bytes:
    """POST a streaming chat request over a raw socket; return the response body exactly as framed bytes decode."""
    host, port = root.removeprefix("http://").split(":")
    payload = json.dumps(CHAT).encode()
    request = raw_chat_request(host, payload).replace(b"POST /v1/chat/completions", b"POST " + path.encode())
    request = request.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n", 1)
    client = h11.Connection(h11.CLIENT)
    body = b""
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(request)
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                client.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                assert event.status_code == 200
            elif isinstance(event, h11.Data):
                body += event.data
                if started is not None and body:
                    started.set()
            elif isinstance(event, h11.EndOfMessage):
                return body
            else:
                raise AssertionError(f"the response did not end cleanly: {event!r} after {body!r}")


def sse_events(body: bytes) -> list[bytes]:
    """The events of a body that must be whole events only; every data payload parsed as JSON."""
    assert body.endswith(b"\n\n"), body
    events = body[:-2].split(b"\n\n")
    for event in events:
        if event.startswith(b":"):
            assert event == PING[:-2], event
            continue
        assert event.startswith(b"data: ") and b"\n" not in event, event
        payload = event[6:]
        if payload != b"[DONE]":
            json.loads(payload)  # raises on a broken or merged event
    return events


def ndjson_lines(body: bytes) -> list[dict]:
    assert body.endswith(b"\n"), body
    return [json.loads(line) for line in body[:-1].split(b"\n")]


ROUTES = [pytest.param("/v1/chat/completions", id="sse"), pytest.param("/chat/completions", id="ndjson")]
PATHS = [pytest.param("on", id="direct"), pytest.param("off", id="asgi")]


@pytest.mark.parametrize("direct_writes", PATHS)
@pytest.mark.parametrize("route", ROUTES)
async def test_a_heartbeat_during_a_split_event_goes_between_whole_events(nursery, route, direct_writes):
    upstream = await nursery.start(SplittingUpstream("stall", stall_s=0.6).serve)
    root = await start_relay(nursery, upstream.url, heartbeat_s=0.1, direct_writes=direct_writes)
    with trio.fail_after(10):
        body = await raw_body(root, route)
    if route == "/chat/completions":
        assert ndjson_lines(body) == [json.loads(e[6:]) for e in (E1, E2, E3)]
        return
    pings = body.count(PING)
    assert pings >= 1  # 0.6 s of silence, K = 0.1 s
    assert body == E1 + PING * pings + E2 + E3 + DONE  # the exact bytes, pings included
    sse_events(body)


@pytest.mark.parametrize("direct_writes", PATHS)
@pytest.mark.parametrize("route", ROUTES)
async def test_an_upstream_reset_mid_event_ends_with_the_error_as_its_own_event(nursery, route, direct_writes):
    upstream = await nursery.start(SplittingUpstream("reset", stall_s=0.3).serve)
    root = await start_relay(nursery, upstream.url, heartbeat_s=0, retries=0, direct_writes=direct_writes)
    with trio.fail_after(10):
        body = await raw_body(root, route)
    if route == "/chat/completions":
        first, error = ndjson_lines(body)
        assert first == json.loads(E1[6:])
        assert error["error"]["type"] == "upstream_error"
        return
    assert body.startswith(E1)  # the half event never went out: the client has whole events only
    events = sse_events(body)
    assert len(events) == 2
    assert json.loads(events[1][6:])["error"]["type"] == "upstream_error"


@pytest.mark.parametrize("direct_writes", PATHS)
@pytest.mark.parametrize("route", ROUTES)
async def test_a_shutdown_mid_event_ends_with_the_shutdown_event_as_its_own_event(route, direct_writes):
    upstream = SplittingUpstream("hang")
    settings = Settings(
        bind="127.0.0.1:0", upstream="", heartbeat_s=0, graceful_timeout_s=0.1, direct_writes=direct_writes
    )
    stop = trio.Event()
    started = trio.Event()
    out = {}

    async def client(root: str) -> None:
        out["body"] = await raw_body(root, route, started)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(upstream.serve)
            settings.upstream = upstream.url
            async with trio.open_nursery() as relay:
                root = await relay.start(partial(serve, settings, shutdown_trigger=stop.wait))
                relay.start_soon(client, root)
                await started.wait()  # the client has E1: the relay has read E1 and the half of E2 (one write)
                await upstream.sent_half.wait()
                stop.set()
            nursery.cancel_scope.cancel()
    body = out["body"]
    if route == "/chat/completions":
        assert body == E1[6:-2] + b"\n" + SHUTDOWN_NDJSON
        ndjson_lines(body)
        return
    assert body == E1 + SHUTDOWN_SSE
    sse_events(body)
