"""OpenTelemetry traces of a running relay, over real sockets, received and decoded by a real OTLP receiver
(tests/support/otlp.py): one server span per request under the client's traceparent, one client span per upstream
attempt (a retry is a sibling), the traceparent each attempt sent upstream naming its span, the first chunk as an
event, the answer's tokens and finish reason, a client that leaves and an upstream that cannot be reached; spans
flushed when the worker stops; and without tracing, the client's traceparent passed upstream unchanged."""

from __future__ import annotations

import json
from functools import partial

import httpx
import trio

from proxy.config import Settings
from proxy.edge import serve
from tests.conftest import open_stream_and_leave, start_relay, start_sim
from tests.support.otlp import OTLPReceiver, ReceivedSpan
from tests.support.recorder import serve_recorder

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"
TRACESTATE = "congo=t61rcWkgMzE"
CHAT = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "hi"}], "stream": True,
        "temperature": 0.5}  # fmt: skip
CHUNKS = [
    {"id": "chatcmpl-7", "model": "moonshot-v1-8k-0711", "choices": [{"index": 0, "delta": {"content": "hi"}}]},
    {"id": "chatcmpl-7", "model": "moonshot-v1-8k-0711",
     "choices": [{"index": 0, "delta": {}, "finish_reason": "stop",
                  "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}}]},
]  # fmt: skip


def sse_reply() -> bytes:
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in CHUNKS) + b"data: [DONE]\n\n"
    return f"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body


UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


async def spans(receiver: OTLPReceiver, count: int, within_s: float = 10.0) -> list[ReceivedSpan]:
    """Once the receiver has ``count`` spans (the SDK exports a batch a second)."""
    with trio.fail_after(within_s):
        while len(receiver.spans) < count:  # noqa: ASYNC110 - the export thread posts to another server
            await trio.sleep(0.02)
    return receiver.spans


def header(recorded, name: bytes) -> str | None:
    return next((v.decode() for k, v in recorded.headers if k.lower() == name), None)


async def test_a_retried_stream_is_a_server_span_with_two_sibling_attempts_under_the_callers_trace(nursery) -> None:
    receiver = await nursery.start(OTLPReceiver().serve)
    recorder = await nursery.start(serve_recorder)
    replies = iter([UNAVAILABLE, sse_reply()])
    recorder.reply = lambda _: next(replies)
    root = await start_relay(nursery, recorder.url + "/v1", otel_endpoint=receiver.traces_url, retries=1,
                             retry_max_wait_s=0.01)  # fmt: skip
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.post(root + "/v1/chat/completions", json=CHAT,
                                   headers={"traceparent": TRACEPARENT, "tracestate": TRACESTATE})  # fmt: skip
    assert answer.status_code == 200 and b"[DONE]" in answer.content
    got = await spans(receiver, 3)
    (server,) = [s for s in got if s.kind == "server"]
    attempts = sorted((s for s in got if s.kind == "client"), key=lambda s: s.attributes["moonrelay.attempt"])
    assert server.name == "POST /v1/chat/completions"
    assert (server.trace_id, server.parent_id) == (TRACE, PARENT)  # a child of the caller's span
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["gen_ai.request.model"] == "moonshot-v1-8k"
    assert server.events == ["moonrelay.first_chunk"] and not server.error
    assert "gen_ai.usage.input_tokens" not in server.attributes  # counted once per trace: on the attempt
    assert [a.parent_id for a in attempts] == [server.span_id] * 2  # siblings
    assert [a.attributes["http.response.status_code"] for a in attempts] == [503, 200]
    assert attempts[0].error and attempts[0].attributes["error.type"] == "503"
    answered = attempts[1].attributes
    assert answered["gen_ai.usage.input_tokens"] == 11 and answered["gen_ai.usage.output_tokens"] == 2
    assert answered["gen_ai.response.finish_reasons"] == ["stop"] and answered["gen_ai.response.id"] == "chatcmpl-7"
    assert answered["gen_ai.response.model"] == "moonshot-v1-8k-0711"
    assert answered["gen_ai.request.temperature"] == 0.5 and answered["http.request.resend_count"] == 1
    assert answered["url.full"] == recorder.url + "/v1/chat/completions"
    # What each attempt sent upstream names that attempt's span; the caller's tracestate goes on unchanged.
    sent = [header(r, b"traceparent") for r in recorder.requests]
    assert sent == [f"00-{TRACE}-{a.span_id}-01" for a in attempts]
    assert [header(r, b"tracestate") for r in recorder.requests] == [TRACESTATE] * 2
    assert not attempts[1].error and attempts[1].end_ns <= server.end_ns


async def test_a_client_that_leaves_and_an_unreachable_upstream_end_their_spans_as_errors(nursery) -> None:
    receiver = await nursery.start(OTLPReceiver().serve)
    sim = await start_sim(nursery, chunks=200, interval=0.05)
    root = await start_relay(nursery, sim.url, otel_endpoint=receiver.traces_url)
    await open_stream_and_leave(root, {**CHAT, "messages": [{"role": "user", "content": "leave"}]})
    with trio.socket.socket() as sock:  # a port nothing listens on
        await sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    down = await start_relay(nursery, dead, otel_endpoint=receiver.traces_url, retries=1, retry_max_wait_s=0.01)
    async with httpx.AsyncClient(timeout=10) as client:
        refused = await client.post(down + "/v1/chat/completions", json=CHAT)
    assert refused.status_code == 502
    got = await spans(receiver, 5)  # left: server + attempt; unreachable: server + two attempts
    left, failed = (next(s for s in got if s.kind == "server" and s.trace_id == t)
                    for t in dict.fromkeys(s.trace_id for s in got if s.kind == "server"))  # fmt: skip
    if left.attributes["http.response.status_code"] != 200:
        left, failed = failed, left
    assert left.error and left.attributes["error.type"] == "client_disconnected"
    assert left.events == ["moonrelay.first_chunk"]
    (attempt,) = [s for s in got if s.parent_id == left.span_id]
    assert attempt.error and attempt.attributes["error.type"] == "client_disconnected"
    assert failed.error and failed.attributes["error.type"] == "upstream_unavailable"
    assert failed.attributes["http.response.status_code"] == 502 and failed.events == []
    tried = [s for s in got if s.parent_id == failed.span_id]
    assert [s.attributes["error.type"] for s in tried] == ["upstream_unavailable"] * 2
    assert all("http.response.status_code" not in s.attributes for s in tried)  # no answer came


async def test_the_spans_still_queued_are_exported_when_the_worker_stops(nursery) -> None:
    receiver = await nursery.start(OTLPReceiver().serve)
    recorder = await nursery.start(serve_recorder)
    recorder.reply = lambda _: sse_reply()
    settings = Settings(bind="127.0.0.1:0", upstream=recorder.url + "/v1", otel_endpoint=receiver.traces_url)
    async with trio.open_nursery() as relay:
        root = await relay.start(partial(serve, settings))
        async with httpx.AsyncClient(timeout=10) as client:
            assert (await client.post(root + "/v1/chat/completions", json=CHAT)).status_code == 200
        relay.cancel_scope.cancel()  # the worker stops before the batch's second is up
    assert sorted(s.kind for s in receiver.spans) == ["client", "server"]  # flushed by its aclose, not later


async def test_without_tracing_the_callers_valid_context_goes_upstream_unchanged(nursery) -> None:
    recorder = await nursery.start(serve_recorder)
    recorder.reply = lambda _: sse_reply()
    root = await start_relay(nursery, recorder.url + "/v1")
    asked = [
        {"traceparent": TRACEPARENT, "tracestate": TRACESTATE},
        {"traceparent": f"00-{TRACE.upper()}-{PARENT}-01", "tracestate": TRACESTATE},  # invalid: not passed on
        {},
    ]
    async with httpx.AsyncClient(timeout=10) as client:
        for headers in asked:
            assert (await client.post(root + "/v1/chat/completions", json=CHAT, headers=headers)).status_code == 200
    assert [header(r, b"traceparent") for r in recorder.requests] == [TRACEPARENT, None, None]
    assert [header(r, b"tracestate") for r in recorder.requests] == [TRACESTATE, None, None]


async def test_messages_and_responses_requests_are_traced_like_chat(nursery) -> None:
    """Every route's attempts go through the same traced send: a server span per request, a client span per attempt
    under it, and the traceparent the attempt sent upstream names that attempt's span."""
    receiver = await nursery.start(OTLPReceiver().serve)
    recorder = await nursery.start(serve_recorder)
    recorder.reply = lambda _: sse_reply()
    root = await start_relay(nursery, recorder.url + "/v1", otel_endpoint=receiver.traces_url)
    asks = {
        "/v1/messages": {"model": "moonshot-v1-8k", "max_tokens": 16, "stream": True,
                         "messages": [{"role": "user", "content": "hi"}]},
        "/v1/responses": {"model": "moonshot-v1-8k", "input": "hi", "stream": True},
    }  # fmt: skip
    async with httpx.AsyncClient(timeout=10) as client:
        for path, body in asks.items():
            answer = await client.post(root + path, json=body, headers={"traceparent": TRACEPARENT})
            assert answer.status_code == 200, answer.text
    got = await spans(receiver, 4)
    servers = {s.name: s for s in got if s.kind == "server"}
    assert set(servers) == {"POST /v1/messages", "POST /v1/responses"}
    for server in servers.values():
        assert (server.trace_id, server.parent_id) == (TRACE, PARENT)
        assert server.attributes["gen_ai.request.model"] == "moonshot-v1-8k"
        (attempt,) = [s for s in got if s.kind == "client" and s.parent_id == server.span_id]
        sent = next(r for r in recorder.requests if header(r, b"traceparent") == f"00-{TRACE}-{attempt.span_id}-01")
        assert sent is not None
