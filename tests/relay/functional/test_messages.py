"""``POST /v1/messages`` through the relay over real sockets: relayed natively to a Messages upstream (the simulator's
``/anthropic`` route, ``api = "anthropic"``) and translated onto a chat upstream (the simulator's chat route), with
chat's guarantees: whole events, the relay's own events in the Messages shape, deadlines, fallbacks across
protocols, client keys, usage for the access log and metrics, errors in the Messages shape."""

import json
from functools import partial

import httpx
import pytest
import trio

from proxy.config import Settings
from proxy.edge import serve
from tests.conftest import start_relay, start_sim, wait_lines
from tests.relay.functional.test_charging import settled, still_clock, used_tokens  # noqa: F401 - a fixture
from tests.relay.functional.test_metrics import scrape_after, total
from tests.support.recorder import raw_request
from tests.support.simevents import sse_events

HI = [{"role": "user", "content": "Tell me about the moon"}]
BODY = {"model": "moonshot-v1-8k", "max_tokens": 5, "messages": HI}
VERSION = {"anthropic-version": "2023-06-01"}
TEXT_SEQUENCE = ["message_start", "content_block_start"] + ["content_block_delta"] * 5 + [
    "content_block_stop", "message_delta", "message_stop"]  # fmt: skip
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


async def native_relay(nursery, monkeypatch, sim_key: str = "sk-up", **settings) -> tuple[object, str]:
    """The sim, and a relay whose one upstream is the sim's Messages route (its key: ``sim_key``)."""
    sim = await start_sim(nursery, **settings.pop("sim", {}))
    monkeypatch.setenv("UPSTREAM_KEY", sim_key)
    root = await start_relay(nursery, sim.anthropic_url, upstream_api="anthropic", upstream_key_env="UPSTREAM_KEY",
                             **settings)  # fmt: skip
    return sim, root


async def chat_relay(nursery, monkeypatch, sim_key: str = "sk-up", **settings) -> tuple[object, str]:
    """The sim, and a relay whose one upstream is the sim's chat route: Messages requests are translated."""
    sim = await start_sim(nursery, **settings.pop("sim", {}))
    monkeypatch.setenv("UPSTREAM_KEY", sim_key)
    root = await start_relay(nursery, sim.url, upstream_key_env="UPSTREAM_KEY", **settings)
    return sim, root


RELAYS = {"native": native_relay, "translated": chat_relay}


async def post(root: str, body: dict, headers: dict | None = None, path: str = "/v1/messages") -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        with trio.fail_after(10):
            return await client.post(root + path, json=body, headers=headers)


def names(events) -> list[str]:
    return [t for t, _ in events if t != "ping"]


def text_of(events) -> str:
    return "".join(d["delta"]["text"] for t, d in events if t == "content_block_delta"
                   and d["delta"]["type"] == "text_delta")  # fmt: skip


# -- native: to a Messages upstream ------------------------------------------------------------------------------


async def test_native_stream_is_relayed_event_by_event_with_the_upstreams_key_and_headers(nursery, monkeypatch):
    sim, root = await native_relay(nursery, monkeypatch)
    headers = {**VERSION, "anthropic-beta": "tools-2024-05-16", "authorization": "Bearer ignored-without-keys"}
    resp = await post(root, {**BODY, "stream": True, "top_k": 5}, headers)  # top_k: fine natively
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    events = sse_events(resp.content)
    assert names(events) == TEXT_SEQUENCE
    assert [d["sim"]["seq"] for _, d in events] == list(range(len(events)))  # every upstream event, in order
    got = sim.recent[-1]
    assert got["path"] == "/anthropic/v1/messages" and got["body"]["top_k"] == 5
    assert got["headers"]["x-api-key"] == "sk-up" and "authorization" not in got["headers"]
    assert got["headers"]["anthropic-version"] == "2023-06-01"
    assert got["headers"]["anthropic-beta"] == "tools-2024-05-16"


async def test_native_request_without_a_version_gets_one_and_a_whole_answer_passes_as_it_came(nursery, monkeypatch):
    sim, root = await native_relay(nursery, monkeypatch)
    resp = await post(root, BODY)
    assert resp.status_code == 200, resp.text
    message = resp.json()
    assert message["type"] == "message" and message["content"][0]["type"] == "text" and "sim" in message
    assert sim.recent[-1]["headers"]["anthropic-version"] == "2023-06-01"  # the API requires one


async def test_native_errors_pass_in_the_upstreams_own_shape(nursery, monkeypatch):
    _, root = await native_relay(nursery, monkeypatch, "sk-tired", sim={"key_faults": {"sk-tired": "status:529"}},
                                 retries=0)  # fmt: skip
    resp = await post(root, BODY)
    assert resp.status_code == 529 and resp.json()["error"]["type"] == "overloaded_error"


async def test_native_stream_that_breaks_ends_with_the_relays_error_event(nursery, monkeypatch):
    _, root = await native_relay(nursery, monkeypatch, "sk-bad", sim={"key_faults": {"sk-bad": "malformed:3"}})
    resp = await post(root, {**BODY, "stream": True})
    events = sse_events(resp.content)
    assert resp.status_code == 200 and events[-1][0] == "error"
    assert events[-1][1] == {"type": "error", "error": {"type": "api_error", "message": (
        "The upstream sent an event that is not valid JSON; the stream was stopped.")}}  # fmt: skip
    assert all(isinstance(d, dict) for _, d in events)  # the malformed event itself never went out


# -- both: native and translated ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", RELAYS)
async def test_stream_and_whole_answer_agree_and_usage_reaches_the_log_and_metrics(nursery, monkeypatch, kind,
                                                                                   access_lines):  # fmt: skip
    _, root = await RELAYS[kind](nursery, monkeypatch)
    whole = await post(root, BODY)
    streamed = await post(root, {**BODY, "stream": True})
    assert whole.status_code == streamed.status_code == 200
    events = sse_events(streamed.content)
    assert names(events)[:2] == ["message_start", "content_block_start"]
    assert names(events)[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert text_of(events) == whole.json()["content"][0]["text"]
    usage = events[-2][1]["usage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    for line in await wait_lines(access_lines, 2):
        assert line["route"] == "/v1/messages" and line["model"] == "moonshot-v1-8k" and line["status"] == 200
        assert (line["prompt_tokens"], line["completion_tokens"]) == (usage["input_tokens"], usage["output_tokens"])
    async with httpx.AsyncClient(timeout=10) as client:
        found = await scrape_after(client, root, 2)
    assert total(found, "moonrelay_requests_total", route="/v1/messages", status="200") == 2
    assert total(found, "moonrelay_prompt_tokens_total", model="moonshot-v1-8k") == 2 * usage["input_tokens"]
    assert total(found, "moonrelay_completion_tokens_total") == 2 * usage["output_tokens"]


@pytest.mark.parametrize("kind", RELAYS)
async def test_client_keys_by_x_api_key_or_bearer_and_their_limits_in_the_messages_shape(nursery, monkeypatch,
                                                                                        tmp_path, kind,
                                                                                        access_lines):  # fmt: skip
    keys = tmp_path / "keys"
    keys.write_text("mr-client-0123456 name=agent rpm=2\n")
    _, root = await RELAYS[kind](nursery, monkeypatch, api_keys_file=str(keys))
    by_header = await post(root, BODY, {"x-api-key": "mr-client-0123456"})
    by_bearer = await post(root, BODY, {"authorization": "Bearer mr-client-0123456"})
    over = await post(root, BODY, {"x-api-key": "mr-client-0123456"})
    wrong = await post(root, BODY, {"x-api-key": "mr-wrong"})
    assert by_header.status_code == by_bearer.status_code == 200
    assert over.status_code == 429 and over.json()["error"]["type"] == "rate_limit_error"
    assert "retry-after" in over.headers
    assert wrong.status_code == 401 and wrong.json() == {"type": "error", "error": {
        "type": "authentication_error", "message": wrong.json()["error"]["message"]}}  # fmt: skip
    lines = await wait_lines(access_lines, 4)
    assert [line["client_key"] for line in lines] == ["mr-clien"] * 3 + ["mr-w"]  # x-api-key logged as a prefix


@pytest.mark.usefixtures("still_clock")  # no tpm window ends during the test
@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("kind", RELAYS)
async def test_a_client_keys_tokens_are_charged_the_usage_the_answer_reported(nursery, monkeypatch, tmp_path, kind,
                                                                             stream):  # fmt: skip
    keys = tmp_path / "keys"
    keys.write_text("mr-client-0123456 name=agent tpm=1000\n")
    _, root = await RELAYS[kind](nursery, monkeypatch, api_keys_file=str(keys))
    auth = {"x-api-key": "mr-client-0123456"}
    async with httpx.AsyncClient(timeout=10) as client:
        first = await client.post(root + "/v1/messages", json={**BODY, "stream": stream}, headers=auth)
        await settled(client, root)
        second = await client.post(root + "/v1/messages", json=BODY, headers=auth)
    usage = sse_events(first.content)[-2][1]["usage"] if stream else first.json()["usage"]
    assert first.status_code == second.status_code == 200
    assert used_tokens(second, 1000) == usage["input_tokens"] + usage["output_tokens"] == 8 + 5


@pytest.mark.parametrize("kind", RELAYS)
async def test_a_silent_upstream_gets_pings_then_the_idle_deadline_as_an_error_event(nursery, monkeypatch, kind):
    _, root = await RELAYS[kind](nursery, monkeypatch, "sk-stall", heartbeat_s=0.05, idle_timeout_s=0.4,
                                 sim={"key_faults": {"sk-stall": "headers-then-stall"}})  # fmt: skip
    resp = await post(root, {**BODY, "stream": True})
    assert resp.status_code == 200
    assert b'event: ping\ndata: {"type":"ping"}\n\n' in resp.content  # the relay's heartbeat, in the protocol's form
    assert not resp.content.startswith(b": ping") and b"\n: ping" not in resp.content  # never chat's comment
    kind_, data = sse_events(resp.content)[-1]
    assert kind_ == "error" and data["error"]["type"] == "timeout_error"


async def cancelled(sim, n: int = 1) -> None:
    """Until the sim has seen ``n`` requests cancelled (it counts one when its client, the relay, goes away)."""
    with trio.fail_after(5):
        while sim.stats.snapshot()["cancelled"] < n:  # noqa: ASYNC110 - the sim counts it when it sees EOF
            await trio.sleep(0.01)


@pytest.mark.parametrize("kind", RELAYS)
async def test_a_client_that_leaves_cancels_the_upstream_request(nursery, monkeypatch, kind):
    sim, root = await RELAYS[kind](nursery, monkeypatch, sim={"chunks": 400, "interval": 0.05})
    host, port = root.removeprefix("http://").split(":")
    body = json.dumps({**BODY, "max_tokens": 400, "stream": True}).encode()
    head = (f"POST /v1/messages HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode()  # fmt: skip
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        await stream.send_all(head + body)
        seen = b""
        with trio.fail_after(5):
            while b"content_block_delta" not in seen:
                seen += await stream.receive_some(65536)
    # the client left mid-stream
    await cancelled(sim)
    assert sim.stats.snapshot()["completed"] == 0


@pytest.mark.parametrize("api", ["anthropic", "chat"])
async def test_a_stream_cut_by_shutdown_ends_with_an_error_event(nursery, api):
    sim = await start_sim(nursery, chunks=400, interval=0.05)
    url = sim.anthropic_url if api == "anthropic" else sim.url
    settings = Settings(bind="127.0.0.1:0", upstream=url, upstream_api=api, graceful_timeout_s=0.1)
    stop = trio.Event()
    got = bytearray()
    with trio.fail_after(10):
        async with trio.open_nursery() as relay:
            root = await relay.start(partial(serve, settings, shutdown_trigger=stop.wait))
            async with httpx.AsyncClient(timeout=10) as client, client.stream(
                "POST", root + "/v1/messages", json={**BODY, "max_tokens": 400, "stream": True}
            ) as resp:
                async for piece in resp.aiter_bytes():
                    got += piece
                    if b"content_block_delta" in got:
                        stop.set()  # draining: the stream has graceful_timeout_s, then its final event
    events = sse_events(bytes(got))
    assert events[-1] == ("error", {"type": "error", "error": {
        "type": "overloaded_error", "message": "The relay is shutting down; retry the request."}})  # fmt: skip
    assert "message_stop" not in names(events)


@pytest.mark.parametrize("kind", RELAYS)
async def test_first_byte_deadline_is_a_504_timeout_error(nursery, monkeypatch, kind):
    _, root = await RELAYS[kind](nursery, monkeypatch, "sk-stall", first_byte_timeout_s=0.2,
                                 sim={"key_faults": {"sk-stall": "stall"}})  # fmt: skip
    resp = await post(root, {**BODY, "stream": True})
    assert resp.status_code == 504 and resp.json()["type"] == "error"
    assert resp.json()["error"]["type"] == "timeout_error"


@pytest.mark.parametrize("kind", RELAYS)
async def test_count_tokens_and_the_model_list_in_the_messages_shape(nursery, monkeypatch, kind):
    _, root = await RELAYS[kind](nursery, monkeypatch)
    counted = await post(root, {"model": "moonshot-v1-8k", "messages": HI}, VERSION, "/v1/messages/count_tokens")
    assert counted.status_code == 200 and counted.json()["input_tokens"] > 0
    assert "x-moonrelay-token-count" not in counted.headers  # the upstream counted (the sim's tokenizer route)
    async with httpx.AsyncClient(timeout=10) as client:
        listed = await client.get(root + "/v1/models", headers=VERSION)
    body = listed.json()
    assert listed.status_code == 200 and body["has_more"] is False and body["first_id"] == body["data"][0]["id"]
    assert body["data"][0]["type"] == "model" and body["data"][0]["created_at"].endswith("Z")


# -- translated: to a chat upstream ------------------------------------------------------------------------------


async def test_translated_upstream_errors_take_the_messages_status_and_type(nursery, monkeypatch):
    _, root = await chat_relay(nursery, monkeypatch, "sk-busy", sim={"key_faults": {"sk-busy": "status:503"}},
                               retries=0)  # fmt: skip
    resp = await post(root, BODY)
    assert resp.status_code == 529 and resp.json()["type"] == "error"
    assert resp.json()["error"]["type"] == "overloaded_error"


async def test_translated_stream_failing_mid_way_ends_with_an_error_event(nursery, monkeypatch):
    _, root = await chat_relay(nursery, monkeypatch, "sk-drop", sim={"key_faults": {"sk-drop": "drop:3"}})
    resp = await post(root, {**BODY, "stream": True})
    events = sse_events(resp.content)
    assert resp.status_code == 200 and events[0][0] == "message_start"
    assert events[-1][0] == "error" and events[-1][1]["error"]["type"] == "api_error"
    assert "message_stop" not in names(events)


@pytest.mark.parametrize(("fault", "kind"), [("malformed:3", "api_error"), ("error:3", None)])
async def test_translated_stream_the_upstream_breaks_ends_with_one_error_event(nursery, monkeypatch, fault, kind):
    sim, root = await chat_relay(nursery, monkeypatch, "sk-bad", sim={"key_faults": {"sk-bad": fault},
                                                                      "chunks": 400, "interval": 0.05})  # fmt: skip
    resp = await post(root, {**BODY, "max_tokens": 400, "stream": True})
    events = sse_events(resp.content)
    assert resp.status_code == 200 and events[0][0] == "message_start" and "message_stop" not in names(events)
    assert [t for t, _ in events].count("error") == 1 and events[-1][0] == "error"
    assert events[-1][1]["error"]["type"] == (kind or events[-1][1]["error"]["type"])
    assert all(isinstance(d, dict) for _, d in events)
    if kind is not None:  # the relay stopped reading at the bad event: the upstream request was cancelled
        await cancelled(sim)


async def test_untranslatable_fields_are_refused_and_nothing_goes_upstream(nursery, monkeypatch):
    sim, root = await chat_relay(nursery, monkeypatch)
    top_k = await post(root, {**BODY, "top_k": 5})
    server_tool = await post(root, {**BODY, "tools": [{"type": "web_search_20250305", "name": "web_search"}]})
    missing = await post(root, {"model": "moonshot-v1-8k", "messages": HI})
    for resp in (top_k, server_tool, missing):
        assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error"
    assert "top_k" in top_k.json()["error"]["message"] and "max_tokens" in missing.json()["error"]["message"]
    assert not sim.recent


async def test_translated_tool_use_round_trip(nursery, monkeypatch):
    sim, root = await chat_relay(nursery, monkeypatch)
    ask = {**BODY, "tools": [WEATHER], "tool_choice": {"type": "any"}}
    call = await post(root, {**ask, "stream": True})
    events = sse_events(call.content)
    start = next(d for t, d in events if t == "content_block_start" and d["content_block"]["type"] == "tool_use")
    arguments = "".join(d["delta"]["partial_json"] for t, d in events if t == "content_block_delta"
                        and d["delta"]["type"] == "input_json_delta")  # fmt: skip
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use" and "city" in json.loads(arguments)
    tool_use = {"type": "tool_use", "id": start["content_block"]["id"], "name": "get_weather",
                "input": json.loads(arguments)}  # fmt: skip
    result = {"type": "tool_result", "tool_use_id": tool_use["id"], "content": "Sunny, 21 C"}
    answer = await post(root, {**BODY, "tools": [WEATHER], "messages": [
        *HI, {"role": "assistant", "content": [tool_use]}, {"role": "user", "content": [result]}]})  # fmt: skip
    assert answer.status_code == 200 and answer.json()["stop_reason"] in ("end_turn", "max_tokens")
    sent = sim.recent[-1]["body"]["messages"]
    assert sent[-2]["tool_calls"][0]["id"] == tool_use["id"]
    assert sent[-1] == {"role": "tool", "tool_call_id": tool_use["id"], "content": "Sunny, 21 C"}


# -- several upstreams: protocols side by side --------------------------------------------------------------------


async def native_then_chat(nursery, monkeypatch) -> tuple[object, str]:
    """A Messages upstream whose key the sim answers 529, with a chat upstream as its fallback (one sim)."""
    sim = await start_sim(nursery, key_faults={"sk-busy": "status:529"})
    monkeypatch.setenv("NATIVE_KEY", "sk-busy")
    tables = [
        {"name": "kimi-anthropic", "api": "anthropic", "base_url": sim.anthropic_url, "key_env": "NATIVE_KEY",
         "models": ["moonshot-v1-8k"], "fallbacks": ["kimi-chat"]},
        {"name": "kimi-chat", "base_url": sim.url, "models": ["chat-only-*"]},
    ]  # fmt: skip
    root = await start_relay(nursery, "http://flat.invalid/v1", upstreams=tables, retries=0)
    return sim, root


async def test_a_messages_request_falls_back_from_a_messages_upstream_to_a_chat_one(nursery, monkeypatch):
    sim, root = await native_then_chat(nursery, monkeypatch)
    resp = await post(root, {**BODY, "stream": True})
    assert resp.status_code == 200 and resp.headers["x-moonrelay-upstream"] == "kimi-chat"
    assert names(sse_events(resp.content))[-1] == "message_stop"
    assert [r["path"] for r in sim.recent] == ["/anthropic/v1/messages", "/v1/chat/completions"]


async def test_a_529_is_a_failure_that_lets_the_request_go_elsewhere(nursery, monkeypatch):
    """Anthropic's overload status is not processed, like a 503: the breaker and fallbacks treat it so."""
    sim = await start_sim(nursery, key_faults={"sk-busy": "status:529"})
    monkeypatch.setenv("NATIVE_KEY", "sk-busy")
    tables = [
        {"name": "a", "api": "anthropic", "base_url": sim.anthropic_url, "key_env": "NATIVE_KEY",
         "models": ["moonshot-v1-8k"], "fallbacks": ["b"]},
        {"name": "b", "api": "anthropic", "base_url": sim.anthropic_url},
    ]  # fmt: skip
    root = await start_relay(nursery, "http://flat.invalid/v1", upstreams=tables, retries=0)
    resp = await post(root, BODY)
    assert resp.status_code == 200 and resp.headers["x-moonrelay-upstream"] == "b"


async def test_chat_requests_never_go_to_a_messages_upstream(nursery, monkeypatch):
    sim = await start_sim(nursery)
    tables = [{"name": "kimi-anthropic", "api": "anthropic", "base_url": sim.anthropic_url, "models": ["*"]}]
    root = await start_relay(nursery, "http://flat.invalid/v1", upstreams=tables)
    resp = await post(root, {"model": "moonshot-v1-8k", "messages": HI}, path="/v1/chat/completions")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "unsupported_protocol"
    assert not sim.recent


async def test_a_chat_request_never_falls_back_onto_a_messages_upstream(nursery, monkeypatch):
    sim = await start_sim(nursery, key_faults={"sk-busy": "status:503"})
    monkeypatch.setenv("CHAT_KEY", "sk-busy")
    tables = [
        {"name": "chat", "base_url": sim.url, "key_env": "CHAT_KEY", "models": ["*"], "fallbacks": ["messages"]},
        {"name": "messages", "api": "anthropic", "base_url": sim.anthropic_url, "models": ["kimi-*"]},
    ]  # fmt: skip
    root = await start_relay(nursery, "http://flat.invalid/v1", upstreams=tables, retries=0)
    resp = await post(root, {"model": "moonshot-v1-8k", "messages": HI}, path="/v1/chat/completions")
    assert resp.status_code == 503 and resp.headers["x-moonrelay-upstream"] == "chat"
    assert [r["path"] for r in sim.recent] == ["/v1/chat/completions"]


async def test_a_request_chat_cannot_carry_skips_the_chat_fallback_and_gets_the_messages_upstreams_answer(
    nursery, monkeypatch
):
    sim, root = await native_then_chat(nursery, monkeypatch)
    resp = await post(root, {**BODY, "top_k": 5})  # native only: a chat upstream has no top_k
    assert resp.status_code == 529 and resp.json()["error"]["type"] == "overloaded_error"
    assert [r["path"] for r in sim.recent] == ["/anthropic/v1/messages"]


async def test_a_request_chat_cannot_carry_skips_a_chat_first_choice_for_its_messages_fallback(nursery):
    """The rule of both protocols: where a native upstream can take what cannot be translated, the chat candidates
    are left out, even the first choice (only where none can is it refused: the test above without candidates)."""
    sim = await start_sim(nursery)
    tables = [
        {"name": "kimi-chat", "base_url": sim.url, "models": ["moonshot-v1-8k"], "fallbacks": ["kimi-anthropic"]},
        {"name": "kimi-anthropic", "api": "anthropic", "base_url": sim.anthropic_url, "models": ["kimi-*"]},
    ]  # fmt: skip
    root = await start_relay(nursery, "http://flat.invalid/v1", upstreams=tables, retries=0)
    resp = await post(root, {**BODY, "top_k": 5})
    assert resp.status_code == 200 and resp.headers["x-moonrelay-upstream"] == "kimi-anthropic"
    assert resp.json()["type"] == "message"
    assert [r["path"] for r in sim.recent] == ["/anthropic/v1/messages"]


async def test_count_tokens_is_an_estimate_that_says_so_where_the_upstream_cannot_count(nursery):
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.anthropic_url)  # a chat upstream without a tokenizer route (404)
    resp = await post(root, {"model": "moonshot-v1-8k", "messages": HI}, VERSION, "/v1/messages/count_tokens")
    assert resp.status_code == 200 and resp.headers["x-moonrelay-token-count"] == "estimate"
    assert resp.json() == {"input_tokens": 6 + 4}  # 22 ASCII characters / 4, rounded up, and 4 for the message
    assert [r["path"] for r in sim.recent] == ["/anthropic/tokenizers/estimate-token-count"]


async def test_pass_through_never_carries_the_messages_routes(nursery, monkeypatch):
    """With pass-through on, /v1/messages keeps the relay's body limit, and a path that resolves to a Messages route
    is refused, never relayed around the route's checks."""
    sim, root = await chat_relay(nursery, monkeypatch, passthrough="on", max_body_bytes=2000)
    big = await post(root, {**BODY, "system": "x" * 3000})
    assert big.status_code == 413 and big.json()["error"]["type"] == "request_too_large"
    body = json.dumps(BODY).encode()
    for target in ("/v1/./messages", "/v1/messages/", "/v1/x/../messages", "/v1/messages/./count_tokens"):
        status, response = await raw_request(root, target, "POST", "content-type: application/json\r\n", body)
        assert status == 400 and b"itself: send the request to exactly that path" in response, target
    assert not sim.recent


async def test_the_model_list_is_what_each_protocol_can_reach(nursery):
    chat_sim = await start_sim(nursery, models=("chat-model",))
    messages_sim = await start_sim(nursery, models=("messages-model",))
    tables = [
        {"name": "chat", "base_url": chat_sim.url, "models": ["chat-*"]},
        {"name": "messages", "api": "anthropic", "base_url": messages_sim.anthropic_url, "models": ["messages-*"]},
    ]
    root = await start_relay(nursery, "http://flat.invalid/v1", upstreams=tables)
    async with httpx.AsyncClient(timeout=10) as client:
        openai_list = (await client.get(root + "/v1/models")).json()
        anthropic_list = (await client.get(root + "/v1/models", headers=VERSION)).json()
    assert [m["id"] for m in openai_list["data"]] == ["chat-model"]  # a chat request cannot reach the other
    assert [m["id"] for m in anthropic_list["data"]] == ["chat-model", "messages-model"]
    assert anthropic_list["last_id"] == "messages-model" and messages_sim.recent[-1]["path"] == "/anthropic/v1/models"
