"""OpenAI Responses requests: the checks the API reference states, the translation onto chat completions (against a
chat request written by hand), a 400 naming the field for what cannot be translated, and the store hook."""

import inspect

import openai
import pytest

from proxy.protocol import InvalidRequest
from proxy.protocol.responses import StoreRequired, check_responses_request, parse_responses_request, responses_to_chat

from .canned import canned_server
from .corpus import load, raw, refused

BASE = {"model": "m", "input": "hi"}
IMAGE = "data:image/png;base64,iVBORw0KGgo="


def translate(**fields) -> dict:
    return responses_to_chat(check_responses_request({**BASE, **fields}))


def refusal(**fields) -> InvalidRequest:
    return refused(translate, **fields)


def test_the_fixture_request_translates_to_the_chat_request_written_from_the_references():
    request = parse_responses_request(raw("responses_tools.request.json"))
    assert (request.model, request.stream, request.store, request.previous_response_id) == (
        "kimi-k2-0905-preview", True, False, None)  # fmt: skip
    assert responses_to_chat(request) == load("responses_tools.chat.json")


def test_the_request_the_official_sdk_sends_passes_the_checks_and_translates():
    body = load("responses_tools.request.json")
    with canned_server() as server:
        server.answer(b"{}")
        with openai.OpenAI(api_key="k", base_url=server.url + "/v1", max_retries=0) as client:
            typed = inspect.signature(client.responses.create).parameters
            try:
                client.responses.create(**{k: v for k, v in body.items() if k in typed and k != "stream"},
                                        extra_body={k: v for k, v in body.items() if k not in typed})  # fmt: skip
            except Exception:  # noqa: BLE001 - the answer does not matter here, the request does
                pass
        path, sent = server.requests[0]
    assert path == "/v1/responses"
    assert responses_to_chat(parse_responses_request(sent)) == {
        k: v for k, v in load("responses_tools.chat.json").items() if k not in ("stream", "stream_options")
    }


def test_a_string_input_is_one_user_message_and_a_model_may_be_left_to_the_relay():
    assert responses_to_chat(check_responses_request({"input": "hi"})) == {
        "messages": [{"role": "user", "content": "hi"}]
    }


@pytest.mark.parametrize(
    "body, field",
    [
        ("x", "body"),
        ({**BASE, "model": ""}, "model"),
        ({**BASE, "input": 3}, "input"),
        ({**BASE, "input": [{"role": "robot", "content": "x"}]}, "input.0.role"),
        ({**BASE, "input": [{"content": "x"}]}, "input.0.type"),
        ({**BASE, "input": [{"role": "user", "content": 5}]}, "input.0.content"),
        ({**BASE, "input": [{"role": "user", "content": [{"text": "x"}]}]}, "input.0.content.0"),
        ({**BASE, "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input.0.call_id"),
        ({**BASE, "input": [{"type": "function_call_output", "call_id": "c", "output": 3}]}, "input.0.output"),
        ({**BASE, "temperature": 2.5}, "temperature"),
        ({**BASE, "max_output_tokens": 0}, "max_output_tokens"),
        ({**BASE, "store": "no"}, "store"),
        ({**BASE, "tools": [{"name": "f"}]}, "tools.0.type"),
        ({**BASE, "tools": [{"type": "function"}]}, "tools.0.name"),
        ({**BASE, "tool_choice": "sometimes"}, "tool_choice"),
        ({**BASE, "text": {"format": {"type": "yaml"}}}, "text.format.type"),
        ({**BASE, "text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
        ({**BASE, "include": "all"}, "include"),
    ],
)
def test_invalid_requests_are_refused_naming_the_field(body, field):
    with pytest.raises(InvalidRequest) as info:
        check_responses_request(body)
    assert info.value.status == 400 and str(info.value).startswith(f"{field}: ")


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"conversation": "conv_1"}, "conversation"),
        ({"prompt": {"id": "p"}}, "prompt"),
        ({"max_tool_calls": 3}, "max_tool_calls"),
        ({"background": True}, "background"),
        ({"truncation": "auto"}, "truncation"),
        ({"include": ["message.output_text.logprobs"]}, "include.0"),
        ({"tools": [{"type": "web_search"}]}, "tools.0"),
        ({"tools": [{"type": "function", "name": "f", "defer_loading": True}]}, "tools.0.defer_loading"),
        ({"tool_choice": {"type": "function", "name": "f"}}, "tool_choice"),
        ({"tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "file_search"}}, "tool_choice"),
        ({"reasoning": {"effort": "low", "mode": "pro"}}, "reasoning.mode"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input.0"),
        ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "input.0"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input.0.content.0"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]}, "input.0.content.0"),
        ({"input": [{"type": "reasoning", "id": "rs", "summary": [], "encrypted_content": "gAAA"}]}, "input.0"),
        ({"input": [{"type": "function_call_output", "call_id": "c9", "output": "x"}]}, "input.0.call_id"),
        (
            {
                "input": [
                    {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                    {"role": "user", "content": "next"},
                ]
            },
            "input.1",
        ),  # fmt: skip
    ],
)
def test_what_cannot_be_translated_is_a_400_naming_the_field(fields, field):
    assert str(refusal(**fields)).startswith(f"{field}: ")


def test_a_stored_conversation_needs_the_store_hook():
    for fields, field in [({"previous_response_id": "resp_1"}, "previous_response_id"), ({"store": True}, "store")]:
        with pytest.raises(StoreRequired) as info:
            translate(**fields)
        assert info.value.field == field and info.value.status == 400 and info.value.code == "store_required"
    answer = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "one"}]}
    history = [{"role": "user", "content": "first"}, answer]
    request = check_responses_request({**BASE, "previous_response_id": "resp_1", "store": True, "input": "second"})
    assert responses_to_chat(request, history=history, store=True)["messages"] == [
        {"role": "user", "content": "first"}, {"role": "assistant", "content": "one"},
        {"role": "user", "content": "second"}]  # fmt: skip
    assert translate(store=False)["messages"] == [{"role": "user", "content": "hi"}]


def test_what_only_steers_openais_own_service_is_ignored():
    chat = translate(metadata={"a": "b"}, stream_options={"include_obfuscation": False}, truncation="disabled",
                     include=["reasoning.encrypted_content", "web_search_call.action.sources"], background=False,
                     reasoning={"summary": "auto"})  # fmt: skip
    assert chat == {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_function_calls_and_outputs_pair_into_assistant_tool_calls_and_tool_messages():
    items = [{"role": "user", "content": "weather?"},
             {"type": "function_call", "call_id": "a", "name": "w", "arguments": "{\"c\":1}"},
             {"type": "function_call", "call_id": "b", "name": "w", "arguments": "{\"c\":2}"},
             {"type": "function_call_output", "call_id": "b", "output": [
                 {"type": "input_text", "text": "sunny"}, {"type": "input_image", "image_url": IMAGE}]},
             {"type": "function_call_output", "call_id": "a", "output": "rain"},
             {"type": "function_call", "call_id": "c", "name": "w", "arguments": "{}"},
             {"type": "function_call_output", "call_id": "c", "output": "fog"},
             {"role": "assistant", "content": [{"type": "output_text", "text": "Mixed"}]}]  # fmt: skip
    messages = translate(input=items)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool", "user", "assistant", "tool",
                                             "assistant"]  # fmt: skip
    assert [c["id"] for c in messages[1]["tool_calls"]] == ["a", "b"] and messages[1]["content"] is None
    assert messages[2] == {"role": "tool", "tool_call_id": "b", "content": "sunny"}
    assert messages[4] == {"role": "user", "content": [{"type": "image_url", "image_url": {"url": IMAGE}}]}
    assert messages[7] == {"role": "assistant", "content": "Mixed"}


def test_tools_and_choices_map():
    tools = [{"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}, "strict": True}]
    chat = translate(tools=tools, tool_choice={"type": "function", "name": "f"}, parallel_tool_calls=False)
    function = {"name": "f", "description": "d", "parameters": {"type": "object"}, "strict": True}
    assert chat["tools"] == [{"type": "function", "function": function}]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert chat["parallel_tool_calls"] is False
    assert "parallel_tool_calls" not in translate(parallel_tool_calls=True)  # only with tools, as chat requires
    assert translate(text={"format": {"type": "json_object"}})["response_format"] == {"type": "json_object"}
    assert "response_format" not in translate(text={"format": {"type": "text"}})
