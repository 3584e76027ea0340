"""Client keys' limits in the running relay, over real sockets: the 429's shape and headers, nothing sent upstream,
tokens counted from both usage shapes (streams too), concurrency leases given back however a call ends, and the
keys file reloaded on SIGHUP with a stream in flight."""

from __future__ import annotations

import json
import logging
import os
import signal

import httpx
import trio

from tests.conftest import raw_chat_request, start_relay, start_sim
from tests.support.recorder import serve_recorder

CHAT = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "hi"}]}
KEY = "mr-web-0123456789"
AUTH = {"authorization": f"Bearer {KEY}"}


def sse_reply(events: list[dict]) -> bytes:
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    head = f"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {len(body)}"
    return head.encode() + b"\r\n\r\n" + body


def json_reply(obj: dict) -> bytes:
    body = json.dumps(obj).encode()
    head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}"
    return head.encode() + b"\r\n\r\n" + body


def keys_file(tmp_path, text: str) -> str:
    path = tmp_path / "keys"
    path.write_text(text)
    return str(path)


async def open_stream_and_leave(root: str, body: dict) -> None:
    """Raw socket client with the key: read until the first SSE event arrives, then close."""
    host, port = root.removeprefix("http://").split(":")
    request = raw_chat_request(host, json.dumps(body).encode())
    request = request.replace(b"\r\n\r\n", f"\r\nauthorization: Bearer {KEY}\r\n\r\n".encode(), 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(request)
        seen = b""
        with trio.fail_after(5):
            while b"data: " not in seen:
                seen += await stream.receive_some(65536)


async def eventually_admitted(client: httpx.AsyncClient, url: str, body: dict) -> httpx.Response:
    """The slot of a call that just ended comes back when its ASGI call returns, a moment after the client's end."""
    with trio.fail_after(5):
        while True:
            resp = await client.post(url, json=body, headers=AUTH)
            if resp.status_code != 429:
                return resp
            await trio.sleep(0.01)


async def test_rpm_429_shape_headers_and_nothing_upstream(nursery, tmp_path, access_lines):
    recorder = await nursery.start(serve_recorder)
    recorder.reply = lambda _: json_reply({"choices": [], "usage": {"total_tokens": 1}})
    root = await start_relay(nursery, recorder.url + "/v1", api_keys_file=keys_file(tmp_path, f"{KEY} name=web rpm=2"))
    url = root + "/v1/chat/completions"
    async with httpx.AsyncClient(timeout=10) as client:
        ok = [await client.post(url, json=CHAT, headers=AUTH) for _ in range(2)]
        refused = await client.post(url, json=CHAT, headers=AUTH)
        seed = await client.get(root + "/chat/completions", params={"content": "hi"}, headers=AUTH)
        metrics = (await client.get(root + "/metrics")).text
    assert [r.status_code for r in ok] == [200, 200]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in ok] == ["1", "0"]
    assert ok[0].headers["x-ratelimit-limit-requests"] == "2" and ok[0].headers["x-ratelimit-reset-requests"][-1] == "s"
    assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.json()["error"]["code"] == "rate_limit_exceeded" and refused.json()["error"]["type"] == "requests"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert "x-ratelimit-limit-tokens" not in refused.headers  # the key has no tpm
    assert seed.status_code == 429 and seed.headers["content-type"].startswith("application/x-ndjson")
    assert len(recorder.requests) == 2  # nothing of the refused ones went upstream
    assert 'moonrelay_client_limit_rejections_total{key="web",limit="rpm"} 2.0' in metrics
    lines = [line for line in access_lines if line["status"] == 429]
    assert len(lines) == 2 and lines[0]["key_name"] == "web" and "error" in lines[0]
    assert 'upstream="' not in metrics.split("moonrelay_upstream_errors_total")[-1].split("\n# ")[0]  # not upstream's
    assert KEY not in metrics and all(KEY not in json.dumps(line) for line in access_lines)


async def test_tokens_from_both_usage_shapes(nursery, tmp_path):
    """Non-streamed: OpenAI's top-level usage; streamed: Moonshot's usage in choices[0] (an upstream that ignores
    stream_options) counts as well."""
    recorder = await nursery.start(serve_recorder)
    moonshot_stream = sse_reply([
        {"choices": [{"index": 0, "delta": {"content": "hi"}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "usage": {"total_tokens": 30}}]},
    ])  # fmt: skip
    whole = json_reply({"choices": [{"message": {"content": "hi"}}], "usage": {"total_tokens": 50}})
    recorder.reply = lambda got: moonshot_stream if b'"stream":true' in got.body else whole
    path = keys_file(tmp_path, f"{KEY} name=web tpm=50\nmr-other-0123456 name=other budget=30/1d\n")
    root = await start_relay(nursery, recorder.url + "/v1", api_keys_file=path)
    url = root + "/v1/chat/completions"
    other = {"authorization": "Bearer mr-other-0123456"}
    async with httpx.AsyncClient(timeout=10) as client:
        first = await client.post(url, json=CHAT, headers=AUTH)
        over = await client.post(url, json=CHAT, headers=AUTH)
        stream = await client.post(url, json={**CHAT, "stream": True}, headers=other)
        spent = await client.post(url, json={**CHAT, "stream": True}, headers=other)
    assert first.status_code == 200 and first.headers["x-ratelimit-remaining-tokens"] == "50"
    assert over.status_code == 429 and over.json()["error"]["type"] == "tokens"
    assert over.headers["x-ratelimit-remaining-tokens"] == "0" and over.headers["x-ratelimit-limit-tokens"] == "50"
    assert stream.status_code == 200 and b'"total_tokens": 30' in stream.content  # Moonshot's shape: passed on
    assert spent.status_code == 429 and spent.json()["error"]["code"] == "insufficient_quota"
    assert len(recorder.requests) == 2
    assert json.loads(recorder.requests[1].body)["stream_options"] == {"include_usage": True}  # asked for usage


async def test_stream_usage_asked_for_counted_and_stripped(nursery, tmp_path):
    """A client that did not ask for stream usage gets none, yet its stream's tokens count (OpenAI's shape)."""
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url, api_keys_file=keys_file(tmp_path, f"{KEY} tpm=1"))
    url = root + "/v1/chat/completions"
    async with httpx.AsyncClient(timeout=10) as client:
        stream = await client.post(url, json={**CHAT, "stream": True}, headers=AUTH)
        refused = await client.post(url, json={**CHAT, "stream": True}, headers=AUTH)
    assert stream.status_code == 200 and stream.content.endswith(b"data: [DONE]\n\n")
    assert b'"usage"' not in stream.content  # neither shape: the sim sent it at the top level, and it was cut
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "tokens"
    assert sim.stats.snapshot()["started"] == 1


async def test_concurrent_leases_come_back_however_the_call_ends(nursery, tmp_path):
    sim = await start_sim(nursery, chunks=40, interval=0.05)
    dead = "http://127.0.0.1:9/v1"
    path = keys_file(tmp_path, f"{KEY} name=web concurrent=1")
    root = await start_relay(nursery, sim.url, api_keys_file=path)
    broken = await start_relay(nursery, dead, api_keys_file=path)
    url = root + "/v1/chat/completions"
    async with httpx.AsyncClient(timeout=10) as client:
        async with client.stream("POST", url, json={**CHAT, "stream": True}, headers=AUTH) as held:
            assert held.status_code == 200
            refused = await client.post(url, json=CHAT, headers=AUTH)
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
            assert "concurrent" in refused.json()["error"]["message"]
            await held.aread()  # a normal end
        assert (await eventually_admitted(client, url, CHAT)).status_code == 200
        await open_stream_and_leave(root, {**CHAT, "stream": True})  # the client leaves mid-stream
        assert (await eventually_admitted(client, url, CHAT)).status_code == 200
        for _ in range(2):  # an upstream error, twice: the first one's slot came back
            failed = await client.post(broken + "/v1/chat/completions", json=CHAT, headers=AUTH)
            assert failed.status_code == 502
    assert sim.stats.snapshot()["started"] == 4  # held, admitted, left, admitted: no 429 went upstream


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def sighup_and_wait(records: Records, says: str) -> None:
    seen = len(records.messages)
    os.kill(os.getpid(), signal.SIGHUP)
    with trio.fail_after(5):
        while not any(says in m for m in records.messages[seen:]):  # noqa: ASYNC110 - a logging handler cannot await
            await trio.sleep(0.005)


async def test_sighup_reloads_keys_with_a_stream_in_flight(nursery, tmp_path):
    """The new table applies at once and a bad one is refused, the old one kept; both shown with a ``concurrent``
    limit, which a held stream fills whatever the wall clock says (an rpm window would turn over at the minute)."""
    records = Records()
    logger = logging.getLogger("moonrelay")
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    try:
        sim = await start_sim(nursery, chunks=20, interval=0.02)
        path = tmp_path / "keys"
        path.write_text(f"{KEY} name=web rpm=100 concurrent=1\n")
        root = await start_relay(nursery, sim.url, api_keys_file=str(path))
        url = root + "/v1/chat/completions"
        newer = {"authorization": "Bearer mr-newer-0123456"}
        long_stream = {**CHAT, "stream": True, "sim_chunks": 1000, "sim_interval": 0.05}  # ends when the test leaves
        async with httpx.AsyncClient(timeout=10) as client:
            async with client.stream("POST", url, json={**CHAT, "stream": True}, headers=AUTH) as held:
                assert held.status_code == 200
                path.write_text("mr-newer-0123456 name=newer concurrent=1\n")
                await sighup_and_wait(records, "client keys reloaded")
                assert (await client.post(url, json=CHAT, headers=AUTH)).status_code == 401  # gone for new ones
                async with client.stream("POST", url, json=long_stream, headers=newer) as newer_held:
                    assert newer_held.status_code == 200
                    refused = await client.post(url, json=CHAT, headers=newer)
                    assert refused.status_code == 429 and "limit 1" in refused.json()["error"]["message"]  # the new
                    path.write_text("mr-newer-0123456 name=newer concurrent=many\n")
                    await sighup_and_wait(records, "not reloaded")
                    assert (await client.post(url, json=CHAT, headers=AUTH)).status_code == 401
                    refused = await client.post(url, json=CHAT, headers=newer)
                    assert refused.status_code == 429 and "limit 1" in refused.json()["error"]["message"]  # kept
                body = await held.aread()
            assert body.endswith(b"data: [DONE]\n\n") and body.count(b"data: ") == 22  # the stream completed
        assert not any("mr-newer" in m or KEY in m for m in records.messages)
    finally:
        logger.removeHandler(records)
