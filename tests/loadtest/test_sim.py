"""The simulated upstream over real sockets on ephemeral ports."""

import json
import signal
import ssl
import subprocess
import sys
from functools import partial

import h11
import httpx
import pytest
import trio

from loadtest.sim import SimConfig, serve_sim
from proxy.protocol import DONE, EventSplitter, event_data

CHAT = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "Tell me about the moon"}]}
STREAM = {**CHAT, "stream": True}


async def start(nursery, **overrides):
    config = {"ttft": 0.02, "interval": 0.005, "chunks": 4, **overrides}
    return await nursery.start(partial(serve_sim, SimConfig(port=0, **config)))


def root(server) -> str:
    return server.url.removesuffix("/v1")


async def post(server, body, headers=None, **client_kw) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10, **client_kw) as client:
        return await client.post(server.url + "/chat/completions", json=body, headers=headers)


def data_events(content: bytes) -> list:
    """Parsed data events; [DONE] as the string "[DONE]"."""
    out = []
    for event in EventSplitter().feed(content):
        data = event_data(event)
        out.append("[DONE]" if data == DONE else json.loads(data))
    return out


async def raw_request(server, body: dict) -> trio.SocketStream:
    stream = await trio.open_tcp_stream(server.host, server.port)
    payload = json.dumps(body).encode()
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    await stream.send_all(head + b"content-length: %d\r\n\r\n%b" % (len(payload), payload))
    return stream


async def read_until(stream, marker: bytes, timeout=5.0) -> bytes:
    buf = b""
    with trio.fail_after(timeout):
        while marker not in buf:
            data = await stream.receive_some(65536)
            if not data:
                break
            buf += data
    return buf


async def read_to_eof(stream, timeout=5.0) -> bytes:
    buf = b""
    with trio.fail_after(timeout):
        while data := await stream.receive_some(65536):
            buf += data
    return buf


async def wait_for_stat(server, name, value, timeout=1.0):
    with trio.fail_after(timeout):
        while server.stats.snapshot()[name] < value:  # noqa: ASYNC110 - polling the server's counter
            await trio.sleep(0.005)


# -- shapes -------------------------------------------------------------------------------------------


async def test_stream_shape(nursery):
    server = await start(nursery)
    resp = await post(server, STREAM)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/event-stream"
    assert resp.headers["cache-control"] == "no-cache"
    assert resp.headers["transfer-encoding"] == "chunked"
    assert resp.headers["x-sim-chunks"] == "5"
    events = data_events(resp.content)
    assert resp.content.endswith(b"data: [DONE]\n\n") and events[-1] == "[DONE]"
    chunks = events[:-1]
    assert [c["sim"]["seq"] for c in chunks] == list(range(5))
    assert {c["sim"]["of"] for c in chunks} == {5}
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "moonshot-v1-8k" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:4])
    final = chunks[4]["choices"][0]
    assert final["finish_reason"] == "stop" and final["delta"] == {}
    assert final["usage"]["completion_tokens"] == 4
    assert final["usage"]["total_tokens"] == final["usage"]["prompt_tokens"] + 4
    stamps = [c["sim"]["ns"] for c in chunks]
    assert stamps == sorted(stamps) and stamps[0] > 0
    assert b'": ' not in resp.content  # compact JSON


async def test_stream_include_usage(nursery):
    server = await start(nursery)
    resp = await post(server, {**STREAM, "stream_options": {"include_usage": True}, "model": "kimi-x"})
    chunks = data_events(resp.content)[:-1]
    assert [c["sim"]["of"] for c in chunks] == [6] * 6
    assert "usage" not in chunks[4]["choices"][0] and chunks[4]["choices"][0]["finish_reason"] == "stop"
    assert chunks[5]["choices"] == [] and chunks[5]["usage"]["completion_tokens"] == 4
    assert chunks[5]["model"] == "kimi-x"


async def test_non_stream_shape(nursery):
    server = await start(nursery)
    stream = data_events((await post(server, {**STREAM, "sim_deterministic": True})).content)
    resp = await post(server, {**CHAT, "sim_deterministic": True})
    assert resp.status_code == 200 and resp.headers["content-length"]
    body = resp.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["message"]["content"] == "".join(
        c["choices"][0]["delta"].get("content", "") for c in stream[:-1]
    )
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == stream[-2]["choices"][0]["usage"]
    assert body["sim"] == {"ns": 0, "seq": 0, "of": 1}


async def test_determinism(nursery):
    server = await start(nursery)
    body = {**STREAM, "sim_deterministic": True}
    a, b = await post(server, body), await post(server, body)
    assert a.content == b.content
    assert b'"created":1700000000' in a.content and b'"ns":0,' in a.content
    other = await post(server, {**body, "messages": [{"role": "user", "content": "Something else entirely"}]})
    text = [
        "".join(c["choices"][0]["delta"].get("content", "") for c in data_events(r.content)[:-1]) for r in (a, other)
    ]
    assert text[0] != text[1]
    # Without sim_deterministic the text is still the same, only id/created/stamps differ.
    c, d = await post(server, STREAM), await post(server, STREAM)
    assert c.content != d.content
    assert data_events(c.content)[0]["choices"] == data_events(a.content)[0]["choices"]


async def test_overrides_body_and_headers(nursery):
    server = await start(nursery, ttft=30.0, chunks=2)
    with trio.fail_after(5):
        by_body = await post(server, {**STREAM, "sim_chunks": 3, "sim_ttft": 0, "sim_tokens_per_chunk": 2})
        by_header = await post(
            server, STREAM, headers={"X-Sim-Chunks": "6", "X-Sim-TTFT": "0.01", "X-Sim-Interval": "0"}
        )
        both = await post(server, {**STREAM, "sim_chunks": 1, "sim_ttft": 0}, headers={"X-Sim-Chunks": "7"})
        deterministic = await post(server, STREAM, headers={"X-Sim-Deterministic": "1", "X-Sim-TTFT": "0"})
    assert by_body.headers["x-sim-chunks"] == "4"
    final = data_events(by_body.content)[-2]
    assert final["choices"][0]["usage"]["completion_tokens"] == 6
    assert by_header.headers["x-sim-chunks"] == "7"
    assert both.headers["x-sim-chunks"] == "2"
    assert b'"created":1700000000' in deterministic.content
    bad = await post(server, {**STREAM, "sim_chunks": "many"})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


async def test_ttft_and_interval_timing(nursery):
    server = await start(nursery, ttft=0.2, interval=0.05, chunks=3)
    t0 = trio.current_time()
    resp = await post(server, STREAM)
    elapsed = trio.current_time() - t0
    assert 0.3 <= elapsed < 1.5
    stamps = [c["sim"]["ns"] for c in data_events(resp.content)[:-1]]
    gaps = [(b - a) / 1e9 for a, b in zip(stamps, stamps[1:], strict=False)]
    assert gaps[0] == pytest.approx(0.05, abs=0.03) and gaps[-1] == 0


async def test_other_endpoints_and_errors(nursery):
    server = await start(nursery)
    async with httpx.AsyncClient(timeout=10) as client:
        models = (await client.get(server.url + "/models")).json()
        missing = await client.get(server.url + "/nope")
        bad_json = await client.post(server.url + "/chat/completions", content=b"{nope")
        stats = (await client.get(root(server) + "/sim/stats")).json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["moonshot-v1-8k", "moonshot-v1-32k", "moonshot-v1-128k"]
    assert all(m["owned_by"] == "moonshot" and m["object"] == "model" for m in models["data"])
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "resource_not_found_error"
    assert bad_json.status_code == 400 and bad_json.json()["error"]["type"] == "invalid_request_error"
    assert "code" not in bad_json.json()["error"]
    assert stats == {"started": 0, "completed": 0, "cancelled": 0, "open": 0}


async def test_require_key_and_recent(nursery):
    server = await start(nursery, require_key="sk-sim")
    denied = await post(server, STREAM)
    wrong = await post(server, STREAM, headers={"authorization": "Bearer nope"})
    ok = await post(server, STREAM, headers={"authorization": "Bearer sk-sim"})
    assert denied.status_code == wrong.status_code == 401
    assert denied.json() == {"error": {"message": "Invalid Authentication", "type": "invalid_authentication_error"}}
    assert ok.status_code == 200
    last = server.recent[-1]
    assert last["headers"]["authorization"] == "Bearer sk-sim" and last["body"]["messages"] == CHAT["messages"]


async def test_keep_alive_two_requests_one_connection(nursery):
    server = await start(nursery)
    stream = await raw_request(server, {**STREAM, "sim_chunks": 1})
    first = await read_until(stream, b"0\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200") and first.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")
    payload = json.dumps(CHAT).encode()
    await stream.send_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%b" % (len(payload), payload)
    )
    second = await read_until(stream, b'"of":1}}')
    assert second.startswith(b"HTTP/1.1 200") and b"chat.completion" in second
    await stream.aclose()
    await wait_for_stat(server, "completed", 2)
    assert server.stats.snapshot()["cancelled"] == 0


# -- stats and cancellation ------------------------------------------------------------------------------


async def test_stats_completed_and_reset(nursery):
    server = await start(nursery)
    for _ in range(3):
        await post(server, STREAM)
    async with httpx.AsyncClient(timeout=10) as client:
        stats = (await client.get(root(server) + "/sim/stats")).json()
        reset = await client.post(root(server) + "/sim/reset")
        after = (await client.get(root(server) + "/sim/stats")).json()
    assert stats == {"started": 3, "completed": 3, "cancelled": 0, "open": 0}
    assert reset.status_code == 200 and after == {"started": 0, "completed": 0, "cancelled": 0, "open": 0}


@pytest.mark.parametrize("phase", ["streaming", "ttft"])
async def test_client_leaving_is_counted_at_once(nursery, phase):
    server = await start(nursery, ttft=0.01 if phase == "streaming" else 30.0, interval=30.0, chunks=3)
    stream = await raw_request(server, STREAM)
    if phase == "streaming":
        assert b'"seq":0' in await read_until(stream, b'"seq":0')
    else:
        await wait_for_stat(server, "open", 1)
    left = trio.current_time()
    await stream.aclose()
    await wait_for_stat(server, "cancelled", 1, timeout=1.0)
    assert trio.current_time() - left < 1.0
    assert server.stats.snapshot() == {"started": 1, "completed": 0, "cancelled": 1, "open": 0}
    async with httpx.AsyncClient(timeout=10) as client:
        cancels = (await client.get(root(server) + "/sim/cancels")).json()["cancel_ns"]
    assert len(cancels) == 1 and cancels[0] > 0


# -- faults --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "invalid_authentication_error"),
        (403, "exceeded_current_quota_error"),
        (404, "resource_not_found_error"),
        (429, "rate_limit_reached_error"),
        (500, "server_error"),
        (503, "server_error"),
    ],
)
async def test_fault_status(nursery, status, kind):
    server = await start(nursery)
    resp = await post(server, {**STREAM, "sim_fault": f"status:{status}"})
    assert resp.status_code == status
    assert set(resp.json()["error"]) == {"message", "type"} and resp.json()["error"]["type"] == kind
    if status == 429:
        assert resp.headers["retry-after"] == "1" and resp.headers["x-ratelimit-remaining"] == "0"
        assert resp.headers["x-ratelimit-limit"] and resp.headers["x-ratelimit-reset"]


async def test_fault_status_by_header(nursery):
    server = await start(nursery)
    resp = await post(server, STREAM, headers={"X-Sim-Fault": "status:500"})
    assert resp.status_code == 500 and resp.json()["error"]["type"] == "server_error"


@pytest.mark.parametrize("fault", ["stall", "headers-then-stall"])
async def test_fault_stall(nursery, fault):
    server = await start(nursery, ttft=0.0)
    stream = await raw_request(server, {**STREAM, "sim_fault": fault})
    await wait_for_stat(server, "started", 1)  # the window below opens once the sim has the request (ttft 0)
    received = b""
    with trio.move_on_after(0.3):
        while data := await stream.receive_some(65536):
            received += data
    if fault == "stall":
        assert received == b""
    else:
        assert received.startswith(b"HTTP/1.1 200") and received.endswith(b"\r\n\r\n")
    await stream.aclose()
    await wait_for_stat(server, "cancelled", 1)


@pytest.mark.parametrize("k", [0, 2, 4])
async def test_fault_drop(nursery, k):
    server = await start(nursery)
    stream = await raw_request(server, {**STREAM, "sim_fault": f"drop:{k}"})
    received = await read_to_eof(stream)
    await stream.aclose()
    assert received.startswith(b"HTTP/1.1 200")
    assert received.count(b"data: ") == k and b"[DONE]" not in received and not received.endswith(b"0\r\n\r\n")
    with pytest.raises(httpx.RemoteProtocolError):
        await post(server, {**STREAM, "sim_fault": f"drop:{k}"})


async def test_fault_malformed(nursery):
    server = await start(nursery)
    resp = await post(server, {**STREAM, "sim_fault": "malformed:1"})
    events = [event_data(e) for e in EventSplitter().feed(resp.content)]
    assert events[1] == b"{not json"
    assert len(events) == 6 and events[-1] == DONE
    assert [json.loads(e)["sim"]["seq"] for e in events[:-1] if e != b"{not json"] == [0, 2, 3, 4]


async def test_fault_drip(nursery):
    server = await start(nursery, interval=0.02)
    body = {**STREAM, "sim_deterministic": True}
    plain = await post(server, body)
    stream = await raw_request(server, {**body, "sim_fault": "drip"})
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="POST", target="/", headers=[("host", "x"), ("content-length", "0")]))
    client.send(h11.EndOfMessage())
    pieces = []
    with trio.fail_after(10):
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                client.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Data):
                pieces.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
    await stream.aclose()
    assert b"".join(pieces) == plain.content
    assert len(pieces) > 50 and max(map(len, pieces)) <= 7


async def test_unknown_fault_is_400(nursery):
    server = await start(nursery)
    resp = await post(server, {**STREAM, "sim_fault": "explode"})
    assert resp.status_code == 400


# -- TLS and the CLI ---------------------------------------------------------------------------------


async def test_tls(nursery, tmp_path):
    server = await start(nursery, tls_dir=str(tmp_path))
    assert server.url.startswith("https://")
    for name in ("ca.pem", "server.pem", "server.key"):
        assert (tmp_path / name).exists()
    trusted = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    async with httpx.AsyncClient(timeout=10, verify=trusted) as client:
        for _ in range(2):  # keep-alive over TLS
            resp = await client.post(server.url + "/chat/completions", json=STREAM)
            assert resp.status_code == 200 and resp.content.endswith(b"data: [DONE]\n\n")
    with pytest.raises(httpx.ConnectError):
        await post(server, STREAM)


async def _read_line(stream) -> bytes:
    buf = b""
    while b"\n" not in buf:
        data = await stream.receive_some(4096)
        if not data:
            break
        buf += data
    return buf


@pytest.mark.slow
async def test_cli_two_workers(tmp_path):
    cmd = [sys.executable, "-m", "loadtest.sim", "--bind", "127.0.0.1:0", "--workers", "2", "--ttft", "0.01"]
    cmd += ["--interval", "0.001", "--chunks", "2"]
    proc = await trio.lowlevel.open_process(cmd, stdout=subprocess.PIPE)
    try:
        with trio.fail_after(30):
            line = (await _read_line(proc.stdout)).decode()
        assert line.startswith("sim listening on http://127.0.0.1:") and line.endswith("/v1\n")
        url = line.split()[-1]
        async with trio.open_nursery() as n:
            for _ in range(20):
                # A fresh connection each: SO_REUSEPORT spreads connections, not requests.
                n.start_soon(partial(_one_request, url))
        stats = []
        for _ in range(6):  # fresh connections, so that both workers answer
            async with httpx.AsyncClient(timeout=10) as client:
                stats.append((await client.get(url.removesuffix("/v1") + "/sim/stats")).json())
        assert all(s == {"started": 20, "completed": 20, "cancelled": 0, "open": 0} for s in stats)
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await proc.stdout.aclose()


async def _one_request(url):
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.post(url + "/chat/completions", json=STREAM)
    assert resp.status_code == 200 and resp.content.endswith(b"data: [DONE]\n\n")
