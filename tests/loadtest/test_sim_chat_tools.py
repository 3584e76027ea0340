"""The simulator's chat route answering with tool calls and reasoning, and its mid-stream error, over real sockets."""

import json

import httpx
import openai
import pytest
import trio

from tests.conftest import start_sim
from tests.support.simevents import sse_events

HI = [{"role": "user", "content": "What is the weather on the moon?"}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather somewhere",
    "parameters": {"type": "object", "properties": {"place": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["place"]}}}
OTHER = {"type": "function", "function": {"name": "other", "parameters": {"type": "object", "properties": {}}}}
BODY = {"model": "kimi-k2", "messages": HI, "tools": [WEATHER, OTHER], "sim_chunks": 3}


async def post(server, body) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(server.url + "/chat/completions", json=body)


def chunks(resp: httpx.Response) -> list[dict]:
    events = [data for _, data in sse_events(resp.content)]
    assert events[-1] == b"[DONE]"
    return events[:-1]


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
async def test_a_forced_tool_call_streams_delta_tool_calls(nursery, choice):
    server = await start_sim(nursery)
    resp = await post(server, {**BODY, "stream": True, "tool_choice": choice, "sim_tool_pieces": 4})
    events = chunks(resp)
    assert len(events) == 5 and [e["sim"]["seq"] for e in events] == list(range(5))
    first = events[0]["choices"][0]["delta"]
    assert first["role"] == "assistant" and "content" not in first
    call = first["tool_calls"][0]
    assert call["index"] == 0 and call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert call["id"] == "functions.get_weather:0"  # as Kimi numbers a conversation's calls
    rest = [e["choices"][0]["delta"]["tool_calls"][0] for e in events[1:4]]
    assert all(set(r) == {"index", "function"} and set(r["function"]) == {"arguments"} for r in rest)
    arguments = call["function"]["arguments"] + "".join(r["function"]["arguments"] for r in rest)
    assert set(json.loads(arguments)) == {"place"}
    final = events[-1]["choices"][0]
    assert final["finish_reason"] == "tool_calls" and final["usage"]["completion_tokens"] == 4


async def test_non_stream_message_tool_calls(nursery):
    server = await start_sim(nursery)
    history = [*HI, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "functions.get_weather:0", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "cold"}]
    body = {**BODY, "messages": history, "sim_tool_call": "other", "sim_deterministic": True}
    message = (await post(server, body)).json()["choices"][0]
    assert message["finish_reason"] == "tool_calls"
    assert len(message["message"]["content"].split()) == 3  # tool_choice auto: the text, then the call
    assert message["message"]["tool_calls"] == [
        {"id": "functions.other:1", "type": "function", "function": {"name": "other", "arguments": "{}"}}]
    streamed = chunks(await post(server, {**body, "stream": True}))
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in streamed) == message["message"]["content"]


async def test_no_tool_call_unless_asked(nursery):
    server = await start_sim(nursery)
    for body in (BODY, {**BODY, "tool_choice": "none", "sim_tool_call": True}):
        choice = (await post(server, body)).json()["choices"][0]
        assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]
    for body, says in (({**BODY, "tools": [], "tool_choice": "required"}, "no function tools"),
                       ({**BODY, "sim_tool_call": "nope"}, "nope"),
                       ({**BODY, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "nope")):
        resp = await post(server, body)
        assert resp.status_code == 400 and says in resp.json()["error"]["message"]


async def test_reasoning_content_comes_before_the_content(nursery):
    server = await start_sim(nursery)
    body = {"model": "kimi-k2", "messages": HI, "max_tokens": 5, "sim_reasoning": 2}
    events = chunks(await post(server, {**body, "stream": True}))
    kinds = [next(k for k in ("reasoning_content", "content") if k in e["choices"][0]["delta"]) for e in events[:-1]]
    assert kinds == ["reasoning_content"] * 2 + ["content"] * 3
    assert events[-1]["choices"][0]["usage"]["completion_tokens"] == 5
    assert events[-1]["choices"][0]["finish_reason"] == "length"
    message = (await post(server, body)).json()["choices"][0]["message"]
    assert len(message["reasoning_content"].split()) == 2 and len(message["content"].split()) == 3


async def test_error_fault_ends_the_stream_with_an_error_chunk(nursery):
    server = await start_sim(nursery)
    events = [data for _, data in sse_events((await post(server, {**BODY, "stream": True,
                                                                 "sim_fault": "error:2"})).content)]
    assert [e.get("sim", {}).get("seq") for e in events] == [0, 1, None]
    assert events[-1] == {"error": {"message": "Internal server error", "type": "server_error"}}


async def test_openai_sdk_reads_the_tool_call(nursery):
    server = await start_sim(nursery)

    def run():
        # The sync client in a thread: the async one stops reading at [DONE] and leaves its byte iterators to the
        # garbage collector, which this suite's warnings-as-errors turns into a failure.
        with openai.OpenAI(base_url=server.url, api_key="sk-sim", max_retries=0) as client, \
                client.chat.completions.stream(model="kimi-k2", messages=HI, tools=[WEATHER],
                                               tool_choice="required") as stream:
            return stream.get_final_completion()

    completion = await trio.to_thread.run_sync(run)
    call = completion.choices[0].message.tool_calls[0]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and "place" in json.loads(call.function.arguments)
