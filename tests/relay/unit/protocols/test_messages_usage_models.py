"""Native Messages usage (what the relay charges for a Messages upstream), the model list in Anthropic's shape and
token counting."""

import json

import anthropic

from proxy.protocol.messages import (
    ESTIMATE_HEADER,
    MessagesUsageReader,
    anthropic_models,
    count_tokens_answer,
    count_tokens_chat,
    estimate_tokens,
    message_usage,
)

from .canned import canned_server
from .corpus import load, payloads


def test_a_native_stream_reports_input_and_cache_at_the_start_and_cumulative_output_at_the_end():
    reader = MessagesUsageReader()
    assert reader.usage is None
    for payload in payloads("messages_native.sse"):
        reader.feed(payload)
    usage = reader.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (25 + 100 + 2000, 15)
    assert (usage.cached_tokens, usage.cache_write_tokens) == (2000, 100)


def test_a_message_delta_with_input_tokens_replaces_the_starts():
    reader = MessagesUsageReader()
    reader.feed(b'{"type":"message_start","message":{"usage":{"input_tokens":0,"output_tokens":1}}}')
    reader.feed(b'{"type":"message_delta","delta":{},"usage":{"input_tokens":40,"output_tokens":9}}')
    reader.feed(b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"\\"usage\\""}}')
    reader.feed(b'not json but "usage"')
    assert (reader.usage.prompt_tokens, reader.usage.completion_tokens) == (40, 9)


def test_a_non_streamed_message_usage():
    body = b'{"type":"message","usage":{"input_tokens":3,"cache_read_input_tokens":4,"output_tokens":5}}'
    usage = message_usage(body)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (7, 5, 4)
    assert message_usage(b"{}") is None and message_usage(b"nope") is None


def test_the_model_list_is_what_the_sdk_reads_as_models():
    body = anthropic_models([{"id": "kimi-k2", "object": "model", "created": 1735689600, "owned_by": "moonshot"},
                             {"id": "moonshot-v1-8k", "object": "model"}, {"object": "model"}])  # fmt: skip
    with canned_server() as server:
        server.answer(body)
        with anthropic.Anthropic(api_key="k", base_url=server.url, max_retries=0) as client:
            models = list(client.models.list())
    assert [m.id for m in models] == ["kimi-k2", "moonshot-v1-8k"]
    assert models[0].created_at.isoformat() == "2025-01-01T00:00:00+00:00" and models[0].type == "model"
    assert json.loads(body)["has_more"] is False and json.loads(body)["last_id"] == "moonshot-v1-8k"


def test_count_tokens_takes_a_messages_body_without_max_tokens():
    body = load("messages_tools.request.json")
    for field in ("max_tokens", "stream", "temperature", "top_p", "stop_sequences", "metadata"):
        body.pop(field)
    chat = count_tokens_chat(json.dumps(body).encode())
    assert set(chat) == {"model", "messages", "tools", "tool_choice", "parallel_tool_calls"}


def test_an_estimate_says_it_is_one_and_reads_as_the_sdks_count():
    chat = {"messages": [{"role": "user", "content": "hello world!"}, {"role": "user", "content": "你好"}]}
    assert estimate_tokens(chat) == 3 + 2 + 2 * 4
    status, headers, body = count_tokens_answer(13, estimate=True)
    assert status == 200 and headers[ESTIMATE_HEADER] == "estimate"
    assert ESTIMATE_HEADER not in count_tokens_answer(13, estimate=False)[1]
    with canned_server() as server:
        server.answer(body, **{ESTIMATE_HEADER.replace("-", "_"): "estimate"})
        with anthropic.Anthropic(api_key="k", base_url=server.url, max_retries=0) as client:
            count = client.messages.count_tokens(model="m", messages=[{"role": "user", "content": "hi"}])
    assert count.input_tokens == 13
