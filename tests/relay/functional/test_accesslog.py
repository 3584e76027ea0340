"""Request ids and the JSON access-log line: pure parts first, then the relay against the simulator."""

import json
import logging

import httpx
import trio

from proxy.observability import AccessRecord, key_prefix, model_from_body, request_id, scan_tail
from proxy.observability import upstream_error_kind as error_kind
from tests.conftest import open_stream_and_leave, start_relay, start_sim, wait_lines

CHAT = {"model": "moonshot-v1-32k", "messages": [{"role": "user", "content": "Tell me about the moon"}]}


# -- pure ---------------------------------------------------------------------------------------


def test_request_id_accepts_sane_client_ids_only():
    assert request_id("abc-123_X.y") == "abc-123_X.y"
    generated = {request_id(None), request_id(""), request_id("has space"), request_id("x" * 200)}
    assert len(generated) == 4 and all(len(g) == 32 for g in generated)


def test_key_prefix_never_the_whole_key():
    assert key_prefix("Bearer sk-abcdefghijklmnop") == "sk-abcde"
    assert key_prefix("bearer short12") == "sho"  # at most half of a short key
    assert key_prefix("Bearer x") is None
    assert key_prefix("Basic dXNlcjpwYXNz") is None
    assert key_prefix(None) is None


def test_model_from_body():
    assert model_from_body(json.dumps(CHAT).encode()) == "moonshot-v1-32k"
    assert model_from_body(b"{not json") is None
    assert model_from_body(b'{"model": 3}') is None


def test_scan_tail_moonshot_openai_and_whole_body():
    moonshot = (
        b'ata: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'  # starts mid-line, like a real tail
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop",'
        b'"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}]}\n\ndata: [DONE]\n\n'
    )
    found = scan_tail(moonshot, whole_json=False)
    assert (found.prompt_tokens, found.completion_tokens) == (11, 7)
    openai = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5}}\n\ndata: [DONE]\n\n'
    assert scan_tail(openai, whole_json=False).completion_tokens == 5
    ndjson = b'{"choices":[{"delta":{},"usage":{"prompt_tokens":2,"completion_tokens":4}}]}\n'
    assert scan_tail(ndjson, whole_json=False).prompt_tokens == 2
    whole = json.dumps({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 1}}, indent=2).encode()
    assert scan_tail(whole, whole_json=True).prompt_tokens == 9


def test_scan_tail_errors_and_kinds():
    event = b'data: {"error":{"message":"m","type":"upstream_error","code":"upstream_timeout"}}\n\n'
    found = scan_tail(event, whole_json=False)
    assert found.error_code == "upstream_timeout"
    assert error_kind(200, found) == "upstream_timeout"
    overloaded = scan_tail(b'{"error":{"type":"rate_limit_error","code":"relay_overloaded"}}', whole_json=True)
    assert error_kind(429, overloaded) is None  # the relay's own refusal, not the upstream's
    assert error_kind(429, scan_tail(b'{"error":{"type":"rate_limit_reached_error"}}', whole_json=True)) == "http_429"
    assert error_kind(400, scan_tail(b'{"error":{"type":"invalid_request_error"}}', whole_json=True)) is None


def test_scan_tail_reads_how_a_responses_stream_failed():
    native = b'event: error\ndata: {"type":"error","code":"upstream_timeout","message":"m","param":null}\n\n'
    assert error_kind(200, scan_tail(native, whole_json=False)) == "upstream_timeout"
    shutdown = b'event: error\ndata: {"type":"error","code":"shutting_down","message":"m","param":null}\n\n'
    assert error_kind(200, scan_tail(shutdown, whole_json=False)) is None  # the relay's own end, not the upstream's
    failed = b'data: {"type":"response.failed","response":{"status":"failed","error":{"code":"server_error"}}}\n\n'
    assert error_kind(200, scan_tail(failed, whole_json=False)) == "upstream_error"
    whole = b'{"object":"response","status":"completed","error":null,"usage":{"input_tokens":3,"output_tokens":4}}'
    assert error_kind(200, scan_tail(whole, whole_json=True)) is None  # "error": null is no error


def test_record_line_is_one_json_object():
    rec = AccessRecord(request_id="r", method="POST", route="/v1/chat/completions", upstream="h", status=200)
    line = rec.line()
    assert "\n" not in line
    assert json.loads(line)["status"] == 200


# -- through the relay --------------------------------------------------------------------------


async def test_stream_line_fields_and_request_id_echo(nursery, access_lines):
    sim = await start_sim(nursery, chunks=6)
    root = await start_relay(nursery, sim.url)
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.post(
            root + "/v1/chat/completions",
            json={**CHAT, "stream": True},
            headers={"x-request-id": "req-42", "authorization": "Bearer sk-client-0123456789"},
        )
        assert resp.status_code == 200
        assert resp.headers["x-request-id"] == "req-42"
        plain = await client.post(root + "/v1/chat/completions", json=CHAT)
        generated = plain.headers["x-request-id"]
    assert len(generated) == 32
    first, second = await wait_lines(access_lines, 2)
    assert first["request_id"] == "req-42"
    assert first["method"] == "POST"
    assert first["route"] == "/v1/chat/completions"
    assert first["model"] == "moonshot-v1-32k"
    assert first["upstream"] == sim.url.split("//")[1].split("/")[0]
    assert first["status"] == 200
    assert first["completed"] is True
    assert first["chunks"] >= 2
    assert 0 < first["ttfc_ms"] <= first["duration_ms"]
    assert first["completion_tokens"] == 6
    assert first["prompt_tokens"] > 0
    assert first["client_key"] == "sk-clien"
    # Not streamed: usage from the whole body; a generated id echoed and logged.
    assert second["request_id"] == generated
    assert second["completion_tokens"] == 6
    assert second["client_key"] is None


async def test_openai_usage_chunk_and_ndjson_route(nursery, access_lines):
    sim = await start_sim(nursery, chunks=4)
    root = await start_relay(nursery, sim.url)
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.post(root + "/v1/chat/completions", json=body)).status_code == 200
        assert (await client.post(root + "/chat/completions", json={**CHAT, "stream": True})).status_code == 200
        assert (await client.get(root + "/chat/completions", params={"content": "hi", "model": "m-x"})).is_success
    openai, ndjson, get = await wait_lines(access_lines, 3)
    assert openai["completion_tokens"] == 4
    assert ndjson["route"] == "/chat/completions" and ndjson["completion_tokens"] == 4
    assert get["method"] == "GET" and get["model"] == "m-x"


async def test_line_when_client_leaves_mid_stream(nursery, access_lines):
    sim = await start_sim(nursery, chunks=50, interval=0.05)
    root = await start_relay(nursery, sim.url)
    await open_stream_and_leave(root, {**CHAT, "stream": True})
    (line,) = await wait_lines(access_lines, 1)
    assert line["completed"] is False
    assert line["status"] == 200
    assert line["chunks"] < 50


async def test_no_secret_in_any_log(nursery, access_lines, monkeypatch, capfd, caplog):
    upstream_secret = "sk-upstream-secret-77b1f0c9d2"
    client_key = "sk-client-secret-3f9e8d7c6b5a"
    monkeypatch.setenv("MOONSHOT_API_KEY", upstream_secret)
    caplog.set_level(logging.DEBUG)
    sim = await start_sim(nursery, chunks=3)
    root = await start_relay(nursery, sim.url, api_keys=client_key)
    async with httpx.AsyncClient(timeout=10) as client:
        auth = {"authorization": f"Bearer {client_key}"}
        streamed = await client.post(root + "/v1/chat/completions", json={**CHAT, "stream": True}, headers=auth)
        assert streamed.is_success
        refused = await client.post(root + "/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer wrong"})
        assert refused.status_code == 401
    await wait_lines(access_lines, 2)
    out, err = capfd.readouterr()
    captured = out + err + caplog.text + json.dumps(access_lines)
    assert '"route":"/v1/chat/completions"' in err  # the lines did go to stderr
    assert upstream_secret not in captured
    assert client_key not in captured
    assert access_lines[-2]["client_key"] == client_key[:8]
    assert access_lines[-1]["status"] == 401 and access_lines[-1]["route"] == "/v1/chat/completions"


async def test_access_log_off(nursery, access_lines):
    sim = await start_sim(nursery, chunks=2)
    root = await start_relay(nursery, sim.url, access_log="off")
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.post(root + "/v1/chat/completions", json=CHAT)
        assert resp.status_code == 200 and resp.headers["x-request-id"]
        # The line would be written just before the call is counted (Observer._finish): once /metrics
        # counts the call, any line it was going to get is there.
        with trio.fail_after(5):
            while "moonrelay_requests_total{" not in (await client.get(root + "/metrics")).text:  # noqa: ASYNC110
                await trio.sleep(0.01)
    assert access_lines == []


async def test_ttfc_is_not_a_heartbeat(nursery, access_lines):
    sim = await start_sim(nursery, ttft=0.4, chunks=2)
    root = await start_relay(nursery, sim.url, heartbeat_s=0.1)
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.post(root + "/v1/chat/completions", json={**CHAT, "stream": True})
    assert resp.text.startswith(": ping")  # the relay did ping while the upstream was silent
    (line,) = await wait_lines(access_lines, 1)
    assert line["ttfc_ms"] >= 350
