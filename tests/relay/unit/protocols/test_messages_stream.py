"""Chat-completions streams and answers translated into Anthropic Messages, checked three ways: against the events
written by hand from the streaming reference, against the official SDK's typed event models, and by the SDK's own
client, which reads the bytes over a socket and must rebuild the same Message as the non-stream translation."""

import json

import anthropic
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from pydantic import TypeAdapter

from proxy.protocol import MalformedAnswer
from proxy.protocol.messages import PING, MessagesStream, chat_to_message, parse_messages_request

from .canned import canned_server
from .corpus import load, parsed, raw, run

BODY = {"model": "gpt-4o-mini", "max_tokens": 256, "stream": True, "messages": [{"role": "user", "content": "Hello"}]}
REQUEST = parse_messages_request(json.dumps(BODY).encode())
STREAMS = ["chat_text", "chat_tools", "chat_moonshot_reasoning", "chat_interleaved_tools", "chat_cut", "chat_error",
           "chat_length"]  # fmt: skip
WHOLE = ["chat_text", "chat_tools", "chat_moonshot_reasoning"]  # with a non-streamed twin (.json)
EVENT = TypeAdapter(RawMessageStreamEvent)


def chunk(delta: dict, finish: str | None = None, **choice) -> bytes:
    """A chat stream chunk; ``choice``: more fields of ``choices[0]``."""
    return json.dumps({"id": "c", "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                                                             **choice}]}).encode()  # fmt: skip


@pytest.mark.parametrize("name", STREAMS)
def test_the_events_are_those_the_reference_gives(name):
    assert parsed(run(MessagesStream(REQUEST), f"{name}.sse")) == parsed(raw(f"{name}.messages.sse"))


@pytest.mark.parametrize("name", STREAMS)
def test_every_event_validates_as_the_sdks_typed_event(name):
    for event, data in parsed(run(MessagesStream(REQUEST), f"{name}.sse")):
        assert data["type"] == event
        if event == "error":
            ErrorResponse.model_validate(data)
        else:
            EVENT.validate_python(data)


@pytest.mark.parametrize("name", WHOLE)
def test_the_sdk_rebuilds_the_non_stream_translation(name):
    expected = Message.model_validate(chat_to_message(load(f"{name}.json"), REQUEST))
    with canned_server() as server:
        server.answer(run(MessagesStream(REQUEST), f"{name}.sse"), content_type="text/event-stream")
        with anthropic.Anthropic(api_key="k", base_url=server.url, max_retries=0) as client:
            with client.messages.stream(**{k: v for k, v in BODY.items() if k != "stream"}) as stream:
                final = stream.get_final_message()
    assert final.model_dump(exclude_none=True) == expected.model_dump(exclude_none=True)
    assert final.content  # the stream was not empty


@pytest.mark.parametrize("name", WHOLE)
def test_the_sdk_reads_the_non_stream_translation(name):
    translated = chat_to_message(load(f"{name}.json"), REQUEST)
    with canned_server() as server:
        server.answer(json.dumps(translated).encode())
        with anthropic.Anthropic(api_key="k", base_url=server.url, max_retries=0) as client:
            message = client.messages.create(**{k: v for k, v in BODY.items() if k != "stream"})
    assert message.model_dump(exclude_none=True) == Message.model_validate(translated).model_dump(exclude_none=True)


def test_the_sdk_raises_the_overloaded_error_of_a_failed_stream():
    with canned_server() as server:
        server.answer(run(MessagesStream(REQUEST), "chat_error.sse"), content_type="text/event-stream")
        with anthropic.Anthropic(api_key="k", base_url=server.url, max_retries=0) as client:
            with pytest.raises(anthropic.APIStatusError, match="overloaded"):
                with client.messages.stream(**{k: v for k, v in BODY.items() if k != "stream"}) as stream:
                    stream.get_final_message()


def test_the_non_stream_translation_maps_usage_stop_and_blocks():
    message = chat_to_message(load("chat_tools.json"), REQUEST)
    assert message["id"] == "msg_chatcmpl-456" and message["model"] == "gpt-4o-mini"
    assert [b["type"] for b in message["content"]] == ["text", "tool_use", "tool_use"]
    assert message["content"][1] == {"type": "tool_use", "id": "call_abc", "name": "get_weather",
                                     "input": {"location": "Paris, France"}}  # fmt: skip
    assert message["stop_reason"] == "tool_use" and message["stop_sequence"] is None
    assert message["usage"] == {"input_tokens": 18, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 64,
                                "output_tokens": 41}  # fmt: skip
    thinking = chat_to_message(load("chat_moonshot_reasoning.json"), REQUEST)["content"][0]
    assert thinking == {"type": "thinking", "thinking": "The user greets me. I greet back.", "signature": ""}


@pytest.mark.parametrize(
    "finish, extra, stop, expected",
    [
        ("stop", {}, (), ("end_turn", None)),
        ("length", {}, (), ("max_tokens", None)),
        ("content_filter", {}, (), ("refusal", None)),
        ("tool_calls", {}, (), ("tool_use", None)),
        ("stop", {"stop_reason": "END"}, ("END",), ("stop_sequence", "END")),  # vLLM names the matched stop string
        ("stop", {"matched_stop": "END"}, ("END",), ("stop_sequence", "END")),  # SGLang
        ("stop", {"stop_reason": "END"}, (), ("end_turn", None)),  # not one the client asked for
        (None, {}, (), ("end_turn", None)),
    ],
)
def test_stop_reasons(finish, extra, stop, expected):
    body = dict(BODY, stop_sequences=list(stop)) if stop else BODY
    request = parse_messages_request(json.dumps(body).encode())
    answer = {"id": "c", "choices": [{"index": 0, "message": {"content": "x"}, "finish_reason": finish, **extra}]}
    message = chat_to_message(answer, request)
    assert (message["stop_reason"], message["stop_sequence"]) == expected
    stream = MessagesStream(request)
    out = stream.feed(chunk({"content": "x"})) + stream.feed(chunk({}, finish, **extra) if finish else b"[DONE]")
    out += stream.feed(b"[DONE]") + stream.end()
    delta = [data for event, data in parsed(out) if event == "message_delta"][0]["delta"]
    assert (delta["stop_reason"], delta["stop_sequence"]) == expected


def test_usage_in_a_separate_last_chunk_waits_for_it():
    stream = MessagesStream(REQUEST)
    out = stream.feed(chunk({"content": "hi"})) + stream.feed(chunk({}, "stop"))
    assert [e for e, _ in parsed(out)][-1] == "content_block_stop"  # the content is over; the usage may still come
    out = stream.feed(
        json.dumps({"id": "c", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}).encode()
    )
    assert [e for e, _ in parsed(out)] == ["message_delta", "message_stop"]  # the block closed with the finish
    assert parsed(out)[0][1]["usage"]["input_tokens"] == 5 and stream.done
    assert stream.feed(b"[DONE]") == b"" and stream.end() == b""
    assert (stream.usage.prompt_tokens, stream.usage.completion_tokens) == (5, 2)


def test_a_stream_without_usage_ends_at_done_with_zero_output_tokens():
    stream = MessagesStream(REQUEST)
    out = stream.feed(chunk({"content": "hi"})) + stream.feed(chunk({}, "stop")) + stream.feed(b"[DONE]")
    assert parsed(out)[-2][1]["usage"] == {"output_tokens": 0} and stream.usage is None


def test_a_body_that_ends_after_the_finish_reason_without_done_completes():
    stream = MessagesStream(REQUEST)
    out = stream.feed(chunk({"content": "hi"})) + stream.feed(chunk({}, "stop")) + stream.end()
    assert [e for e, _ in parsed(out)][-1] == "message_stop"


def test_done_without_a_finish_reason_is_an_end_turn():
    stream = MessagesStream(REQUEST)
    out = stream.feed(chunk({"content": "hi"})) + stream.feed(b"[DONE]")
    assert [d for e, d in parsed(out) if e == "message_delta"][0]["delta"]["stop_reason"] == "end_turn"


def test_a_relay_failure_mid_stream_is_an_error_event_and_the_end():
    stream = MessagesStream(REQUEST)
    stream.feed(chunk({"content": "hi"}))
    out = stream.fail(504, "upstream_timeout", "The upstream did not answer in time.")
    assert parsed(out) == [
        (
            "error",
            {"type": "error", "error": {"type": "timeout_error", "message": "The upstream did not answer in time."}},
        )
    ]
    assert stream.feed(chunk({"content": "more"})) == b"" and stream.end() == b"" and stream.fail(500, "x", "y") == b""


def test_events_start_with_the_first_upstream_chunk_not_before():
    stream = MessagesStream(REQUEST, input_tokens=7, message_id="msg_given")
    first = parsed(stream.feed(chunk({"role": "assistant", "content": ""})))
    assert [e for e, _ in first] == ["message_start"]
    assert first[0][1]["message"]["id"] == "msg_given" and first[0][1]["message"]["usage"]["input_tokens"] == 7


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"{not json", "not a JSON object"),
        (b"[1]", "not a JSON object"),
        (chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}) + b"\n", "without a name"),
    ],
)
def test_a_malformed_upstream_stream_ends_with_an_api_error(payload, message):
    stream = MessagesStream(REQUEST)
    out = stream.feed(chunk({"content": "hi"})) + stream.feed(payload.strip()) + stream.feed(b"[DONE]")
    error = parsed(out)[-1]
    assert error[0] == "error" and error[1]["error"]["type"] == "api_error" and message in error[1]["error"]["message"]


def test_tool_arguments_that_are_not_json_end_the_stream_with_an_error():
    stream = MessagesStream(REQUEST)
    calls = [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{oops"}}]
    out = stream.feed(chunk({"tool_calls": calls})) + stream.feed(chunk({}, "tool_calls")) + stream.feed(b"[DONE]")
    assert parsed(out)[-1][0] == "error" and b"content_block_stop" not in out
    with pytest.raises(MalformedAnswer):
        chat_to_message({"choices": [{"message": {"tool_calls": [{"id": "c", "function": {"name": "f",
                        "arguments": "{oops"}}]}, "finish_reason": "tool_calls"}]}, REQUEST)  # fmt: skip


def test_cut_tool_arguments_at_max_tokens_are_not_an_error():
    calls = [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": '{"a": "lo'}}]
    stream = MessagesStream(REQUEST)
    out = stream.feed(chunk({"tool_calls": calls})) + stream.feed(chunk({}, "length")) + stream.feed(b"[DONE]")
    assert [e for e, _ in parsed(out)][-3:] == ["content_block_stop", "message_delta", "message_stop"]
    answer = {"choices": [{"message": {"tool_calls": [{"id": "c", "function": calls[0]["function"]}]},
                           "finish_reason": "length"}]}  # fmt: skip
    assert chat_to_message(answer, REQUEST)["content"][0]["input"] == {}


def test_text_that_is_not_valid_utf8_as_a_string_still_streams():
    stream = MessagesStream(REQUEST)
    out = stream.feed(b'{"choices":[{"index":0,"delta":{"content":"a\\ud800b"}}]}')
    assert parsed(out)[-1][1]["delta"]["text"] == "a\ud800b"


def test_ping_is_the_heartbeat_the_sdk_skips():
    assert parsed(PING) == [("ping", {"type": "ping"})]
