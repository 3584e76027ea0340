"""The relay against the simulated upstream, over real sockets on ephemeral ports."""

import json

import httpx
import trio

from proxy.protocol import EventSplitter, event_data
from tests.conftest import open_stream_and_leave, start_relay, start_sim

CHAT = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "Tell me about the moon"}]}


async def _post_bytes(url: str, body: dict, headers: dict | None = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(url, json=body, headers=headers)


async def test_stream_is_byte_identical_to_direct(nursery):
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url)
    body = {**CHAT, "stream": True, "sim_deterministic": True}
    direct = await _post_bytes(sim.url + "/chat/completions", body)
    relayed = await _post_bytes(root + "/v1/chat/completions", body)
    assert relayed.status_code == direct.status_code == 200
    assert relayed.headers["content-type"].startswith("text/event-stream")
    assert relayed.content == direct.content
    assert relayed.content.endswith(b"data: [DONE]\n\n")
    events = EventSplitter().feed(relayed.content)
    first = json.loads(event_data(events[0]))
    assert first["choices"][0]["delta"]["role"] == "assistant"


async def test_non_stream_identical_and_default_model(nursery):
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url)
    body = {"messages": CHAT["messages"], "sim_deterministic": True}
    direct = await _post_bytes(sim.url + "/chat/completions", {**body, "model": "moonshot-v1-8k"})
    relayed = await _post_bytes(root + "/v1/chat/completions", body)
    assert relayed.status_code == 200
    assert relayed.json() == direct.json()
    assert relayed.json()["model"] == "moonshot-v1-8k"
    assert relayed.json()["usage"]["completion_tokens"] > 0


async def test_ndjson_stream_lines(nursery):
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url)
    body = {**CHAT, "stream": True, "sim_deterministic": True}
    direct = await _post_bytes(sim.url + "/chat/completions", body)
    expected = [event_data(e) for e in EventSplitter().feed(direct.content)]
    expected = [json.loads(x) for x in expected if x != b"[DONE]"]
    relayed = await _post_bytes(root + "/chat/completions", body)
    assert relayed.status_code == 200
    assert relayed.headers["content-type"].startswith("application/x-ndjson")
    lines = relayed.content.decode().splitlines()
    assert [json.loads(x) for x in lines] == expected
    assert relayed.content.endswith(b"\n")


async def test_ndjson_non_stream_is_one_object(nursery):
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url)
    relayed = await _post_bytes(root + "/chat/completions", {**CHAT, "stream": False})
    lines = relayed.content.decode().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["object"] == "chat.completion"


async def test_browser_get(nursery):
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url)
    headers = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8", "user-agent": "Mozilla/5.0"}
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.get(root + "/chat/completions", params={"content": "你好"}, headers=headers)
    assert resp.status_code == 200
    assert resp.headers.get("transfer-encoding") == "chunked"
    objs = [json.loads(x) for x in resp.text.splitlines()]
    assert objs[0]["object"] == "chat.completion.chunk"
    assert objs[-1]["choices"][0]["finish_reason"] == "stop"
    assert "".join(o["choices"][0]["delta"].get("content", "") for o in objs)


async def test_models_and_healthz(nursery):
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url)
    async with httpx.AsyncClient(timeout=10) as client:
        models = await client.get(root + "/v1/models")
        health = await client.get(root + "/healthz")
        missing = await client.get(root + "/v1/nope")
    assert {m["id"] for m in models.json()["data"]} >= {"moonshot-v1-8k", "moonshot-v1-32k", "moonshot-v1-128k"}
    assert health.status_code == 200
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"


async def test_upstream_error_status_and_body_relayed(nursery):
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url)
    resp = await _post_bytes(root + "/v1/chat/completions", {**CHAT, "stream": True, "sim_fault": "status:429"})
    assert resp.status_code == 429
    assert resp.json()["error"]["type"] == "rate_limit_reached_error"
    assert resp.headers["retry-after"]
    assert "x-ratelimit-remaining" in resp.headers


async def test_own_key_sent_and_client_key_not_forwarded(nursery, monkeypatch):
    monkeypatch.setenv("MOONSHOT_API_KEY", "sk-upstream-secret")
    sim = await start_sim(nursery, require_key="sk-upstream-secret")
    root = await start_relay(nursery, sim.url)
    resp = await _post_bytes(
        root + "/v1/chat/completions", {**CHAT, "stream": True}, headers={"authorization": "Bearer sk-client"}
    )
    assert resp.status_code == 200
    seen = [r for r in sim.recent if "authorization" in r.get("headers", {})]
    assert seen and all(r["headers"]["authorization"] == "Bearer sk-upstream-secret" for r in seen)
    assert b"sk-upstream-secret" not in resp.content
    assert all(r["headers"].get("accept-encoding", "identity") == "identity" for r in seen)


async def test_unreachable_upstream_is_502(nursery):
    root = await start_relay(nursery, "http://127.0.0.1:9/v1")
    resp = await _post_bytes(root + "/v1/chat/completions", {**CHAT, "stream": True})
    assert resp.status_code == 502
    assert set(resp.json()["error"]) == {"message", "type", "code"}
    assert "127.0.0.1" not in resp.json()["error"]["message"]


async def test_invalid_json_is_400_and_not_forwarded(nursery):
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url)
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.post(
            root + "/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"}
        )
        stats = (await client.get(sim.url.removesuffix("/v1") + "/sim/stats")).json()
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_json"
    assert stats["started"] == 0


async def test_client_disconnect_cancels_upstream(nursery):
    sim = await start_sim(nursery, ttft=0.01, interval=30, chunks=3)
    root = await start_relay(nursery, sim.url)
    await open_stream_and_leave(root, {**CHAT, "stream": True})
    with trio.fail_after(5):
        while sim.stats.snapshot()["cancelled"] < 1:  # noqa: ASYNC110 - polling another server's counter
            await trio.sleep(0.01)


async def test_long_ttft_is_not_cut_by_short_defaults(nursery):
    # httpx's default 5 s read timeout would fail this; ours is explicit. Kept short: 6 s TTFT.
    sim = await start_sim(nursery, ttft=6.0, chunks=2)
    root = await start_relay(nursery, sim.url)
    with trio.fail_after(20):
        resp = await _post_bytes(root + "/v1/chat/completions", {**CHAT, "stream": True})
    assert resp.status_code == 200 and resp.content.endswith(b"data: [DONE]\n\n")


async def test_more_than_100_concurrent_streams(nursery):
    # 150 completions must also be open upstream at once: a relay that queued them 50 at a time would
    # complete them all too. Each holds its first chunk 1 s, so all 150 overlap unless something caps them.
    sim = await start_sim(nursery, ttft=1.0, interval=0.05, chunks=3)
    root = await start_relay(nursery, sim.url)
    results = []
    peak = 0

    async def one(client):
        r = await client.post(root + "/v1/chat/completions", json={**CHAT, "stream": True})
        results.append((r.status_code, r.content.endswith(b"data: [DONE]\n\n")))

    async def watch_open():  # the sim's open gauge: streams the relay holds upstream right now
        nonlocal peak
        while True:
            peak = max(peak, sim.stats.snapshot()["open"])
            await trio.sleep(0.005)

    limits = httpx.Limits(max_connections=300)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client, trio.open_nursery() as watching:
        watching.start_soon(watch_open)
        async with trio.open_nursery() as n:
            for _ in range(150):
                n.start_soon(one, client)
        watching.cancel_scope.cancel()
    assert results == [(200, True)] * 150
    assert peak > 100, f"the sim saw at most {peak} streams open at once"


async def test_pool_limit_waits_then_fails_with_503(nursery):
    sim = await start_sim(nursery, ttft=2.0, chunks=1)
    root = await start_relay(nursery, sim.url, max_connections=1, pool_timeout_s=0.3)
    statuses = []

    async def one(client):
        r = await client.post(root + "/v1/chat/completions", json={**CHAT, "stream": True})
        statuses.append(r.status_code if r.status_code != 503 else r.json()["error"]["code"])

    async with httpx.AsyncClient(timeout=10) as client, trio.open_nursery() as n:
        n.start_soon(one, client)
        n.start_soon(one, client)
    assert sorted(map(str, statuses)) == ["200", "upstream_busy"]


async def test_first_byte_timeout_is_504(nursery):
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url, first_byte_timeout_s=0.3)
    with trio.fail_after(5):
        resp = await _post_bytes(root + "/v1/chat/completions", {**CHAT, "stream": True, "sim_fault": "stall"})
    assert resp.status_code == 504
    assert resp.json()["error"]["code"] == "upstream_timeout"


async def test_idle_timeout_mid_stream_ends_with_error_event(nursery):
    sim = await start_sim(nursery, ttft=0.01, interval=30, chunks=3)
    root = await start_relay(nursery, sim.url, idle_timeout_s=0.3)
    with trio.fail_after(5):
        resp = await _post_bytes(root + "/v1/chat/completions", {**CHAT, "stream": True})
    assert resp.status_code == 200
    events = EventSplitter().feed(resp.content)
    assert json.loads(event_data(events[0]))["choices"][0]["delta"]["role"] == "assistant"
    last = json.loads(event_data(events[-1]))
    assert last["error"]["code"] == "upstream_timeout"
    with trio.fail_after(5):
        while sim.stats.snapshot()["cancelled"] < 1:  # noqa: ASYNC110 - the relay must hang up upstream too
            await trio.sleep(0.01)


async def test_total_timeout_cuts_a_steady_stream(nursery):
    sim = await start_sim(nursery, ttft=0.01, interval=0.1, chunks=100)
    root = await start_relay(nursery, sim.url, total_timeout_s=0.5, idle_timeout_s=5)
    with trio.fail_after(5):
        resp = await _post_bytes(root + "/v1/chat/completions", {**CHAT, "stream": True})
    events = EventSplitter().feed(resp.content)
    assert 2 <= len(events) < 100
    assert json.loads(event_data(events[-1]))["error"]["code"] == "upstream_timeout"


async def test_ndjson_ends_with_error_line_when_upstream_drops(nursery):
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url)
    with trio.fail_after(5):
        resp = await _post_bytes(root + "/chat/completions", {**CHAT, "stream": True, "sim_fault": "drop:2"})
    assert resp.status_code == 200
    lines = [json.loads(x) for x in resp.text.splitlines()]
    assert [x["object"] for x in lines[:-1]] == ["chat.completion.chunk"] * 2
    assert lines[-1]["error"]["type"] == "upstream_error"
    assert set(lines[-1]["error"]) == {"message", "type", "code"}


async def test_sse_ends_with_error_event_when_upstream_drops(nursery):
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url)
    with trio.fail_after(5):
        resp = await _post_bytes(root + "/v1/chat/completions", {**CHAT, "stream": True, "sim_fault": "drop:2"})
    events = [json.loads(event_data(e)) for e in EventSplitter().feed(resp.content)]
    assert len(events) == 3 and events[-1]["error"]["code"] == "upstream_error"
    assert b"[DONE]" not in resp.content


async def test_malformed_event_ends_the_stream_with_an_error_event(nursery):
    sim = await start_sim(nursery, chunks=5)
    root = await start_relay(nursery, sim.url)
    with trio.fail_after(5):
        sse = await _post_bytes(root + "/v1/chat/completions", {**CHAT, "stream": True, "sim_fault": "malformed:2"})
        nd = await _post_bytes(root + "/chat/completions", {**CHAT, "stream": True, "sim_fault": "malformed:2"})
    events = EventSplitter().feed(sse.content)
    assert b"{not json" not in sse.content and b"[DONE]" not in sse.content
    assert [json.loads(event_data(e))["object"] for e in events[:2]] == ["chat.completion.chunk"] * 2
    assert json.loads(event_data(events[-1]))["error"]["code"] == "upstream_malformed"
    lines = [json.loads(x) for x in nd.text.splitlines()]
    assert len(lines) == 3 and lines[-1]["error"]["code"] == "upstream_malformed"


async def test_dns_failure_is_502_without_internals(nursery):
    root = await start_relay(nursery, "http://upstream.invalid/v1")  # .invalid never resolves (RFC 6761)
    with trio.fail_after(10):
        resp = await _post_bytes(root + "/v1/chat/completions", {**CHAT, "stream": True})
    assert resp.status_code == 502
    err = resp.json()["error"]
    assert err["code"] == "upstream_unavailable" and "Traceback" not in err["message"]


async def test_connect_timeout_is_504(nursery):
    # A listener that never accepts, its backlog already full: the kernel drops further SYNs, so
    # connect() hangs (loopback only, no unroutable address needed).
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        root = await start_relay(nursery, f"http://127.0.0.1:{port}/v1", connect_timeout_s=0.5, retries=0)
        with trio.fail_after(10):
            resp = await _post_bytes(root + "/v1/chat/completions", {**CHAT, "stream": True})
        assert resp.status_code == 504
        assert resp.json()["error"]["code"] == "upstream_connect_timeout"
    finally:
        for s in fillers:
            s.close()
        listener.close()


async def test_idle_keep_alive_connections_are_closed_after_requests(nursery):
    # quart-trio + hypercorn 0.18 lose the keep-alive timer after a connection's first response
    # without proxy/edge/_tcpserver.py; closed connections must still go at once (test_reliability_scale).
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url, keep_alive_s=0.5)
    host, port = root.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        for _ in range(2):
            await stream.send_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            seen = b""
            while not seen.endswith(b"}"):
                seen += await stream.receive_some(65536)
            assert seen.startswith(b"HTTP/1.1 200")
        with trio.fail_after(3):
            while await stream.receive_some(65536):
                pass  # the server closes the idle connection: EOF
