"""The simulator's Anthropic Messages routes over real sockets, read raw and with the official ``anthropic`` SDK."""

import json
from contextlib import aclosing

import anthropic
import httpx
import pytest
import trio

from loadtest.simcontent import MODELS
from tests.conftest import start_sim
from tests.support.simevents import sse_events

HI = [{"role": "user", "content": "Tell me about the moon"}]
BODY = {"model": "kimi-k2", "max_tokens": 1024, "messages": HI, "sim_chunks": 4}
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                       "days": {"type": "integer"}},
        "required": ["city", "unit"],
    },
}
TEXT_SEQUENCE = ["message_start", "content_block_start", "ping"] + ["content_block_delta"] * 4 + [
    "content_block_stop", "message_delta", "message_stop"]


async def post(url: str, body, headers=None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(url, json=body, headers=headers)


def sdk(server, **kw) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=server.anthropic_url, api_key="sk-sim", max_retries=0, **kw)


def text_of(events) -> str:
    return "".join(d["delta"]["text"] for t, d in events if t == "content_block_delta"
                   and d["delta"]["type"] == "text_delta")


# -- the wire ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/messages", "/anthropic/v1/messages", "/anthropic/v1/messages?beta=true"])
async def test_stream_is_the_published_event_sequence(nursery, path):
    server = await start_sim(nursery)
    resp = await post(server.root + path, {**BODY, "stream": True}, {"anthropic-version": "2023-06-01"})
    assert resp.status_code == 200 and resp.headers["content-type"] == "text/event-stream"
    events = sse_events(resp.content)
    assert [t for t, _ in events] == TEXT_SEQUENCE
    assert all(d["type"] == t for t, d in events)  # the event line names the data's type
    assert [d["sim"]["seq"] for _, d in events] == list(range(10)) and {d["sim"]["of"] for _, d in events} == {10}
    start = events[0][1]["message"]
    assert start["id"].startswith("msg_") and start["role"] == "assistant" and start["content"] == []
    assert start["model"] == "kimi-k2" and start["stop_reason"] is None
    assert start["usage"]["input_tokens"] == 8  # 5 words + 3 for the message
    assert events[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""},
                            "sim": events[1][1]["sim"]}
    assert {d["index"] for _, d in events[3:8]} == {0}
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"] == {"input_tokens": 8, "output_tokens": 4}
    assert len(text_of(events).split()) == 4
    assert b'": ' not in resp.content  # compact JSON


async def test_non_stream_message_matches_the_stream(nursery):
    server = await start_sim(nursery)
    body = {**BODY, "sim_deterministic": True}
    streamed = sse_events((await post(server.root + "/v1/messages", {**body, "stream": True})).content)
    resp = await post(server.anthropic_url + "/v1/messages", body)
    assert resp.status_code == 200
    message = resp.json()
    assert message["type"] == "message" and message["id"] == streamed[0][1]["message"]["id"]
    assert message["content"] == [{"type": "text", "text": text_of(streamed)}]
    assert message["stop_reason"] == "end_turn" and message["stop_sequence"] is None
    assert message["usage"] == {"input_tokens": 8, "output_tokens": 4}
    assert message["sim"] == {"ns": 0, "seq": 0, "of": 1}


async def test_max_tokens_is_the_answer_length(nursery):
    server = await start_sim(nursery, tokens_per_chunk=2)
    body = {"model": "kimi-k2", "max_tokens": 7, "messages": HI}
    events = sse_events((await post(server.root + "/v1/messages", {**body, "stream": True})).content)
    deltas = [d for t, d in events if t == "content_block_delta"]
    assert len(deltas) == 4 and len(text_of(events).split()) == 7  # ceil(7 / 2) pieces, the last one shorter
    assert events[-2][1]["delta"]["stop_reason"] == "max_tokens" and events[-2][1]["usage"]["output_tokens"] == 7
    whole = (await post(server.root + "/v1/messages", body)).json()
    assert whole["stop_reason"] == "max_tokens" and whole["usage"]["output_tokens"] == 7
    assert len(whole["content"][0]["text"].split()) == 7


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"model": "kimi-k2", "messages": HI}, "max_tokens"),
        ({"model": "kimi-k2", "messages": HI, "max_tokens": 0}, "max_tokens"),
        ({"model": "kimi-k2", "max_tokens": 5}, "messages"),
        ({"max_tokens": 5, "messages": HI}, "model"),
        ({**BODY, "tool_choice": {"type": "tool", "name": "nope"}, "tools": [WEATHER]}, "nope"),
        ({**BODY, "tool_choice": "any"}, "tool_choice"),
        ({**BODY, "sim_fault": "explode"}, "sim_fault"),
        ([1, 2], "JSON object"),
    ],
)
async def test_invalid_requests_are_400_in_the_messages_shape(nursery, body, says):
    server = await start_sim(nursery)
    resp = await post(server.root + "/v1/messages", body)
    assert resp.status_code == 400
    error = resp.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert says in error["error"]["message"] and error["request_id"] == resp.headers["request-id"]


async def test_keys_as_anthropic_clients_send_them(nursery):
    server = await start_sim(nursery, require_key="sk-right")
    url = server.root + "/v1/messages"
    for headers in ({"x-api-key": "sk-right"}, {"authorization": "Bearer sk-right"}):
        resp = await post(url, BODY, {**headers, "anthropic-version": "2023-06-01", "anthropic-beta": "b1"})
        assert resp.status_code == 200, headers
    assert server.recent[-1]["headers"]["anthropic-beta"] == "b1"
    for headers in ({}, {"x-api-key": "sk-wrong"}, {"authorization": "sk-right"}):
        resp = await post(url, BODY, headers)
        assert resp.status_code == 401, headers
        assert resp.json()["error"]["type"] == "authentication_error"


async def test_a_key_fault_answers_for_its_key(nursery):
    server = await start_sim(nursery, key_faults={"sk-limited": "status:429"})
    resp = await post(server.root + "/v1/messages", BODY, {"x-api-key": "sk-limited"})
    assert resp.status_code == 429 and resp.json()["error"]["type"] == "rate_limit_error"
    assert resp.headers["retry-after"] == "1"
    assert (await post(server.root + "/v1/messages", BODY, {"x-api-key": "sk-other"})).status_code == 200


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, "invalid_request_error"), (401, "authentication_error"), (403, "permission_error"),
     (404, "not_found_error"), (413, "request_too_large"), (429, "rate_limit_error"), (500, "api_error"),
     (504, "timeout_error"), (529, "overloaded_error"), (503, "api_error"), (418, "invalid_request_error")],
)
async def test_status_faults_in_the_messages_shape(nursery, status, kind):
    server = await start_sim(nursery)
    resp = await post(server.root + "/v1/messages", {**BODY, "stream": True, "sim_fault": f"status:{status}"})
    assert resp.status_code == status
    error = resp.json()
    assert set(error) == {"type", "error", "request_id"} and error["type"] == "error"
    assert error["error"]["type"] == kind and error["error"]["message"]


# -- tool use and thinking -----------------------------------------------------------------------------


def tool_input(events) -> str:
    return "".join(d["delta"]["partial_json"] for t, d in events
                   if t == "content_block_delta" and d["delta"]["type"] == "input_json_delta")


@pytest.mark.parametrize("choice", [{"type": "any"}, {"type": "tool", "name": "get_weather"}])
async def test_a_forced_tool_call_is_a_tool_use_block_alone(nursery, choice):
    server = await start_sim(nursery)
    other = {"name": "other", "input_schema": {"type": "object"}}
    body = {**BODY, "stream": True, "tools": [WEATHER, other], "tool_choice": choice, "sim_tool_pieces": 6}
    events = sse_events((await post(server.root + "/v1/messages", body)).content)
    names = [t for t, _ in events]
    assert names == ["message_start", "content_block_start", "ping"] + ["content_block_delta"] * 6 + [
        "content_block_stop", "message_delta", "message_stop"]
    block = events[1][1]["content_block"]
    assert block["type"] == "tool_use" and block["name"] == "get_weather" and block["input"] == {}
    assert block["id"].startswith("toolu_")
    arguments = json.loads(tool_input(events))
    assert set(arguments) == {"city", "unit"} and arguments["unit"] == "celsius" and isinstance(arguments["city"], str)
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use" and events[-2][1]["usage"]["output_tokens"] == 6


async def test_sim_tool_call_answers_text_then_a_tool_use(nursery):
    server = await start_sim(nursery)
    body = {**BODY, "tools": [WEATHER], "sim_tool_call": "get_weather", "sim_deterministic": True}
    events = sse_events((await post(server.root + "/v1/messages", {**body, "stream": True})).content)
    starts = [d["content_block"]["type"] for t, d in events if t == "content_block_start"]
    assert starts == ["text", "tool_use"]
    assert [d["index"] for t, d in events if t == "content_block_stop"] == [0, 1]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    whole = (await post(server.root + "/v1/messages", body)).json()
    assert [b["type"] for b in whole["content"]] == ["text", "tool_use"]
    assert whole["content"][0]["text"] == text_of(events)
    assert whole["content"][1]["input"] == json.loads(tool_input(events))
    assert whole["stop_reason"] == "tool_use"
    # tool_choice none: no call, whatever the sim control says
    quiet = (await post(server.root + "/v1/messages", {**body, "tool_choice": {"type": "none"}})).json()
    assert [b["type"] for b in quiet["content"]] == ["text"] and quiet["stop_reason"] == "end_turn"


async def test_reasoning_is_a_thinking_block_first(nursery):
    server = await start_sim(nursery)
    body = {"model": "kimi-k2", "max_tokens": 6, "messages": HI, "sim_reasoning": 2}
    events = sse_events((await post(server.root + "/v1/messages", {**body, "stream": True})).content)
    starts = [d["content_block"] for t, d in events if t == "content_block_start"]
    assert starts == [{"type": "thinking", "thinking": "", "signature": ""}, {"type": "text", "text": ""}]
    kinds = [d["delta"]["type"] for t, d in events if t == "content_block_delta"]
    assert kinds == ["thinking_delta"] * 2 + ["signature_delta"] + ["text_delta"] * 4
    assert events[-2][1]["usage"]["output_tokens"] == 6  # max_tokens bounds thinking and text together
    whole = (await post(server.root + "/v1/messages", body)).json()
    assert whole["content"][0]["type"] == "thinking" and whole["content"][0]["signature"]


# -- faults mid-stream ---------------------------------------------------------------------------------


async def test_error_fault_is_an_error_event(nursery):
    server = await start_sim(nursery)
    resp = await post(server.root + "/v1/messages", {**BODY, "stream": True, "sim_fault": "error:2"})
    events = sse_events(resp.content)
    assert [t for t, _ in events] == TEXT_SEQUENCE[:5] + ["error"]
    assert events[-1][1] == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


async def test_drop_and_malformed_count_the_timed_sends(nursery):
    server = await start_sim(nursery)
    resp = await post(server.root + "/v1/messages", {**BODY, "stream": True, "sim_fault": "malformed:4"})
    events = sse_events(resp.content)
    assert events[4] == ("content_block_delta", b"{not json") and [t for t, _ in events] == TEXT_SEQUENCE
    with pytest.raises(httpx.RemoteProtocolError):
        await post(server.root + "/v1/messages", {**BODY, "stream": True, "sim_fault": "drop:2"})


# -- the other routes ----------------------------------------------------------------------------------


async def test_count_tokens_models_and_unknown_paths(nursery):
    server = await start_sim(nursery)
    async with sdk(server) as client:
        counted = await client.messages.count_tokens(model="kimi-k2", messages=HI, system="Be brief.")
        assert counted.input_tokens == 8 + 2 + 3
        models = [m.id async for m in client.models.list()]
        assert models == list(MODELS)
        resp = await post(server.anthropic_url + "/v1/complete", BODY)
        assert resp.status_code == 404 and resp.json()["error"]["type"] == "not_found_error"


# -- the official SDK ----------------------------------------------------------------------------------


async def test_sdk_streams_and_creates(nursery):
    server = await start_sim(nursery)
    async with sdk(server) as client:
        async with client.messages.stream(model="kimi-k2", max_tokens=1024, messages=HI,
                                          extra_body={"sim_chunks": 4, "sim_deterministic": True}) as stream:
            texts = [text async for text in stream.text_stream]
            final = await stream.get_final_message()
        assert len(texts) == 4 and final.content[0].text == "".join(texts)
        assert final.stop_reason == "end_turn" and final.usage.input_tokens == 8 and final.usage.output_tokens == 4
        message = await client.messages.create(model="kimi-k2", max_tokens=1024, messages=HI,
                                               extra_body={"sim_chunks": 4, "sim_deterministic": True})
        assert message.content[0].text == final.content[0].text and message.id == final.id


async def test_sdk_tool_use_round_trip(nursery):
    server = await start_sim(nursery)
    async with sdk(server) as client:
        async with client.messages.stream(model="kimi-k2", max_tokens=1024, messages=HI, tools=[WEATHER],
                                          tool_choice={"type": "any"}) as stream:
            called = await stream.get_final_message()
        assert called.stop_reason == "tool_use"
        use = called.content[-1]
        assert use.type == "tool_use" and use.name == "get_weather" and set(use.input) == {"city", "unit"}
        messages = [*HI, {"role": "assistant", "content": [b.model_dump(exclude_none=True, exclude={"sim"})
                                                           for b in called.content]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny"}]}]
        answer = await client.messages.create(model="kimi-k2", max_tokens=16, messages=messages, tools=[WEATHER])
        assert answer.stop_reason == "max_tokens" and answer.content[0].type == "text"
        assert answer.usage.output_tokens == 16
        sent = server.recent[-1]["body"]["messages"][-1]["content"][0]
        assert sent == {"type": "tool_result", "tool_use_id": use.id, "content": "Sunny"}


async def test_sdk_raises_the_errors_by_type(nursery):
    server = await start_sim(nursery)
    async with sdk(server) as client:
        with pytest.raises(anthropic.OverloadedError) as overloaded:
            await client.messages.create(model="kimi-k2", max_tokens=8, messages=HI,
                                         extra_body={"sim_fault": "status:529"})
        assert overloaded.value.body["error"]["type"] == "overloaded_error"
        with pytest.raises(anthropic.APIStatusError) as mid_stream:
            async with client.messages.stream(model="kimi-k2", max_tokens=8, messages=HI,
                                              extra_body={"sim_fault": "error:1"}) as stream:
                await stream.get_final_message()
        assert "overloaded_error" in str(mid_stream.value)


async def test_a_client_leaving_a_messages_stream_is_counted(nursery):
    server = await start_sim(nursery, interval=1.0)
    async with sdk(server) as client, client.messages.stream(
        model="kimi-k2", max_tokens=50, messages=HI, metadata={"user_id": "u-7"}
    ) as stream, aclosing(stream.__aiter__()) as events:
        async for event in events:
            if event.type == "text":
                break
    with trio.fail_after(2):
        while server.stats.snapshot()["cancelled"] < 1:  # noqa: ASYNC110 - polling the server's counter
            await trio.sleep(0.005)
    assert list(server.stats.cancel_users) == ["u-7"]
