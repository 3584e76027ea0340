"""Bad input, overload, retries and heartbeats: the relay against the sim (or a scripted upstream), real sockets."""

import json
import random
import ssl

import h11
import httpx
import pytest
import trio

from proxy.protocol import EventSplitter, event_data, parse_retry_after, retry_delay
from tests.conftest import open_stream_and_leave, start_relay, start_sim
from tests.support.scripted import ScriptedServer, read_request

CHAT = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "Tell me about the moon"}]}
PING = b": ping\n\n"


def _is_openai_error(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "code"} and err["code"] == code


async def _still_healthy(client: httpx.AsyncClient, root: str) -> None:
    assert (await client.get(root + "/healthz")).status_code == 200
    ok = await client.post(root + "/v1/chat/completions", json={**CHAT, "stream": True})
    assert ok.status_code == 200 and ok.content.endswith(b"data: [DONE]\n\n")


# -- 1. bad input ------------------------------------------------------------------------------------


async def test_wrong_content_type_is_415_and_not_forwarded(nursery):
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url)
    body = json.dumps({**CHAT, "stream": True}).encode()
    async with httpx.AsyncClient(timeout=10) as client:
        for ctype in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x"):
            resp = await client.post(root + "/v1/chat/completions", content=body, headers={"content-type": ctype})
            _is_openai_error(resp, 415, "unsupported_media_type")
        form = await client.post(root + "/chat/completions", data={"messages": "[]"})  # curl -d without -H
        assert form.status_code == 415 and json.loads(form.text)["error"]["code"] == "unsupported_media_type"
        assert sim.stats.snapshot()["started"] == 0
        # JSON with parameters, and a browser fetch()'s text/plain on the seed route, are accepted.
        ok = await client.post(
            root + "/v1/chat/completions", content=body, headers={"content-type": "application/json; charset=utf-8"}
        )
        assert ok.status_code == 200
        seed = await client.post(root + "/chat/completions", content=body, headers={"content-type": "text/plain"})
        assert seed.status_code == 200 and json.loads(seed.text.splitlines()[0])["object"] == "chat.completion.chunk"
        await _still_healthy(client, root)


async def test_body_over_limit_is_413_and_not_forwarded(nursery):
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url, max_body_bytes=2000)
    big = json.dumps({**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}).encode()

    async def chunked():  # no content-length: the limit must hold while the body streams in
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    async with httpx.AsyncClient(timeout=10) as client:
        headers = {"content-type": "application/json"}
        declared = await client.post(root + "/v1/chat/completions", content=big, headers=headers)
        _is_openai_error(declared, 413, "request_too_large")
        streamed = await client.post(root + "/v1/chat/completions", content=chunked(), headers=headers)
        _is_openai_error(streamed, 413, "request_too_large")
        assert sim.stats.snapshot()["started"] == 0
        await _still_healthy(client, root)


async def test_refused_upload_still_sending_gets_413_with_connection_close(nursery):
    """A 413 sent while the body is still coming ends the connection, and says so (a client reusing it failed)."""
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url, max_body_bytes=2000)
    host, port = root.removeprefix("http://").split(":")
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"content-length: {64 << 20}\r\n\r\n"
    ).encode()
    for _ in range(5):
        stream = await trio.open_tcp_stream(host, int(port))
        received = b""
        with trio.fail_after(10):
            async with stream:
                await stream.send_all(head)
                # Keep sending body bytes for a while after the answer came, as a client mid-upload does.
                sending = True
                while True:
                    if sending:
                        try:
                            await stream.send_all(b"x" * 65536)
                        except trio.BrokenResourceError:
                            sending = False
                    if received.endswith(b"}") or len(received) > 4096:
                        break
                    with trio.move_on_after(0.01):
                        received += await stream.receive_some(65536)
        assert received.startswith(b"HTTP/1.1 413"), received[:200]
        assert b"\r\nconnection: close\r\n" in received.lower()
        assert json.loads(received.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_too_large"
    assert sim.stats.snapshot()["started"] == 0


async def test_oversized_headers_are_refused_by_hypercorn(nursery):
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url)
    host, port = root.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    head = f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\nx-big: {'a' * 64 * 1024}\r\n\r\n".encode()
    received = b""
    with trio.fail_after(5):
        async with stream:
            try:
                await stream.send_all(head)
            except trio.BrokenResourceError:
                pass  # it may hang up before taking all of it; its answer is what matters
            while b"\r\n\r\n" not in received:
                data = await stream.receive_some(65536)
                if not data:
                    break
                received += data
    status = int(received.split(b" ", 2)[1])
    assert status in (400, 431)
    assert b"content-length: 0" in received.lower()  # hypercorn's own plain refusal, not the app's JSON
    assert sim.stats.snapshot()["started"] == 0
    async with httpx.AsyncClient(timeout=10) as client:
        await _still_healthy(client, root)


# -- 3. overload ---------------------------------------------------------------------------------------


async def _stream_until_first_event(client: httpx.AsyncClient, url: str, got_first: trio.Event, out: list) -> None:
    async with client.stream("POST", url, json={**CHAT, "stream": True}) as resp:
        data = b""
        async for part in resp.aiter_raw():
            data += part
            if b"data: " in data:
                got_first.set()
        out.append((resp.status_code, data))


async def test_max_streams_refuses_the_third_at_once_and_admitted_ones_complete(nursery):
    sim = await start_sim(nursery, ttft=0.01, interval=0.3, chunks=4)
    root = await start_relay(nursery, sim.url, max_streams=2)
    url = root + "/v1/chat/completions"
    done: list = []
    limits = httpx.Limits(max_connections=10)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:
        async with trio.open_nursery() as n:
            firsts = [trio.Event(), trio.Event()]
            for ev in firsts:
                n.start_soon(_stream_until_first_event, client, url, ev, done)
            with trio.fail_after(5):
                for ev in firsts:
                    await ev.wait()
            t0 = trio.current_time()
            third = await client.post(url, json={**CHAT, "stream": True})
            assert trio.current_time() - t0 < 0.5
            _is_openai_error(third, 429, "relay_overloaded")
            assert third.headers["retry-after"] == "1"
            seed = await client.get(root + "/chat/completions", params={"content": "hi"})
            assert seed.status_code == 429 and json.loads(seed.text)["error"]["code"] == "relay_overloaded"
        assert [status for status, _ in done] == [200, 200]
        assert all(data.endswith(b"data: [DONE]\n\n") for _, data in done)
        assert sim.stats.snapshot()["started"] == 2
        # Both slots came back when the streams ended.
        again = await client.post(url, json={**CHAT, "stream": True})
        assert again.status_code == 200


async def test_a_client_that_leaves_gives_its_slot_back(nursery):
    sim = await start_sim(nursery, ttft=0.01, interval=30, chunks=3)
    root = await start_relay(nursery, sim.url, max_streams=1)
    url = root + "/v1/chat/completions"
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(3):  # without the release, the second round would get 429
            with trio.fail_after(5):
                head = await open_stream_and_leave(root, {**CHAT, "stream": True})
            assert head.startswith(b"HTTP/1.1 200")
            with trio.fail_after(5):
                while sim.stats.snapshot()["open"]:  # noqa: ASYNC110 - the relay hangs up upstream
                    await trio.sleep(0.01)
        # Non-stream requests hold a slot too, and give it back.
        resp = await client.post(url, json={**CHAT, "sim_ttft": 0.01, "sim_interval": 0.01})
        assert resp.status_code == 200


# -- 4. retries before the first byte ------------------------------------------------------------------


def test_retry_delay_rules():
    rng = random.Random(1)
    assert retry_delay(0, "1", cap_s=5) == 1.0
    assert retry_delay(0, "0.2", cap_s=5) == 0.2
    assert retry_delay(0, "60", cap_s=5) is None  # longer than we wait: relay it to the client
    assert retry_delay(0, "Wed, 21 Oct 2015 07:28:00 GMT", cap_s=5) == 0.0  # a date in the past
    assert 0.125 <= retry_delay(0, None, cap_s=5, rng=rng) <= 0.25
    assert 0.25 <= retry_delay(1, None, cap_s=5, rng=rng) <= 0.5
    assert retry_delay(10, None, cap_s=5, rng=rng) <= 5
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


class ScriptedUpstream(ScriptedServer):
    """Answers each request with the next scripted (status, headers, body); the last one repeats."""

    def __init__(self, script: list[tuple[int, list[tuple[str, str]], bytes]]) -> None:
        self.script = script
        self.seen = 0

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            if not await read_request(conn, stream):
                return
            status, headers, body = self.script[min(self.seen, len(self.script) - 1)]
            self.seen += 1
            headers = [*headers, ("content-length", str(len(body))), ("connection", "close")]
            out = conn.send(h11.Response(status_code=status, headers=headers))
            await stream.send_all(out + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))


SSE_OK = (200, [("content-type", "text/event-stream")], b'data: {"id":"x"}\n\ndata: [DONE]\n\n')
BUSY = (503, [("content-type", "application/json"), ("retry-after", "0")], b'{"error":{"message":"busy"}}')


async def test_503_is_retried_before_the_first_byte(nursery):
    upstream = await nursery.start(ScriptedUpstream([BUSY, SSE_OK]).serve)
    root = await start_relay(nursery, upstream.url, retries=1)
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.post(root + "/v1/chat/completions", json={**CHAT, "stream": True})
    assert resp.status_code == 200 and resp.content == SSE_OK[2]
    assert upstream.seen == 2


async def test_retries_are_bounded_and_the_last_answer_relayed(nursery):
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url, retries=2)
    async with httpx.AsyncClient(timeout=10) as client:
        busy = await client.post(
            root + "/v1/chat/completions", json={**CHAT, "stream": True, "sim_fault": "status:503"}
        )
        assert busy.status_code == 503 and "error" in busy.json()
        assert sim.stats.snapshot()["started"] == 3
        broken = await client.post(root + "/v1/chat/completions", json={**CHAT, "sim_fault": "status:500"})
        assert broken.status_code == 500
        assert sim.stats.snapshot()["started"] == 4  # 500 is not retried
        t0 = trio.current_time()
        limited = await client.post(root + "/v1/chat/completions", json={**CHAT, "sim_fault": "status:429"})
        assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
        assert trio.current_time() - t0 >= 1.9  # Retry-After: 1, honoured before each of the 2 retries
        assert sim.stats.snapshot()["started"] == 7


async def test_long_retry_after_is_relayed_not_waited(nursery):
    slow = (429, [("content-type", "application/json"), ("retry-after", "60")], b'{"error":{"message":"later"}}')
    upstream = await nursery.start(ScriptedUpstream([slow, SSE_OK]).serve)
    root = await start_relay(nursery, upstream.url, retries=3)
    with trio.fail_after(2):
        async with httpx.AsyncClient(timeout=10) as client:
            resp = await client.post(root + "/v1/chat/completions", json={**CHAT, "stream": True})
    assert resp.status_code == 429 and resp.headers["retry-after"] == "60"
    assert upstream.seen == 1


async def test_connect_errors_are_retried(nursery, monkeypatch):
    # A bound socket that does not listen refuses connections; it starts listening once the
    # relay has been refused, so only a retry can reach it.
    from proxy.routing import _attempts as attempts

    refused = trio.Event()

    def delay_after_a_refusal(*args, **kwargs):  # asked only after a connect error here: nothing listens yet
        refused.set()
        return retry_delay(*args, **kwargs)

    monkeypatch.setattr(attempts, "retry_delay", delay_after_a_refusal)
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    root = await start_relay(nursery, f"http://127.0.0.1:{port}/v1", retries=3, retry_max_wait_s=0.3)
    upstream = ScriptedUpstream([SSE_OK])
    result = []

    async def call():
        async with httpx.AsyncClient(timeout=10) as client:
            result.append(await client.post(root + "/v1/chat/completions", json={**CHAT, "stream": True}))

    with sock:
        async with trio.open_nursery() as n:
            n.start_soon(call)
            with trio.fail_after(5):
                await refused.wait()  # the first attempt was refused
            sock.listen(10)
            listener = trio.SocketListener(sock)
            n.start_soon(trio.serve_listeners, upstream._handle, [listener])
            with trio.fail_after(5):
                while not result:  # noqa: ASYNC110 - waiting for the client task above
                    await trio.sleep(0.01)
            n.cancel_scope.cancel()
    assert result[0].status_code == 200 and upstream.seen == 1


async def test_no_retry_once_the_stream_started(nursery):
    sim = await start_sim(nursery, ttft=0.01, interval=0.01, chunks=5)
    root = await start_relay(nursery, sim.url, retries=3)
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.post(root + "/v1/chat/completions", json={**CHAT, "stream": True, "sim_fault": "drop:2"})
    assert resp.status_code == 200
    assert "error" in json.loads(event_data(EventSplitter().feed(resp.content)[-1]))
    assert sim.stats.snapshot()["started"] == 1


# -- 6. heartbeats ---------------------------------------------------------------------------------


async def test_heartbeats_fill_upstream_silence_and_change_no_chunk(nursery):
    sim = await start_sim(nursery, ttft=0.01, interval=1.0, chunks=3)
    root = await start_relay(nursery, sim.url, heartbeat_s=0.2)
    body = {**CHAT, "stream": True, "sim_deterministic": True}
    async with httpx.AsyncClient(timeout=10) as client:
        direct = (await client.post(sim.url + "/chat/completions", json=body)).content
        relayed = (await client.post(root + "/v1/chat/completions", json=body)).content
        ndjson = (await client.post(root + "/chat/completions", json=body)).text
    assert relayed.replace(PING, b"") == direct
    pieces = [p for p in relayed.split(b"\n\n") if p]
    assert pieces[0].startswith(b"data: ")  # the first chunk came before any ping
    pings_between = [pieces[i : i + 1] == [PING[:-2]] for i in range(1, len(pieces) - 1)]
    assert sum(pings_between) >= 4  # two 1 s gaps, K = 0.2 s
    assert all(json.loads(line) for line in ndjson.splitlines())  # no pings in NDJSON


async def test_no_heartbeat_before_the_status_and_idle_timeout_still_fires(nursery):
    sim = await start_sim(nursery, ttft=0.01, interval=30, chunks=3)
    root = await start_relay(nursery, sim.url, heartbeat_s=0.1, first_byte_timeout_s=0.6, idle_timeout_s=0.7)
    async with httpx.AsyncClient(timeout=10) as client:
        with trio.fail_after(5):
            stalled = await client.post(
                root + "/v1/chat/completions", json={**CHAT, "stream": True, "sim_fault": "stall"}
            )
        _is_openai_error(stalled, 504, "upstream_timeout")  # nothing sent before the status was known
        with trio.fail_after(5):
            silent = await client.post(root + "/v1/chat/completions", json={**CHAT, "stream": True})
    assert silent.content.count(PING) >= 3
    events = EventSplitter().feed(silent.content)
    assert json.loads(event_data(events[-1]))["error"]["code"] == "upstream_timeout"  # pings are not upstream bytes


@pytest.mark.parametrize("heartbeat_s", [0])
async def test_heartbeats_can_be_turned_off(nursery, heartbeat_s):
    sim = await start_sim(nursery, ttft=0.01, interval=0.5, chunks=2)
    root = await start_relay(nursery, sim.url, heartbeat_s=heartbeat_s)
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.post(root + "/v1/chat/completions", json={**CHAT, "stream": True})
    assert PING not in resp.content


async def test_heartbeats_over_tls_leave_the_stream_intact(nursery, tmp_path):
    # Over TLS the wake-up interrupts a read inside trio's SSLStream: it must not break the session.
    sim = await start_sim(nursery, ttft=0.01, interval=0.6, chunks=3, tls_dir=str(tmp_path))
    root = await start_relay(nursery, sim.url, heartbeat_s=0.1, upstream_ca_file=str(tmp_path / "ca.pem"))
    body = {**CHAT, "stream": True, "sim_deterministic": True}
    ca = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    async with httpx.AsyncClient(timeout=10, verify=ca) as client:
        direct = (await client.post(sim.url + "/chat/completions", json=body)).content
        relayed = (await client.post(root + "/v1/chat/completions", json=body)).content
    assert relayed.count(PING) >= 4
    assert relayed.replace(PING, b"") == direct
