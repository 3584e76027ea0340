"""Chat-completions streams and answers translated into OpenAI Responses, checked three ways: against the events
written by hand from the streaming reference, against the official SDK's typed event models, and by the SDK's own
client, which reads the bytes over a socket and must rebuild the same Response as the non-stream translation."""

import json

import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from proxy.protocol.responses import ResponsesStream, chat_to_response, parse_responses_request

from .canned import canned_server
from .corpus import load, parsed, raw, run

BODY = {"model": "gpt-4o-mini", "input": "Hello", "stream": True}
REQUEST = parse_responses_request(json.dumps(BODY).encode())
IDS = {"response_id": "resp_fixture", "created_at": 1700000000}
EXPECTED = ["chat_text", "chat_tools", "chat_moonshot_reasoning", "chat_cut", "chat_length"]  # .responses.sse
STREAMS = EXPECTED + ["chat_interleaved_tools", "chat_error"]
WHOLE = ["chat_text", "chat_tools", "chat_moonshot_reasoning"]  # with a non-streamed twin (.json)
EVENT = TypeAdapter(ResponseStreamEvent)


def stream(request=REQUEST) -> ResponsesStream:
    return ResponsesStream(request, **IDS)


def chunk(delta: dict, finish: str | None = None) -> bytes:
    return json.dumps(
        {"id": "c", "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    ).encode()


@pytest.mark.parametrize("name", EXPECTED)
def test_the_events_are_those_the_reference_gives(name):
    assert parsed(run(stream(), f"{name}.sse")) == parsed(raw(f"{name}.responses.sse"))


@pytest.mark.parametrize("name", STREAMS)
def test_every_event_validates_as_the_sdks_typed_event_in_sequence(name):
    events = parsed(run(stream(), f"{name}.sse"))
    for number, (event, data) in enumerate(events):
        assert data["type"] == event and data["sequence_number"] == number
        EVENT.validate_python(data)
    assert events[0][0] == "response.created" and events[-1][0] in (
        "response.completed",
        "response.incomplete",
        "response.failed",
    )


@pytest.mark.parametrize("name", WHOLE)
def test_the_sdk_rebuilds_the_non_stream_translation(name):
    expected = Response.model_validate(chat_to_response(load(f"{name}.json"), REQUEST, **IDS))
    with canned_server() as server:
        server.answer(run(stream(), f"{name}.sse"), content_type="text/event-stream")
        with openai.OpenAI(api_key="k", base_url=server.url + "/v1", max_retries=0) as client:
            with client.responses.stream(model="gpt-4o-mini", input="Hello") as events:
                final = events.get_final_response()
    assert final.model_dump(exclude_none=True) == expected.model_dump(exclude_none=True)
    assert final.output and final.usage is not None


@pytest.mark.parametrize("name", WHOLE)
def test_the_sdk_reads_the_non_stream_translation(name):
    translated = chat_to_response(load(f"{name}.json"), REQUEST, **IDS)
    with canned_server() as server:
        server.answer(json.dumps(translated).encode())
        with openai.OpenAI(api_key="k", base_url=server.url + "/v1", max_retries=0) as client:
            response = client.responses.create(model="gpt-4o-mini", input="Hello")
    assert response.model_dump(exclude_none=True) == Response.model_validate(translated).model_dump(exclude_none=True)
    assert response.output_text == {"chat_text": "Hello! How can I help?", "chat_tools": "Let me check both cities.",
                                    "chat_moonshot_reasoning": "你好！"}[name]  # fmt: skip


def test_the_sdk_sees_a_failed_stream_as_failed():
    with canned_server() as server:
        server.answer(run(stream(), "chat_error.sse"), content_type="text/event-stream")
        with openai.OpenAI(api_key="k", base_url=server.url + "/v1", max_retries=0) as client:
            with client.responses.stream(model="gpt-4o-mini", input="Hello") as events:
                last = list(events)[-1]
                with pytest.raises(RuntimeError, match="response.completed"):
                    events.get_final_response()
    assert last.type == "response.failed" and last.response.status == "failed"
    assert last.response.error.code == "server_error" and "overloaded" in last.response.error.message


def test_the_non_stream_translation_maps_items_status_and_usage():
    response = chat_to_response(load("chat_tools.json"), REQUEST, **IDS)
    assert response["status"] == "completed" and response["incomplete_details"] is None
    assert [item["type"] for item in response["output"]] == ["message", "function_call", "function_call"]
    assert response["output"][1] == {"id": "fc_fixture_1", "type": "function_call", "status": "completed",
                                     "call_id": "call_abc", "name": "get_weather",
                                     "arguments": '{"location": "Paris, France"}'}  # fmt: skip
    assert response["usage"] == {"input_tokens": 82, "input_tokens_details": {"cached_tokens": 64,
                                 "cache_write_tokens": 0}, "output_tokens": 41,
                                 "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 123}  # fmt: skip
    cut = {"choices": [{"message": {"content": "Once"}, "finish_reason": "length"}]}
    response = chat_to_response(cut, REQUEST, **IDS)
    assert (response["status"], response["incomplete_details"]) == ("incomplete", {"reason": "max_output_tokens"})
    assert response["output"][0]["status"] == "incomplete" and response["usage"] is None


def test_the_response_repeats_the_requests_settings():
    body = {"input": "hi", "instructions": "be brief", "max_output_tokens": 9, "temperature": 0.5, "top_p": 0.9,
            "tools": [{"type": "function", "name": "f", "parameters": {}}], "tool_choice": "required",
            "parallel_tool_calls": False, "metadata": {"k": "v"}, "user": "u",
            "reasoning": {"effort": "low"},
            "text": {"format": {"type": "json_object"}, "verbosity": "low"}}  # fmt: skip
    response = chat_to_response({"model": "up", "choices": [{"message": {"content": "x"}}]},
                                parse_responses_request(json.dumps(body).encode()), **IDS)  # fmt: skip
    Response.model_validate(response)
    assert response["model"] == "up" and response["instructions"] == "be brief"
    assert (response["max_output_tokens"], response["temperature"], response["top_p"]) == (9, 0.5, 0.9)
    assert response["tool_choice"] == "required" and response["parallel_tool_calls"] is False
    assert response["text"] == {"format": {"type": "json_object"}, "verbosity": "low"}
    assert response["reasoning"] == {"effort": "low", "summary": None} and response["metadata"] == {"k": "v"}


def test_a_relay_failure_mid_stream_is_response_failed_with_the_output_so_far():
    translator = stream()
    translator.feed(chunk({"content": "par"}))
    events = parsed(translator.fail(429, "upstream_rate_limited", "Every key is rate limited."))
    assert [e for e, _ in events] == ["response.failed"]
    response = events[0][1]["response"]
    assert response["error"] == {"code": "rate_limit_exceeded", "message": "Every key is rate limited."}
    assert response["output"][0]["status"] == "incomplete" and response["output"][0]["content"][0]["text"] == "par"
    assert translator.feed(chunk({"content": "more"})) == b"" and translator.end() == b""


def test_a_failure_before_any_chunk_still_opens_with_response_created():
    events = parsed(stream().fail(504, "upstream_timeout", "No answer in time."))
    assert [e for e, _ in events] == ["response.created", "response.in_progress", "response.failed"]
    assert [d["sequence_number"] for _, d in events] == [0, 1, 2]


def test_interleaved_tool_calls_come_out_as_whole_items_one_after_another():
    events = parsed(run(stream(), "chat_interleaved_tools.sse"))
    added = [d["item"]["call_id"] for e, d in events if e == "response.output_item.added"]
    done = [(d["item"]["call_id"], d["item"]["arguments"]) for e, d in events if e == "response.output_item.done"]
    assert added == ["call_1", "call_2"]
    assert done == [("call_1", '{"path": "a.txt"}'), ("call_2", '{"dir": "/tmp"}')]
    opened = [e for e, _ in events if e.startswith("response.output_item")]
    assert opened == ["response.output_item.added", "response.output_item.done"] * 2  # never two open at once


def test_a_call_without_arguments_has_an_empty_object():
    translator = stream()
    calls = [{"index": 0, "id": "c1", "type": "function", "function": {"name": "now", "arguments": ""}}]
    out = translator.feed(chunk({"tool_calls": calls})) + translator.feed(chunk({}, "tool_calls"))
    out += translator.feed(b"[DONE]")
    done = [d for e, d in parsed(out) if e == "response.function_call_arguments.done"]
    assert done[0]["arguments"] == "{}"
