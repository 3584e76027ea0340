"""Whatever a client sends is translated or refused with a 400, and whatever an upstream streams ends as well-formed
events: generated mutations of the fixture requests and generated chat chunks, through both protocols."""

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.protocol import InvalidRequest
from proxy.protocol.messages import MessagesStream, check_messages_request, messages_to_chat, parse_messages_request
from proxy.protocol.responses import (
    ResponsesStream,
    check_responses_request,
    parse_responses_request,
    responses_to_chat,
)

from .corpus import events, load

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 5000) | st.floats(allow_nan=False) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
NAMES = ["type", "role", "content", "text", "source", "id", "name", "input", "tool_use_id", "call_id", "output",
         "arguments", "tools", "format", "thinking", "signature", "image_url", "is_error", "summary"]  # fmt: skip


def paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from paths(value, (*prefix, i))


def mutate(data, body: dict) -> dict:
    body = copy.deepcopy(body)
    path = data.draw(st.sampled_from(list(paths(body))))
    value = data.draw(VALUES)
    if not path:
        return value if data.draw(st.booleans()) else body
    parent = body
    for step in path[:-1]:
        parent = parent[step]
    if isinstance(parent, dict) and data.draw(st.booleans()):
        parent[data.draw(st.sampled_from(NAMES) | st.text(max_size=6))] = value  # a field added
    else:
        parent[path[-1]] = value  # a field replaced
    return body


@pytest.mark.parametrize(
    "fixture, check, translate",
    [
        ("messages_tools.request.json", check_messages_request, messages_to_chat),
        ("responses_tools.request.json", check_responses_request, responses_to_chat),
    ],
)
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_a_mutated_request_is_translated_or_refused(fixture, check, translate, data):
    body = mutate(data, load(fixture))
    try:
        json.dumps(translate(check(body)))
    except InvalidRequest as exc:
        assert exc.status == 400


DELTAS = st.fixed_dictionaries(
    {},
    optional={
        "content": st.text(max_size=5) | VALUES,
        "reasoning_content": st.text(max_size=5),
        "tool_calls": st.lists(
            st.fixed_dictionaries(
                {"index": st.integers(0, 2)},
                optional={
                    "id": st.sampled_from(["c0", "c1", "c2"]),
                    "function": st.fixed_dictionaries(
                        {},
                        optional={
                            "name": st.sampled_from(["f", "g"]),
                            "arguments": st.sampled_from(["", "{", '"a"', ":1", "}", "{}", "[]", " "]),
                        },
                    ),
                },
            ),  # fmt: skip
            max_size=2,
        )
        | VALUES,
    },
)
CHUNKS = st.lists(
    st.one_of(
        st.builds(
            lambda d, f: {"choices": [{"index": 0, "delta": d, "finish_reason": f}]},
            DELTAS,
            st.none() | st.sampled_from(["stop", "length", "tool_calls", "content_filter"]),
        ),  # fmt: skip
        st.just({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}),
        st.just({"error": {"message": "boom", "type": "server_error"}}),
        st.builds(lambda c: {"choices": c}, VALUES | st.lists(VALUES, max_size=2)),
        st.builds(lambda d, f, u: {"choices": [{"delta": d, "finish_reason": f, "usage": u}], "usage": u},
                  VALUES, VALUES, VALUES),  # fmt: skip
        st.builds(lambda e: {"error": e}, VALUES),
        VALUES,
    ),
    max_size=12,
)
MESSAGES = parse_messages_request(
    b'{"model":"m","max_tokens":9,"stream":true,"messages":[{"role":"user","content":"x"}]}'
)
RESPONSES = parse_responses_request(b'{"model":"m","input":"x","stream":true}')


@settings(max_examples=300, deadline=None)
@given(CHUNKS, st.sampled_from(["done", "end", "fail"]))
def test_any_chat_stream_ends_as_well_formed_events(chunks, how):
    for translator in (MessagesStream(MESSAGES), ResponsesStream(RESPONSES)):
        out = b"".join(translator.feed(json.dumps(c).encode()) for c in chunks)
        if how == "done":
            out += translator.feed(b"[DONE]") + translator.end()
        elif how == "end":
            out += translator.end()
        else:
            out += translator.fail(502, "upstream_error", "The upstream failed.")
        assert translator.done
        names = [name for name, _ in events(out)]
        for name, payload in events(out):
            assert json.loads(payload)["type"] == name
        last = names[-1]
        assert last in ("message_stop", "error", "response.completed", "response.incomplete", "response.failed")
        starts = [n for n in names if n in ("content_block_start", "response.output_item.added")]
        stops = [n for n in names if n in ("content_block_stop", "response.output_item.done")]
        assert len(starts) - len(stops) in (0, 1)  # at most the block a failure cut short is left open
