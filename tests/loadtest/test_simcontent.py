"""The sim's pure content and byte builders."""

import json

from loadtest import simcontent

MSGS = [{"role": "user", "content": "Tell me about the moon"}]


def _events(include_usage=False, chunks=3, per_chunk=2):
    digest = simcontent.request_hash("m", MSGS)
    return simcontent.stream_events(
        completion_id="chatcmpl-x",
        created=1,
        model="m",
        words=simcontent.tokens(digest, chunks * per_chunk),
        chunks=chunks,
        tokens_per_chunk=per_chunk,
        prompt=simcontent.prompt_tokens(MSGS),
        include_usage=include_usage,
    )


def _parse(event: bytes) -> dict:
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    return json.loads(event[6:])


def test_stream_shape_moonshot_usage():
    events = [_parse(e.render(123)) for e in _events()]
    assert len(events) == 4
    assert [e["sim"] for e in events] == [{"ns": 123, "seq": k, "of": 4} for k in range(4)]
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in e["choices"][0]["delta"] for e in events[1:])
    final = events[-1]["choices"][0]
    assert final["finish_reason"] == "stop" and final["delta"] == {}
    assert final["usage"]["completion_tokens"] == 6
    assert final["usage"]["total_tokens"] == final["usage"]["prompt_tokens"] + 6


def test_stream_shape_include_usage():
    events = [_parse(e.render(0)) for e in _events(include_usage=True)]
    assert len(events) == 5 and events[-1]["sim"] == {"ns": 0, "seq": 4, "of": 5}
    assert "usage" not in events[-2]["choices"][0]
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 6


def test_compact_json_and_stamp_splice():
    event = _events()[1]
    assert b": " not in event.prefix[6:] and b", " not in event.prefix
    assert event.render(42) == event.prefix + b"42" + event.suffix


def test_tokens_deterministic():
    a = simcontent.request_hash("m", MSGS)
    b = simcontent.request_hash("m", [{"role": "user", "content": "something else"}])
    assert simcontent.tokens(a, 20) == simcontent.tokens(a, 20)
    assert simcontent.tokens(a, 20) != simcontent.tokens(b, 20)
    assert simcontent.tokens(a, 5) == simcontent.tokens(a, 20)[:5]
    assert all(w.strip() in simcontent.VOCABULARY for w in simcontent.tokens(a, 50))


def test_completion_matches_stream_text():
    digest = simcontent.request_hash("m", MSGS)
    words = simcontent.tokens(digest, 6)
    body = simcontent.completion(
        completion_id="c", created=1, model="m", words=words, chunks=3, tokens_per_chunk=2, prompt=4
    )
    obj = json.loads(body.render(7))
    streamed = "".join(_parse(e.render(0))["choices"][0]["delta"].get("content", "") for e in _events())
    assert obj["choices"][0]["message"] == {"role": "assistant", "content": streamed}
    assert obj["usage"] == {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}
    assert obj["sim"] == {"ns": 7, "seq": 0, "of": 1}


def test_prompt_tokens():
    assert simcontent.prompt_tokens(MSGS) == 5 + 3
    parts = [{"role": "user", "content": [{"type": "text", "text": "a b"}]}]
    assert simcontent.prompt_tokens(parts) == 2 + 3
    assert simcontent.prompt_tokens([{"role": "user", "content": "你好"}]) == 2 + 3
    assert simcontent.prompt_tokens(None) == 1


def test_error_bodies():
    assert json.loads(simcontent.error_body(429)) == {
        "error": {
            "message": json.loads(simcontent.error_body(429))["error"]["message"],
            "type": "rate_limit_reached_error",
        }
    }
    for status, kind in [
        (400, "invalid_request_error"),
        (401, "invalid_authentication_error"),
        (403, "exceeded_current_quota_error"),
        (404, "resource_not_found_error"),
        (500, "server_error"),
        (502, "server_error"),
    ]:
        error = json.loads(simcontent.error_body(status))["error"]
        assert error["type"] == kind and "code" not in error and error["message"]


# -- what the model says, whatever the protocol ----------------------------------------------------------


def test_tool_arguments_fit_the_schema():
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["c", "f"]},
            "days": {"type": "integer"},
            "ratio": {"type": ["number", "null"]},
            "flags": {"type": "array", "items": {"type": "boolean"}},
            "where": {"type": "object", "properties": {"lat": {"type": "number"}}},
            "kind": {"anyOf": [{"const": "x"}, {"type": "string"}]},
            "optional": {"type": "string"},
        },
        "required": ["city", "unit", "days", "ratio", "flags", "where", "kind"],
    }
    args = json.loads(simcontent.tool_arguments(schema, b"d"))
    assert set(args) == set(schema["required"])
    assert isinstance(args["city"], str) and args["unit"] == "c" and type(args["days"]) is int
    assert isinstance(args["ratio"], float) and args["flags"] == [True] and set(args["where"]) == {"lat"}
    assert args["kind"] == "x"
    assert simcontent.tool_arguments(schema, b"d") == simcontent.tool_arguments(schema, b"d")  # deterministic
    assert simcontent.tool_arguments(None, b"d") == "{}"
    assert json.loads(simcontent.tool_arguments({"type": "object", "properties": {"n": {"type": "integer"}}}, b"d"))


def test_tool_arguments_grow_a_free_string_to_the_length_asked():
    schema = {"type": "object", "properties": {"unit": {"type": "string", "enum": ["c"]}, "q": {"type": "string"}}}
    args = simcontent.tool_arguments(schema, b"d", min_length=200)
    assert len(args) >= 200 and json.loads(args)["unit"] == "c"
    deep = {"type": "object", "properties": {"a": {"$ref": "#"}}}
    assert json.loads(simcontent.tool_arguments(deep, b"d"))  # an untyped property is a word, not a recursion


def test_split_text_even_and_never_empty():
    assert simcontent.split_text("abcdefg", 3) == ["abc", "de", "fg"]
    assert simcontent.split_text("ab", 5) == ["a", "b"]
    assert simcontent.split_text("", 3) == [""]


def test_script_max_tokens_bounds_reasoning_and_text_together():
    answer = simcontent.script(b"d", chunks=99, tokens_per_chunk=2, prompt=4, output_tokens=7, reasoning_tokens=3)
    assert [len(p.split()) for p in answer.reasoning] == [2, 1]
    assert [len(p.split()) for p in answer.text] == [2, 2]
    assert answer.output_tokens == 7 and answer.reasoning_tokens == 3 and answer.stop == "length"
    assert answer.pieces == 4
    called = simcontent.script(b"d", chunks=3, tokens_per_chunk=1, prompt=4, tool=("f", {}), forced=True)
    assert called.text == () and called.tool.arguments == "{}" and called.stop == "tool"
    assert called.output_tokens == len(called.tool.pieces) == 1
    auto = simcontent.script(b"d", chunks=3, tokens_per_chunk=1, prompt=4, tool=("f", {}), tool_pieces=9)
    assert len(auto.text) == 3 and auto.output_tokens == 3 + len(auto.tool.pieces)


def test_layout_groups_block_events_into_timed_sends():
    from loadtest.sim._stream import layout

    events, firsts, content_end = layout(
        ["start"], [(["open0"], ["d0", "d1"], ["close0"]), (["open1"], ["e0"], ["close1"])], ["end"]
    )
    assert events == ["start", "open0", "d0", "d1", "close0", "open1", "e0", "close1", "end"]
    assert firsts == [0, 3, 4] and content_end == 7
    assert layout(["start"], [], ["end"]) == (["start", "end"], [0], 1)


def test_batches_join_each_send_around_one_stamp():
    from loadtest.sim._stream import Streamed, batches

    events = [simcontent.stamped(b'{"k":%d' % k, k, 3) for k in range(3)]
    reply = Streamed(events, [0, 1], 3, done=b"END")
    sends = batches(reply)
    assert [b"7".join(parts) for parts in sends] == [events[0].render(7), events[1].render(7) + events[2].render(7)
                                                    + b"END"]
    broken = batches(reply, malformed_at=1)
    assert b"7".join(broken[1]) == simcontent.MALFORMED_EVENT + events[2].render(7) + b"END"
