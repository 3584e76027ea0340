"""``POST /v1/responses`` over real sockets: the simulated upstream as a Responses upstream (``api = "responses"``,
relayed natively) and as a chat-completions upstream (translated), streaming and not, tools, refusals, failures
after the first byte, fallback across protocols, usage in the access log and the metrics."""

import json

import httpx
import pytest
import trio

from tests.conftest import start_relay, start_sim, wait_lines
from tests.relay.functional.test_charging import (
    AUTH,
    KEY,
    keys_file,
    settled,
    still_clock,  # noqa: F401 - a fixture the tests below use
    used_tokens,
)
from tests.relay.functional.test_fallbacks import table
from tests.relay.functional.test_metrics import scrape_after, total

ASK = {"model": "moonshot-v1-8k", "input": "Tell me about the moon"}
TOOL = {"type": "function", "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}  # fmt: skip
TEXT_EVENTS = ["response.output_item.added", "response.content_part.added", "response.output_text.delta",
               "response.output_text.done", "response.content_part.done", "response.output_item.done"]  # fmt: skip


def events_of(body: bytes) -> list[tuple[str, dict]]:
    """(event name, data) of every event of an SSE body; comments and ``[DONE]`` are not events here."""
    out = []
    for block in body.decode().split("\n\n"):
        name, data = None, None
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        if data is not None and data != "[DONE]":
            out.append((name, json.loads(data)))
    return out


def collapsed(events: list[tuple[str, dict]]) -> list[str]:
    """The event types in order, runs of one delta type counted once."""
    out: list[str] = []
    for name, _ in events:
        if not (out and out[-1] == name and name.endswith(".delta")):
            out.append(name)
    return out


async def relay_on(nursery, api: str, **sim_config) -> str:
    sim = await start_sim(nursery, **sim_config)
    return await start_relay(nursery, sim.url, upstream_api=api, retries=0)


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_a_stream_is_the_published_event_sequence(nursery, api, access_lines):
    root = await relay_on(nursery, api)
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.post(root + "/v1/responses", json={**ASK, "stream": True})
        whole = await client.post(root + "/v1/responses", json=ASK)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = events_of(resp.content)
    assert all(name == data["type"] for name, data in events)  # every event named as its data says
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert collapsed(events) == ["response.created", "response.in_progress", *TEXT_EVENTS, "response.completed"]
    assert ("sim" in events[0][1]) is (api == "responses")  # native: the upstream's own events, stamp and all
    text = "".join(data["delta"] for name, data in events if name == "response.output_text.delta")
    completed = events[-1][1]["response"]
    assert completed["status"] == "completed"
    assert completed["output"][0]["content"][0]["text"] == text
    usage = completed["usage"]
    assert usage["output_tokens"] > 0 and usage["input_tokens"] > 0
    # not streamed: the same answer as one Response object
    assert whole.status_code == 200, whole.text
    answer = whole.json()
    assert answer["object"] == "response" and answer["status"] == "completed"
    assert answer["output"][0]["content"][0]["text"] == text
    # the access log counts the usage of both, whatever the upstream's protocol
    lines = await wait_lines(access_lines, 2)
    for line in lines:
        assert line["route"] == "/v1/responses" and line["model"] == "moonshot-v1-8k"
        assert (line["prompt_tokens"], line["completion_tokens"]) == (usage["input_tokens"], usage["output_tokens"])


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_a_function_call_streams_as_its_item(nursery, api):
    root = await relay_on(nursery, api)
    ask = {**ASK, "stream": True, "tools": [TOOL], "tool_choice": {"type": "function", "name": "get_weather"}}
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.post(root + "/v1/responses", json=ask)
    assert resp.status_code == 200, resp.text
    events = events_of(resp.content)
    assert collapsed(events) == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed",
    ]  # fmt: skip
    item = events[-1][1]["response"]["output"][0]
    assert item["type"] == "function_call" and item["name"] == "get_weather" and item["call_id"]
    assert "city" in json.loads(item["arguments"])


async def test_a_request_that_needs_a_store_is_refused_by_a_translating_relay(nursery):
    root = await relay_on(nursery, "chat")
    async with httpx.AsyncClient(timeout=10) as client:
        previous = await client.post(root + "/v1/responses", json={**ASK, "previous_response_id": "resp_1"})
        stored = await client.post(root + "/v1/responses", json={**ASK, "store": True})
        hosted = await client.post(root + "/v1/responses", json={**ASK, "tools": [{"type": "web_search"}]})
        unknown = await client.post(root + "/v1/responses", json={**ASK, "prompt": {"id": "pmpt_1"}})
    for resp, code, names in [
        (previous, "store_required", "previous_response_id"), (stored, "store_required", "store"),
        (hosted, "untranslatable", "tools.0"), (unknown, "untranslatable", "prompt"),
    ]:  # fmt: skip
        assert resp.status_code == 400, resp.text
        error = resp.json()["error"]
        assert error["type"] == "invalid_request_error" and error["code"] == code, error
        assert names in error["message"]


async def test_a_native_upstream_keeps_its_own_store(nursery):
    """``previous_response_id`` goes to a Responses upstream as sent: its answer (the sim keeps nothing: 400)."""
    root = await relay_on(nursery, "responses")
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.post(root + "/v1/responses", json={**ASK, "previous_response_id": "resp_1"})
    assert resp.status_code == 400
    assert "resp_1" in resp.json()["error"]["message"]  # the upstream's own words, not the relay's refusal


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_a_stream_that_breaks_ends_with_the_protocols_error(nursery, api, monkeypatch, access_lines):
    monkeypatch.setenv("SIM_KEY", "sk-drop")
    sim = await start_sim(nursery, key_faults={"sk-drop": "drop:3"})
    root = await start_relay(nursery, sim.url, upstream_api=api, upstream_key_env="SIM_KEY", retries=0)
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.post(root + "/v1/responses", json={**ASK, "stream": True})
    assert resp.status_code == 200
    events = events_of(resp.content)
    name, data = events[-1]
    if api == "chat":  # translated: the Response, failed, with what came before
        assert name == "response.failed" and data["response"]["status"] == "failed"
        assert data["response"]["error"]["code"] == "server_error"
        assert data["response"]["output"][0]["status"] == "incomplete"
    else:  # native: the protocol's error event, numbered after what was relayed
        assert name == "error" and data["type"] == "error" and data["code"] == "upstream_error"
        assert data["sequence_number"] > events[-2][1]["sequence_number"]
    assert "output_text.delta" in collapsed(events)[-2]
    line = (await wait_lines(access_lines, 1))[0]
    assert line["error"] == "upstream_error"  # the log and moonrelay_upstream_errors_total know it failed


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_errors_before_the_answer_are_in_the_responses_shape(nursery, api, monkeypatch):
    monkeypatch.setenv("SIM_KEY", "sk-429")
    sim = await start_sim(nursery, key_faults={"sk-429": "status:429"})
    root = await start_relay(nursery, sim.url, upstream_api=api, upstream_key_env="SIM_KEY", retries=0,
                             max_body_bytes=400)  # fmt: skip
    async with httpx.AsyncClient(timeout=10) as client:
        limited = await client.post(root + "/v1/responses", json={**ASK, "stream": True})
        bad = await client.post(root + "/v1/responses", json={"model": "m", "input": 3})
        large = await client.post(root + "/v1/responses", json={**ASK, "input": "moon " * 100})
        plain = await client.post(root + "/v1/responses", content=b"{}", headers={"content-type": "text/plain"})
    assert limited.status_code == 429 and limited.json()["error"]["message"]  # the upstream's own answer
    for resp, status, code in [(bad, 400, "invalid_request_error"), (large, 413, "request_too_large"),
                               (plain, 415, None)]:  # fmt: skip
        assert resp.status_code == status, resp.text
        error = resp.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}  # the Responses API's error object
        assert error["type"] == "invalid_request_error"
        assert code is None or error["code"] == code


async def test_a_native_upstream_that_fails_first_falls_back_to_a_chat_one_translated(nursery, monkeypatch):
    monkeypatch.setenv("PRIMARY_KEY", "sk-503")
    native = await start_sim(nursery, key_faults={"sk-503": "status:503"})
    chat = await start_sim(nursery)
    tables = [table("native", native.url, api="responses", key_env="PRIMARY_KEY", default=True,
                    fallbacks=["chat"]), table("chat", chat.url)]  # fmt: skip
    root = await start_relay(nursery, "http://flat-upstream.invalid/v1", upstreams=tables, retries=0)
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.post(root + "/v1/responses", json={**ASK, "stream": True})
        found = await scrape_after(client, root, 1)
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-moonrelay-upstream"] == "chat"
    events = events_of(resp.content)
    assert events[-1][0] == "response.completed" and "sim" not in events[0][1]  # translated
    assert total(found, "moonrelay_fallbacks_total", **{"from": "native", "to": "chat"}) == 1
    assert total(found, "moonrelay_requests_total", route="/v1/responses", upstream="chat", status="200") == 1


async def test_a_request_only_a_native_upstream_can_take_skips_the_chat_ones(nursery):
    """``previous_response_id`` cannot be translated: the chat deployment is left out, the native fallback serves
    it (the sim refuses the id it does not know: its 400, not the relay's)."""
    native = await start_sim(nursery)
    chat = await start_sim(nursery)
    tables = [table("chat", chat.url, default=True, fallbacks=["native"]),
              table("native", native.url, api="responses")]  # fmt: skip
    root = await start_relay(nursery, "http://flat-upstream.invalid/v1", upstreams=tables, retries=0)
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.post(root + "/v1/responses", json={**ASK, "previous_response_id": "resp_1"})
    assert resp.headers["x-moonrelay-upstream"] == "native"
    assert resp.status_code == 400 and "resp_1" in resp.json()["error"]["message"]


async def test_a_client_that_leaves_cancels_the_upstream_request(nursery):
    sim = await start_sim(nursery, chunks=2000, interval=0.01)
    root = await start_relay(nursery, sim.url, retries=0)
    host, port = root.removeprefix("http://").split(":")
    payload = json.dumps({**ASK, "stream": True}).encode()
    head = (f"POST /v1/responses HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\n\r\n").encode()  # fmt: skip
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(head + payload)
        seen = b""
        while b"response.output_text.delta" not in seen:
            seen += await stream.receive_some(65536)
    with trio.fail_after(5):
        while sim.stats.snapshot()["cancelled"] != 1:  # noqa: ASYNC110 - the sim's own count, of another task
            await trio.sleep(0.01)


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_a_silent_upstream_gets_heartbeats_as_comments_between_events(nursery, api):
    sim = await start_sim(nursery, chunks=3, interval=0.4)
    root = await start_relay(nursery, sim.url, upstream_api=api, heartbeat_s=0.1, retries=0)
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.post(root + "/v1/responses", json={**ASK, "stream": True})
        found = await scrape_after(client, root, 1)
    assert resp.status_code == 200
    blocks = resp.content.split(b"\n\n")
    assert b": ping" in blocks  # a comment of its own, between whole events
    assert collapsed(events_of(resp.content))[-1] == "response.completed"
    usage = events_of(resp.content)[-1][1]["response"]["usage"]
    assert total(found, "moonrelay_completion_tokens_total", upstream=sim.url.split("//")[1].removesuffix("/v1"),
                 model="moonshot-v1-8k") == usage["output_tokens"]  # fmt: skip


async def test_a_translation_that_fails_ends_the_clients_stream_at_once(nursery, monkeypatch):
    """An upstream event that is not JSON fails the translated stream: ``response.failed`` and the body's end then,
    not when the upstream's long stream would have ended."""
    monkeypatch.setenv("SIM_KEY", "sk-bad")
    sim = await start_sim(nursery, chunks=200, interval=0.05, key_faults={"sk-bad": "malformed:2"})
    root = await start_relay(nursery, sim.url, upstream_key_env="SIM_KEY", retries=0)
    async with httpx.AsyncClient(timeout=10) as client:
        with trio.fail_after(3):  # the upstream's stream lasts 10 s
            resp = await client.post(root + "/v1/responses", json={**ASK, "stream": True})
    name, data = events_of(resp.content)[-1]
    assert name == "response.failed" and data["response"]["error"]["code"] == "server_error"


async def test_client_keys_guard_the_route(nursery, tmp_path):
    sim = await start_sim(nursery)
    keys = tmp_path / "keys"
    keys.write_text("sk-client\n")
    root = await start_relay(nursery, sim.url, api_keys_file=str(keys))
    async with httpx.AsyncClient(timeout=10) as client:
        anonymous = await client.post(root + "/v1/responses", json=ASK)
        known = await client.post(root + "/v1/responses", json=ASK, headers={"authorization": "Bearer sk-client"})
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == {"message": anonymous.json()["error"]["message"], "type":
                                         "invalid_request_error", "param": None, "code": "invalid_api_key"}  # fmt: skip
    assert known.status_code == 200 and known.json()["object"] == "response"


async def test_the_route_is_served_whatever_pass_through_allows(nursery):
    """With pass-through on, ``POST /v1/responses`` is still this route (checked and translated: the relay's own
    refusal), while the other ``/v1/responses/…`` paths go through to the upstream."""
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url, passthrough="on", retries=0)
    async with httpx.AsyncClient(timeout=10) as client:
        chained = await client.post(root + "/v1/responses", json={**ASK, "previous_response_id": "resp_1"})
        fetched = await client.get(root + "/v1/responses/resp_1")
    assert chained.status_code == 400 and chained.json()["error"]["code"] == "store_required"
    assert fetched.status_code == 404
    assert fetched.json()["error"]["type"] == "resource_not_found_error"  # the upstream's answer, not the relay's


@pytest.mark.usefixtures("still_clock")  # no tpm window ends during the test
@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_a_keys_tokens_are_charged_the_usage_of_the_stream(nursery, tmp_path, api):
    sim = await start_sim(nursery)
    keys = keys_file(tmp_path, f"{KEY} tpm=100000")
    root = await start_relay(nursery, sim.url, upstream_api=api, api_keys_file=keys)
    async with httpx.AsyncClient(timeout=10) as client:
        first = await client.post(root + "/v1/responses", json={**ASK, "stream": True}, headers=AUTH)
        await settled(client, root)
        second = await client.post(root + "/v1/responses", json=ASK, headers=AUTH)
    usage = events_of(first.content)[-1][1]["response"]["usage"]
    assert used_tokens(second, 100000) == usage["input_tokens"] + usage["output_tokens"]


async def test_a_messages_upstream_is_not_a_responses_one(nursery):
    root = await relay_on(nursery, "anthropic")
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.post(root + "/v1/responses", json=ASK)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "unsupported_protocol"
