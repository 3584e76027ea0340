"""The simulator's OpenAI Responses route over real sockets, read raw and with the official ``openai`` SDK."""

import json

import httpx
import openai
import pytest

from tests.conftest import start_sim
from tests.support.simevents import sse_events

BODY = {"model": "gpt-sim", "input": "Tell me about the moon", "sim_chunks": 3}
LOOKUP = {"type": "function", "name": "lookup", "description": "Look a word up",
          "parameters": {"type": "object", "properties": {"word": {"type": "string"}, "limit": {"type": "integer"}},
                         "required": ["word", "limit"], "additionalProperties": False}}
TEXT_SEQUENCE = [
    "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
    *["response.output_text.delta"] * 3,
    "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed",
]


async def post(server, body, headers=None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(server.url + "/responses", json=body, headers=headers)


def sdk(server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.url, api_key="sk-sim", max_retries=0)


def deltas(events, kind="response.output_text.delta") -> str:
    return "".join(d["delta"] for t, d in events if t == kind)


async def test_stream_is_the_semantic_event_sequence(nursery):
    server = await start_sim(nursery)
    resp = await post(server, {**BODY, "stream": True})
    assert resp.status_code == 200 and resp.headers["content-type"] == "text/event-stream"
    events = sse_events(resp.content)
    assert [t for t, _ in events] == TEXT_SEQUENCE
    assert all(d["type"] == t for t, d in events)
    assert [d["sequence_number"] for _, d in events] == list(range(11))
    assert [d["sim"]["seq"] for _, d in events] == list(range(11)) and {d["sim"]["of"] for _, d in events} == {11}
    created = events[0][1]["response"]
    assert created["status"] == "in_progress" and created["output"] == [] and created["usage"] is None
    assert created["id"].startswith("resp_") and created["object"] == "response" and created["model"] == "gpt-sim"
    item = events[2][1]["item"]
    assert item["type"] == "message" and item["status"] == "in_progress" and item["id"].startswith("msg_")
    text = deltas(events)
    assert len(text.split()) == 3
    assert events[7][1]["text"] == text and events[8][1]["part"]["text"] == text
    assert {d["item_id"] for _, d in events[3:9]} == {item["id"]}
    done = events[-1][1]["response"]
    assert done["status"] == "completed" and done["output"] == [events[9][1]["item"]]
    assert done["output"][0]["content"] == [{"type": "output_text", "text": text, "annotations": []}]
    assert done["usage"] == {"input_tokens": 8, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 3,
                             "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 11}


async def test_non_stream_is_the_completed_response(nursery):
    server = await start_sim(nursery)
    body = {**BODY, "sim_deterministic": True, "instructions": "Be brief.", "tools": [LOOKUP]}
    streamed = sse_events((await post(server, {**body, "stream": True})).content)
    resp = await post(server, body)
    assert resp.status_code == 200
    whole = resp.json()
    sim = whole.pop("sim")
    assert sim == {"ns": 0, "seq": 0, "of": 1}
    assert whole == streamed[-1][1]["response"]
    assert whole["instructions"] == "Be brief." and whole["tools"] == [LOOKUP]
    assert whole["usage"]["input_tokens"] == 8 + 5  # the instructions count as a message


async def test_max_output_tokens_ends_incomplete(nursery):
    server = await start_sim(nursery)
    body = {"model": "gpt-sim", "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}],
            "max_output_tokens": 5}
    events = sse_events((await post(server, {**body, "stream": True})).content)
    assert events[-1][0] == "response.incomplete"
    response = events[-1][1]["response"]
    assert response["status"] == "incomplete" and response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["usage"]["output_tokens"] == 5 and len(deltas(events).split()) == 5
    assert response["output"][0]["status"] == "incomplete"
    assert (await post(server, body)).json()["status"] == "incomplete"


async def test_a_required_tool_choice_is_a_function_call(nursery):
    server = await start_sim(nursery)
    body = {**BODY, "stream": True, "tools": [LOOKUP], "tool_choice": "required", "sim_tool_pieces": 5}
    events = sse_events((await post(server, body)).content)
    assert [t for t, _ in events] == [
        "response.created", "response.in_progress", "response.output_item.added",
        *["response.function_call_arguments.delta"] * 5,
        "response.function_call_arguments.done", "response.output_item.done", "response.completed",
    ]
    item = events[2][1]["item"]
    assert item["type"] == "function_call" and item["name"] == "lookup" and item["arguments"] == ""
    assert item["call_id"].startswith("call_") and item["id"].startswith("fc_")
    arguments = deltas(events, "response.function_call_arguments.delta")
    assert events[-3][1]["arguments"] == arguments and set(json.loads(arguments)) == {"word", "limit"}
    done = events[-1][1]["response"]
    assert done["output"][0]["arguments"] == arguments and done["usage"]["output_tokens"] == 5


async def test_sim_tool_call_answers_a_message_then_a_call(nursery):
    server = await start_sim(nursery)
    body = {**BODY, "tools": [LOOKUP], "sim_tool_call": True}
    output = (await post(server, body)).json()["output"]
    assert [o["type"] for o in output] == ["message", "function_call"]
    named = {**BODY, "tools": [LOOKUP, {**LOOKUP, "name": "other"}], "tool_choice": {"type": "function",
                                                                                  "name": "other"}}
    assert [o["name"] for o in (await post(server, named)).json()["output"]] == ["other"]


async def test_reasoning_is_a_reasoning_item_first(nursery):
    server = await start_sim(nursery)
    events = sse_events((await post(server, {**BODY, "stream": True, "sim_reasoning": 2})).content)
    assert [d["item"]["type"] for t, d in events if t == "response.output_item.added"] == ["reasoning", "message"]
    assert len(deltas(events, "response.reasoning_text.delta").split()) == 2
    usage = events[-1][1]["response"]["usage"]
    assert usage["output_tokens"] == 5 and usage["output_tokens_details"]["reasoning_tokens"] == 2


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"input": "hi"}, "model"),
        ({"model": "gpt-sim"}, "input"),
        ({**BODY, "previous_response_id": "resp_1"}, "resp_1"),
        ({**BODY, "max_output_tokens": -1}, "max_output_tokens"),
        ({**BODY, "tool_choice": "required"}, "no function tools"),
    ],
)
async def test_invalid_requests_are_400_in_openai_shape(nursery, body, says):
    server = await start_sim(nursery)
    resp = await post(server, body)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert says in error["message"]


@pytest.mark.parametrize(("status", "kind"), [(401, "invalid_request_error"), (429, "requests"),
                                              (500, "server_error"), (503, "server_error")])
async def test_status_faults_in_openai_shape(nursery, status, kind):
    server = await start_sim(nursery)
    resp = await post(server, {**BODY, "stream": True, "sim_fault": f"status:{status}"})
    assert resp.status_code == status and resp.json()["error"]["type"] == kind


async def test_key_required_as_bearer(nursery):
    server = await start_sim(nursery, require_key="sk-right")
    assert (await post(server, BODY, {"authorization": "Bearer sk-right"})).status_code == 200
    resp = await post(server, BODY, {"x-api-key": "sk-right"})
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "invalid_api_key"


async def test_error_fault_is_response_failed_in_sequence(nursery):
    server = await start_sim(nursery)
    events = sse_events((await post(server, {**BODY, "stream": True, "sim_fault": "error:1"})).content)
    assert [t for t, _ in events] == TEXT_SEQUENCE[:5] + ["response.failed"]
    failed = events[-1][1]
    assert failed["sequence_number"] == 5 and failed["response"]["status"] == "failed"
    assert failed["response"]["error"]["code"] == "server_error"


# -- the official SDK ----------------------------------------------------------------------------------


async def test_sdk_streams_and_creates(nursery):
    server = await start_sim(nursery)
    async with sdk(server) as client:
        stream = await client.responses.create(model="gpt-sim", input="Tell me about the moon", stream=True,
                                               extra_body={"sim_chunks": 3, "sim_deterministic": True})
        events = [event async for event in stream]
        assert [e.type for e in events] == TEXT_SEQUENCE
        completed = events[-1].response
        assert completed.output_text == "".join(e.delta for e in events if e.type == "response.output_text.delta")
        response = await client.responses.create(model="gpt-sim", input="Tell me about the moon",
                                                 extra_body={"sim_chunks": 3, "sim_deterministic": True})
        assert response.output_text == completed.output_text and response.id == completed.id
        assert response.usage.output_tokens == 3


async def test_sdk_function_call_round_trip(nursery):
    server = await start_sim(nursery)
    async with sdk(server) as client:
        async with client.responses.stream(model="gpt-sim", input="Look up moon", tools=[LOOKUP],
                                           tool_choice="required") as stream:
            called = await stream.get_final_response()
        call = called.output[0]
        assert call.type == "function_call" and set(json.loads(call.arguments)) == {"word", "limit"}
        items = [{"role": "user", "content": "Look up moon"},
                 {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
                 {"type": "function_call_output", "call_id": call.call_id, "output": "a rock"}]
        answer = await client.responses.create(model="gpt-sim", input=items, tools=[LOOKUP], max_output_tokens=16)
        assert answer.status == "incomplete" and len(answer.output_text.split()) == 16
        assert server.recent[-1]["body"]["input"][-1] == items[-1]
    with pytest.raises(openai.RateLimitError):
        async with sdk(server) as client:
            await client.responses.create(model="gpt-sim", input="hi", extra_body={"sim_fault": "status:429"})
