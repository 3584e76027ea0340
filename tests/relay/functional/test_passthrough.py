"""/v1/* pass-through: other endpoints relayed to the chosen upstream with both bodies streamed, against the
sim (one per upstream), real sockets on ephemeral ports."""

import gzip
import hashlib
import json
import logging

import httpx
import pytest
import trio

from proxy.relay import forwarded_headers, header_names, path_filter
from tests.conftest import start_relay, start_sim
from tests.loadtest.test_sim_endpoints import MULTIPART
from tests.support.recorder import serve_recorder

UPSTREAM_KEY = "sk-upstream-secret-0123"
CLIENT_KEY = "mr-client-key-abcdef"
EMBED = {"model": "moonshot-embed", "input": ["the moon", "the sun"]}
SIM_HEADERS = "x-sim-chunks,x-sim-interval,x-sim-ttft,x-sim-fault"  # the sim's controls, beyond the allow-list


async def pass_relay(nursery, sim, **overrides) -> str:
    return await start_relay(nursery, sim.url, passthrough="on", passthrough_headers=SIM_HEADERS, **overrides)


def slow_parts(chunks: int, interval: float) -> dict[str, str]:
    """Headers that make the sim send a file's content in ``chunks`` parts, ``interval`` s apart."""
    return {"x-sim-chunks": str(chunks), "x-sim-interval": str(interval), "x-sim-ttft": "0"}


async def upload(client: httpx.AsyncClient, root: str) -> str:
    """A small file uploaded through the relay; its id."""
    resp = await client.post(root + "/v1/files", content=MULTIPART + b"hi")
    assert resp.status_code == 200
    return resp.json()["id"]


async def get_and_leave(root: str, path: str, headers: dict[str, str], marker: bytes) -> bytes:
    """Raw socket client (httpx leaves generators to the GC when left mid-body): GET, read until
    ``marker`` arrives, close."""
    host, port = root.removeprefix("http://").split(":")
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nhost: {host}\r\n{lines}\r\n".encode())
        seen = b""
        with trio.fail_after(5):
            while marker not in seen:
                seen += await stream.receive_some(65536)
    return seen


# -- pure ---------------------------------------------------------------------------------------------


def test_path_filter():
    assert path_filter("off") is None and path_filter("") is None
    assert path_filter("on")("/v1/anything")
    only = path_filter("/v1/embeddings, /v1/files*")
    assert only("/v1/embeddings") and only("/v1/files") and only("/v1/files/file-1/content")
    assert not only("/v1/users/me/balance") and not only("/v1/embeddings/x")


def test_only_allow_listed_headers_go_upstream():
    raw = [
        (b"connection", b"keep-alive, x-hop"), (b"x-hop", b"1"), (b"keep-alive", b"5"), (b"host", b"relay"),
        (b"authorization", b"Bearer client"), (b"cookie", b"s=1"), (b"content-length", b"3"),
        (b"transfer-encoding", b"chunked"), (b"x-moonrelay-upstream", b"a"), (b"accept-encoding", b"gzip"),
        (b"openai-organization", b"org-other"), (b"openai-project", b"proj-other"), (b"x-custom", b"x"),
        (b"content-type", b"application/json"), (b"openai-beta", b"assistants=v2"), (b"user-agent", b"sdk/1"),
        (b"idempotency-key", b"k-1"), (b"accept", b"application/json"), (b"origin", b"https://page.example"),
    ]  # fmt: skip
    assert forwarded_headers(raw) == [
        (b"content-type", b"application/json"), (b"openai-beta", b"assistants=v2"), (b"user-agent", b"sdk/1"),
        (b"idempotency-key", b"k-1"), (b"accept", b"application/json"),
    ]  # fmt: skip
    extended = forwarded_headers(raw, header_names(" X-Custom, openai-project"))
    assert (b"x-custom", b"x") in extended and (b"openai-project", b"proj-other") in extended
    assert (b"openai-organization", b"org-other") not in extended
    assert forwarded_headers([(b"connection", b"user-agent"), (b"user-agent", b"sdk/1")]) == []  # named hop-by-hop
    for name in ("Authorization", "host", "accept-encoding", "content-length", "x-moonrelay-upstream", "te"):
        with pytest.raises(ValueError, match=name.lower()):
            header_names(f"x-ok,{name}")


# -- the relay ----------------------------------------------------------------------------------------


async def test_off_by_default(nursery):
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url)
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.post(root + "/v1/embeddings", json=EMBED)
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
    assert not sim.recent


async def test_embeddings_and_moonshot_endpoints_pass_with_the_relays_key(nursery, monkeypatch):
    monkeypatch.setenv("MOONSHOT_API_KEY", UPSTREAM_KEY)
    sim = await start_sim(nursery, require_key=UPSTREAM_KEY)
    root = await pass_relay(nursery, sim, api_keys=CLIENT_KEY)
    headers = {"authorization": f"Bearer {CLIENT_KEY}", "x-custom": "kept", "cookie": "session=1"}
    async with httpx.AsyncClient(timeout=10) as client:
        own = {"authorization": f"Bearer {UPSTREAM_KEY}"}
        direct = await client.post(sim.url + "/embeddings", json=EMBED, headers=own)
        relayed = await client.post(root + "/v1/embeddings", json=EMBED, headers=headers)
        seen = sim.recent[-1]["headers"]
        count = await client.post(
            root + "/v1/tokenizers/estimate-token-count", json={"model": "moonshot-v1-8k", "messages": []},
            headers=headers,
        )  # fmt: skip
        balance = await client.get(root + "/v1/users/me/balance?verbose=1", headers=headers)
        anonymous = await client.get(root + "/v1/users/me/balance")
    assert relayed.status_code == 200 and relayed.content == direct.content
    assert relayed.headers["content-type"] == "application/json" and "x-request-id" in relayed.headers
    assert seen["authorization"] == f"Bearer {UPSTREAM_KEY}" and "x-custom" not in seen
    assert "cookie" not in seen and seen["accept-encoding"] == "identity"
    assert CLIENT_KEY not in json.dumps(list(sim.recent)) and UPSTREAM_KEY not in relayed.text
    assert count.json()["data"] == {"total_tokens": 1} and balance.json()["status"] is True
    assert anonymous.status_code == 401  # the relay's client keys hold here too


async def test_an_upload_streams_upstream_before_the_client_has_sent_it_all(nursery):
    sim = await start_sim(nursery)
    root = await pass_relay(nursery, sim)
    first, rest = MULTIPART + b"x" * 70_000, b"y" * 70_000 + b"\r\n--b--\r\n"

    async def body():
        yield first
        # A relay that buffered the upload would never let the sim see these bytes: the test would time out.
        with trio.fail_after(5):
            while sim.upload_bytes < len(first):  # noqa: ASYNC110 - watching the sim read it
                await trio.sleep(0.005)
        yield rest

    async with httpx.AsyncClient(timeout=10) as client:
        for headers in ({}, {"content-length": str(len(first + rest))}):  # chunked, then with a declared length
            headers["content-type"] = "multipart/form-data; boundary=b"
            resp = await client.post(root + "/v1/files", content=body(), headers=headers)
            assert resp.status_code == 200, resp.text
            got = resp.json()
            assert (got["bytes"], got["filename"], got["purpose"]) == (len(first + rest), "moon.txt", "file-extract")
            assert got["sim"]["sha256"] == hashlib.sha256(first + rest).hexdigest()
            framing = sim.recent[-1]["headers"]
            assert ("content-length" in framing) == ("content-length" in headers)
            assert framing.get("transfer-encoding") == (None if "content-length" in headers else "chunked")


async def test_a_download_streams_back_part_by_part(nursery):
    sim = await start_sim(nursery)
    root = await pass_relay(nursery, sim)
    async with httpx.AsyncClient(timeout=10) as client:
        file_id = await upload(client, root)
        async with client.stream("GET", f"{root}/v1/files/{file_id}/content", headers=slow_parts(4, 0.2)) as resp:
            parts = resp.aiter_raw()
            got = await parts.__anext__()
            sent_when_first_arrived = sim.parts_sent
            got += b"".join([p async for p in parts])
    assert sent_when_first_arrived < 4  # the first part came while the sim still had parts to send
    assert resp.status_code == 200 and got.count(b" part ") == 4 and got.startswith(f"{file_id} part 0".encode())
    assert resp.headers["content-type"] == "application/octet-stream"
    assert resp.headers["content-disposition"] == f'attachment; filename="{file_id}.txt"'


async def test_a_client_that_leaves_a_download_cancels_it_upstream(nursery):
    sim = await start_sim(nursery)
    root = await pass_relay(nursery, sim)
    async with httpx.AsyncClient(timeout=10) as client:
        file_id = await upload(client, root)
    seen = await get_and_leave(root, f"/v1/files/{file_id}/content", slow_parts(50, 0.05), b" part 0")
    assert seen.startswith(b"HTTP/1.1 200")
    with trio.fail_after(5):
        while not sim.downloads_cut:  # noqa: ASYNC110 - the sim notices at its next part
            await trio.sleep(0.01)
    assert sim.parts_sent < 50


async def test_upstream_errors_keep_their_status_body_and_headers(nursery):
    sim = await start_sim(nursery)
    root = await pass_relay(nursery, sim, retries=0)
    async with httpx.AsyncClient(timeout=10) as client:
        missing = await client.get(root + "/v1/files/file-nope/content")
        limited = await client.get(root + "/v1/files/file-nope/content", headers={"x-sim-fault": "status:429"})
        bad = await client.post(root + "/v1/embeddings", json={"model": "e", "input": 3})
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "resource_not_found_error"
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert limited.json()["error"]["type"] == "rate_limit_reached_error"
    assert bad.status_code == 400 and "input" in bad.json()["error"]["message"]


async def test_an_unreachable_upstream_is_a_502_in_the_openai_shape(nursery):
    root = await start_relay(nursery, "http://127.0.0.1:9/v1", passthrough="on", retries=0)
    async with httpx.AsyncClient(timeout=10) as client:
        joined = await client.post(root + "/v1/embeddings", json=EMBED)

        async def body():
            yield b"part"

        streamed = await client.post(root + "/v1/files", content=body())
    for resp in (joined, streamed):
        assert resp.status_code == 502
        err = resp.json()["error"]
        assert (err["type"], err["code"]) == ("upstream_error", "upstream_unavailable")
        assert err["message"] == "Could not connect to the upstream API."


async def test_an_upload_over_the_limit_is_413(nursery):
    sim = await start_sim(nursery)
    root = await pass_relay(nursery, sim, max_upload_bytes=10_000)

    async def body():
        for _ in range(5):
            yield b"z" * 4000

    async with httpx.AsyncClient(timeout=10) as client:
        streamed = await client.post(root + "/v1/files", content=body())
        declared = await client.post(root + "/v1/files", content=b"z" * 20_000)
        fits = await client.post(root + "/v1/files", content=b"z" * 9_000)
    for resp in (streamed, declared):
        assert resp.status_code == 413 and resp.json()["error"]["code"] == "request_too_large"
    assert fits.status_code == 200 and fits.json()["bytes"] == 9_000


async def test_uploads_larger_than_a_chat_body_are_allowed(nursery):
    sim = await start_sim(nursery)
    root = await pass_relay(nursery, sim, max_body_bytes=1000)
    async with httpx.AsyncClient(timeout=10) as client:
        upload = await client.post(root + "/v1/files", content=b"z" * 50_000)
        big = {"messages": [{"role": "user", "content": "x" * 2000}]}
        chat = await client.post(root + "/v1/chat/completions", json=big)
    assert upload.status_code == 200 and upload.json()["bytes"] == 50_000
    assert chat.status_code == 413


async def test_the_upstream_is_the_header_then_the_model_then_the_default(nursery, caplog):
    caplog.set_level(logging.INFO, logger="moonrelay")
    moon, openai = await start_sim(nursery), await start_sim(nursery)
    tables = (
        {"name": "moon", "base_url": moon.url, "models": ["moonshot-*"], "default": True},
        {"name": "openai", "base_url": openai.url, "models": ["text-embedding-*"]},
    )
    root = await start_relay(nursery, moon.url, passthrough="on", upstreams=tables)
    async with httpx.AsyncClient(timeout=10) as client:
        by_model = await client.post(root + "/v1/embeddings", json={**EMBED, "model": "text-embedding-3-small"})
        assert (len(moon.recent), len(openai.recent)) == (0, 1)
        named = {"x-moonrelay-upstream": "moon"}
        by_header = await client.post(root + "/v1/embeddings", json={**EMBED, "model": "text-embedding-3-small"},
                                      headers=named)  # fmt: skip
        assert (len(moon.recent), len(openai.recent)) == (1, 1)
        assert "x-moonrelay-upstream" not in moon.recent[-1]["headers"]
        default = await client.get(root + "/v1/users/me/balance")
        assert (len(moon.recent), len(openai.recent)) == (2, 1)
        unknown = await client.get(root + "/v1/users/me/balance", headers={"x-moonrelay-upstream": "nope"})
    assert by_model.status_code == by_header.status_code == default.status_code == 200
    assert by_model.json()["model"] == "text-embedding-3-small"
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "unknown_upstream"
    # The client learns nothing of the configured upstreams (the operator's log names them).
    assert unknown.json()["error"]["message"] == "No upstream is named 'nope'."
    assert "known: moon, openai" in caplog.text


async def test_no_default_upstream_needs_a_header_or_a_model(nursery):
    moon = await start_sim(nursery)
    tables = ({"name": "moon", "base_url": moon.url, "models": ["moonshot-*"]},)
    root = await start_relay(nursery, moon.url, passthrough="on", upstreams=tables)
    async with httpx.AsyncClient(timeout=10) as client:
        none = await client.get(root + "/v1/users/me/balance")
        unrouted = await client.post(root + "/v1/embeddings", json={**EMBED, "model": "text-embedding-3-small"})
        named = await client.get(root + "/v1/users/me/balance", headers={"x-moonrelay-upstream": "moon"})
    assert none.status_code == 400 and none.json()["error"]["code"] == "no_default_upstream"
    assert unrouted.status_code == 404 and unrouted.json()["error"]["code"] == "model_not_found"
    assert named.status_code == 200 and len(moon.recent) == 1


@pytest.mark.parametrize("spec", ["/v1/embeddings"])
async def test_only_the_listed_paths_pass(nursery, spec):
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url, passthrough=spec)
    async with httpx.AsyncClient(timeout=10) as client:
        ok = await client.post(root + "/v1/embeddings", json=EMBED)
        refused = await client.get(root + "/v1/users/me/balance")
    assert ok.status_code == 200
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found" and len(sim.recent) == 1


async def test_the_upstream_cap_counts_pass_through_requests(nursery):
    sim = await start_sim(nursery)
    tables = ({"name": "moon", "base_url": sim.url, "default": True, "max_concurrent": 1},)
    root = await start_relay(nursery, sim.url, passthrough="on", passthrough_headers=SIM_HEADERS, upstreams=tables)
    async with httpx.AsyncClient(timeout=10) as client:
        file_id = await upload(client, root)
        async with client.stream("GET", f"{root}/v1/files/{file_id}/content", headers=slow_parts(3, 0.2)) as resp:
            parts = resp.aiter_raw()
            assert b" part 0" in await parts.__anext__()
            refused = await client.get(root + "/v1/users/me/balance")
            assert b"".join([p async for p in parts]).count(b" part ") == 2
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "upstream_concurrency_limit"


async def test_an_upstream_failing_mid_body_cuts_the_response_off(nursery, caplog):
    sim = await start_sim(nursery)
    root = await pass_relay(nursery, sim, idle_timeout_s=0.3)
    async with httpx.AsyncClient(timeout=10) as client:
        file_id = await upload(client, root)
        with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
            await client.get(f"{root}/v1/files/{file_id}/content", headers=slow_parts(3, 1))  # not a whole body
        assert (await client.get(root + "/healthz")).status_code == 200
    assert "pass-through response from upstream 127.0.0.1" in caplog.text and "broke off" in caplog.text
    assert "Traceback" not in caplog.text and "Error in ASGI" not in caplog.text


async def test_headers_that_pick_who_pays_never_reach_the_upstream(nursery, monkeypatch):
    monkeypatch.setenv("MOONSHOT_API_KEY", UPSTREAM_KEY)
    recorder = await nursery.start(serve_recorder)
    root = await start_relay(nursery, recorder.url + "/v1", passthrough="on")
    headers = {
        "OpenAI-Organization": "org-other", "OpenAI-Project": "proj-other", "X-Custom": "x", "Cookie": "s=1",
        "Origin": "https://page.example", "Authorization": "Bearer mr-client", "X-Forwarded-For": "10.0.0.1",
        "OpenAI-Beta": "assistants=v2", "Idempotency-Key": "k-1", "User-Agent": "sdk/1", "Accept": "application/json",
    }  # fmt: skip
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.post(root + "/v1/embeddings", json=EMBED, headers=headers)
    assert resp.status_code == 200 and len(recorder.requests) == 1
    seen = {name.decode().lower(): value.decode() for name, value in recorder.requests[0].headers}
    assert set(seen) == {"host", "content-type", "content-length", "accept", "user-agent", "openai-beta",
                         "idempotency-key", "authorization", "accept-encoding"}, seen  # fmt: skip
    assert seen["authorization"] == f"Bearer {UPSTREAM_KEY}" and seen["accept-encoding"] == "identity"
    assert (seen["openai-beta"], seen["idempotency-key"], seen["user-agent"]) == ("assistants=v2", "k-1", "sdk/1")


async def test_a_gzip_encoded_response_stays_readable(nursery):
    """Raw bytes keep their Content-Encoding; a body the relay read (and httpx decoded) to decide on a retry
    goes back without it."""
    recorder = await nursery.start(serve_recorder)
    data = {"object": "list", "data": [{"id": "file-1"}] * 50}
    packed = gzip.compress(json.dumps(data).encode())

    def gzipped(status: bytes, extra: bytes = b"") -> bytes:
        head = b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n" % status
        return head + extra + b"content-length: %d\r\n\r\n" % len(packed) + packed

    root = await start_relay(nursery, recorder.url + "/v1", passthrough="on", retries=1, retry_max_wait_s=0.1)
    async with httpx.AsyncClient(timeout=10) as client:
        recorder.reply = lambda _: gzipped(b"200 OK")
        relayed = await client.get(root + "/v1/files")
        recorder.reply = lambda _: gzipped(b"503 Service Unavailable", b"retry-after: 100\r\n")  # not waited out
        read = await client.get(root + "/v1/files")
    assert relayed.status_code == 200 and relayed.headers["content-encoding"] == "gzip"
    assert relayed.json() == data  # httpx decoded it: the header came with the gzip bytes
    assert read.status_code == 503 and "content-encoding" not in read.headers and read.json() == data
