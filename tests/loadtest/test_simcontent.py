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
