"""Anthropic Messages requests: the checks the API reference states, the translation onto chat completions (against
a chat request written by hand), and a 400 naming the field for whatever cannot be translated."""

import copy
import inspect
import json

import anthropic
import pytest

from proxy.protocol import InvalidRequest
from proxy.protocol.messages import check_messages_request, messages_to_chat, parse_messages_request

from .canned import canned_server
from .corpus import load, raw, refused

BASE = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


def translate(**fields) -> dict:
    body = {**BASE, **fields}
    return messages_to_chat(check_messages_request(body))


def refusal(**fields) -> InvalidRequest:
    return refused(translate, **fields)


def test_the_fixture_request_translates_to_the_chat_request_written_from_the_references():
    request = parse_messages_request(raw("messages_tools.request.json"))
    assert (request.model, request.stream, request.max_tokens) == ("kimi-k2-0905-preview", True, 4096)
    assert messages_to_chat(request) == load("messages_tools.chat.json")


def test_the_request_the_official_sdk_sends_passes_the_checks_and_translates():
    body = load("messages_tools.request.json")
    with canned_server() as server:
        server.answer(json.dumps({"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [],
                                  "stop_reason": "end_turn", "stop_sequence": None,
                                  "usage": {"input_tokens": 1, "output_tokens": 1}}).encode())  # fmt: skip
        with anthropic.Anthropic(api_key="k", base_url=server.url, max_retries=0) as client:
            typed = inspect.signature(client.messages.create).parameters  # the rest as the SDK's extra_body
            client.messages.create(**{k: v for k, v in body.items() if k in typed and k != "stream"},
                                   extra_body={k: v for k, v in body.items() if k not in typed})  # fmt: skip
            path, sent = server.requests[0]
    assert path == "/v1/messages"
    assert messages_to_chat(parse_messages_request(sent)) == {
        k: v for k, v in load("messages_tools.chat.json").items() if k not in ("stream", "stream_options")
    }


@pytest.mark.parametrize(
    "body, field",
    [
        ([], "body"),
        ({"max_tokens": 1, "messages": BASE["messages"]}, "model"),
        ({"model": "m", "messages": BASE["messages"]}, "max_tokens"),
        ({**BASE, "max_tokens": "10"}, "max_tokens"),
        ({**BASE, "max_tokens": True}, "max_tokens"),
        ({**BASE, "messages": []}, "messages"),
        ({**BASE, "messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
        ({**BASE, "messages": [{"role": "user", "content": ""}]}, "messages.0"),
        ({**BASE, "messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages.0.content.0.text"),
        (
            {
                **BASE,
                "messages": [{"role": "user", "content": [{"type": "tool_use", "id": "a", "name": "f", "input": {}}]}],
            },
            "messages.0.content.0",
        ),  # fmt: skip
        (
            {
                **BASE,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "x"}}
                        ],
                    }
                ],
            },
            "messages.0.content.0.source.media_type",
        ),  # fmt: skip
        ({**BASE, "temperature": 1.5}, "temperature"),
        ({**BASE, "top_p": -0.1}, "top_p"),
        ({**BASE, "stop_sequences": "END"}, "stop_sequences"),
        ({**BASE, "stream": "yes"}, "stream"),
        ({**BASE, "system": 3}, "system"),
        ({**BASE, "tools": [{"name": "f"}]}, "tools.0.input_schema"),
        ({**BASE, "tool_choice": {"type": "maybe"}}, "tool_choice"),
        ({**BASE, "tool_choice": {"type": "tool"}}, "tool_choice.name"),
        ({**BASE, "thinking": {"type": "enabled", "budget_tokens": 100}}, "thinking.budget_tokens"),
        (
            {**BASE, "max_tokens": 2000, "thinking": {"type": "enabled", "budget_tokens": 4000}},
            "thinking.budget_tokens",
        ),
        ({**BASE, "metadata": {"user_id": 5}}, "metadata.user_id"),
    ],
)
def test_invalid_requests_are_refused_naming_the_field(body, field):
    with pytest.raises(InvalidRequest) as info:
        check_messages_request(body)
    assert info.value.status == 400 and str(info.value).startswith(f"{field}: ")


def test_a_final_assistant_message_may_be_empty_a_prefill():
    body = {**BASE, "messages": BASE["messages"] + [{"role": "assistant", "content": ""}]}
    assert messages_to_chat(check_messages_request(body))["messages"][-1] == {"role": "assistant", "content": ""}


def test_unknown_fields_and_blocks_pass_the_checks_for_a_native_upstream():
    body = {**BASE, "context_management": {}, "messages": [{"role": "user", "content": [{"type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": "x"}}]}]}  # fmt: skip
    assert check_messages_request(body).data is body


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"top_k": 5}, "top_k"),
        ({"container": "c"}, "container"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"metadata": {"user_id": "u", "tier": "x"}}, "metadata.tier"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}
                        ],
                    }
                ]
            },
            "messages.0.content.0",
        ),  # fmt: skip
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}
                ]
            },
            "messages.0.content.0.source",
        ),  # fmt: skip
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "x", "citations": [{"x": 1}]}]}]},
            "messages.0.content.0.citations",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "abc"}]},
                ]
            },
            "messages.1.content.0",
        ),  # fmt: skip
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0"),
        ({"tools": [{"name": "f", "input_schema": {}, "defer_loading": True}]}, "tools.0.defer_loading"),
        ({"tool_choice": {"type": "any"}}, "tool_choice"),
        ({"output_config": {"format": {"type": "text"}}}, "output_config.format"),
    ],
)
def test_what_cannot_be_translated_is_a_400_naming_the_field(fields, field):
    assert str(refusal(**fields)).startswith(f"{field}: ")


def test_tool_calls_and_results_must_pair_up_as_the_api_requires():
    call = {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]}
    unanswered = [{"role": "user", "content": "hi"}, call, {"role": "user", "content": "and?"}]
    assert "t1" in str(refusal(messages=unanswered))
    stray = [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t9", "content": "x"}]}]
    assert str(refusal(messages=stray)).startswith("messages.0.content.0.tool_use_id: ")


def test_tool_results_go_right_after_their_call_whatever_their_place_in_the_turn():
    messages = [{"role": "user", "content": "go"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
                                                  {"type": "tool_use", "id": "t2", "name": "g", "input": {}}]},
                {"role": "user", "content": [{"type": "text", "text": "results:"},
                                             {"type": "tool_result", "tool_use_id": "t2", "content": "two",
                                              "is_error": True},
                                             {"type": "tool_result", "tool_use_id": "t1"}]}]  # fmt: skip
    chat = translate(messages=messages)["messages"]
    assert [m["role"] for m in chat] == ["user", "assistant", "tool", "tool", "user"]
    assert chat[1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
        {"id": "t2", "type": "function", "function": {"name": "g", "arguments": "{}"}}]}  # fmt: skip
    assert chat[2] == {"role": "tool", "tool_call_id": "t2", "content": "Error: two"}
    assert chat[3] == {"role": "tool", "tool_call_id": "t1", "content": ""}
    assert chat[4] == {"role": "user", "content": "results:"}


def test_consecutive_turns_of_one_role_are_one_turn():
    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": [{"type": "text", "text": "b"}]},
                {"role": "assistant", "content": "c"}, {"role": "assistant", "content": "d"}]  # fmt: skip
    assert translate(messages=messages)["messages"] == [{"role": "user", "content": "a\n\nb"},
                                                        {"role": "assistant", "content": "c\n\nd"}]  # fmt: skip


def test_sampling_and_switches_map_or_are_left_out():
    ignored = {"service_tier": "auto", "cache_control": {"type": "ephemeral"}, "thinking": {"type": "adaptive"}}
    chat = translate(temperature=0, top_p=1, stop_sequences=[], stream=False, metadata={"user_id": None}, **ignored)
    assert chat == {"model": "m", "messages": BASE["messages"], "max_tokens": 10, "temperature": 0, "top_p": 1}
    assert translate(thinking={"type": "disabled"})["thinking"] == {"type": "disabled"}
    assert translate(tool_choice={"type": "none"}) == translate()  # nothing to choose from
    chat = translate(output_config={"effort": "high", "format": {"type": "json_schema", "schema": {"type": "object"}}})
    assert chat["reasoning_effort"] == "high"
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": {"type": "object"}, "strict": True},
    }


def test_tool_choices_map():
    tools = [{"name": "f", "input_schema": {"type": "object"}, "strict": True}]
    assert translate(tools=tools)["tools"] == [{"type": "function", "function": {"name": "f",
                                               "parameters": {"type": "object"}, "strict": True}}]  # fmt: skip
    for choice, expected in [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "f"}, {"type": "function", "function": {"name": "f"}}),
    ]:
        assert translate(tools=tools, tool_choice=choice)["tool_choice"] == expected


def test_a_system_turn_in_messages_is_a_system_message_in_place():
    messages = [{"role": "system", "content": "rules"}, {"role": "user", "content": "hi"}]
    assert translate(messages=messages)["messages"][0] == {"role": "system", "content": "rules"}


def test_translation_leaves_the_request_untouched():
    body = load("messages_tools.request.json")
    before = copy.deepcopy(body)
    messages_to_chat(check_messages_request(body))
    assert body == before
