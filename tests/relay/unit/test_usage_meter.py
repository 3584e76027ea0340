"""Usage read from bodies as they pass, sans I/O, fed bytes (proxy/protocol/_usage.py, _usagescan.py): every shape
we know, JSON answers in pieces of any size split anywhere, streams of events, the usage chunk cut or kept."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from proxy.protocol import (
    MAX_EVENT_BYTES,
    MAX_USAGE_BYTES,
    EventMeter,
    JSONUsage,
    ReportedUsage,
    UsageMeter,
    UsageStripper,
    carries_usage,
    usage_in,
)


def test_usage_in_every_shape():
    openai = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}
    moonshot = {"choices": [{"delta": {}, "usage": {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}}]}
    responses = {"type": "response.completed", "response": {"usage": {"input_tokens": 7, "output_tokens": 9,
                                                                      "total_tokens": 16}}}  # fmt: skip
    anthropic_start = {"type": "message_start", "message": {"usage": {"input_tokens": 25, "output_tokens": 1}}}
    embeddings = {"data": [], "usage": {"prompt_tokens": 600, "total_tokens": 600}}
    assert usage_in(openai) == ReportedUsage(3, 5, 8) and usage_in(moonshot).tokens == 6
    assert usage_in(responses) == ReportedUsage(7, 9, 16) and usage_in(anthropic_start).tokens == 26
    assert usage_in(embeddings) == ReportedUsage(600, None, 600) and usage_in(embeddings).tokens == 600
    assert usage_in({"usage": {"input_tokens": 40, "output_tokens": 110}}).tokens == 150  # no total: the sum
    for nothing in ({"usage": None}, {"usage": {"total_tokens": "8"}}, {"usage": {"total_tokens": True}}, [], "x",
                    {"choices": [{"delta": {}}]}, {"response": {"usage": None}}):  # fmt: skip
        assert usage_in(nothing) is None


def test_a_later_usage_updates_an_earlier_one():
    meter = UsageMeter()
    meter.event(b'data: {"type":"message_start","message":{"usage":{"input_tokens":25,"output_tokens":1}}}')
    meter.event(b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":15}}')
    assert meter.usage == ReportedUsage(25, 15, None) and meter.usage.tokens == 40


def test_carries_usage_skips_null_and_escaped():
    assert carries_usage(b'data: {"choices":[],"usage":{"total_tokens":1}}')
    assert carries_usage(b'{"usage" : {"total_tokens":1}}')
    assert not carries_usage(b'data: {"choices":[{"delta":{"content":"x"}}],"usage":null}')
    assert not carries_usage(b'{"usage": null}')
    assert not carries_usage(b'data: {"choices":[{"delta":{"content":"say \\"usage\\": 5"}}]}')
    assert carries_usage(b'{"usage":null,"choices":[{"usage":{"total_tokens":2}}]}')  # the second one counts


def embeddings(count: int, usage: dict | None, *, spaced: bool = False) -> bytes:
    vector = ",".join(f"{i / 1000 - 0.5:.6f}" for i in range(64))
    items = [{"object": "embedding", "index": i, "embedding": "@"} for i in range(count)]
    doc: dict = {"object": "list", "data": items, "model": 'm "usage" {x}'}
    if usage is not None:
        doc["usage"] = usage
    separators = (", ", ": ") if spaced else (",", ":")
    return json.dumps(doc, separators=separators).replace('"@"', f"[{vector}]").encode()


def scan(body: bytes, size: int) -> tuple[UsageMeter, bytes]:
    meter = UsageMeter()
    scanner = JSONUsage(meter)
    out = b"".join(scanner.feed(body[i : i + size]) for i in range(0, len(body), size)) + scanner.end()
    return meter, out


def test_json_usage_found_in_pieces_of_every_size():
    usage = {"prompt_tokens": 600, "total_tokens": 600, "details": {"cached": [1, {"x": "}"}]}}
    body = embeddings(50, usage, spaced=True)
    for size in (1, 2, 3, 7, 64, 4096, len(body)):
        meter, out = scan(body, size)
        assert out == body  # every byte passes on unchanged
        assert meter.usage == ReportedUsage(600, None, 600), size


# Everything that looks like a usage key and is not one: in strings (escaped quotes), in a key with an escaped quote
# before "usage", nested one level down; backslash runs of both parities, a long string of escaped quotes.
DECOYS = {
    "id": 'a\\"usage\\"', 'say "usage': {"total_tokens": 7}, "usage_x": {"usage": {"total_tokens": 99}},
    "choices": [{"message": {"content": 'a "usage": {"total_tokens": 5} \\ } \\\\\\' + '\\"x' * 300}}],
}


@given(st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=40), st.booleans())
def test_json_usage_at_any_split(cuts, pretty):
    usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    body = json.dumps({**DECOYS, "usage": usage, "after": ["usage", {"usage": {}}]}, indent=2 if pretty else None)
    body = body.encode()
    meter = UsageMeter()
    scanner = JSONUsage(meter)
    pos = 0
    out = []
    for cut in cuts:
        out.append(scanner.feed(body[pos : pos + cut]))
        pos += cut
    out.append(scanner.feed(body[pos:]))
    scanner.end()
    assert b"".join(out) == body and meter.usage == ReportedUsage(1, 2, 3)


def test_json_usage_of_decoys_only_is_none():
    body = json.dumps(DECOYS).encode()
    for size in (1, 7, 64, 65, len(body)):
        assert scan(body, size)[0].usage is None


def test_json_usage_only_at_the_top_level_and_as_an_object():
    nested = b'{"data":{"usage":{"total_tokens":9}},"object":"usage","x":["usage"]}'
    as_value = b'{"usage":"none","usage2":{"total_tokens":9}}'
    array = b'[{"usage":{"total_tokens":9}}]'
    for body in (nested, as_value, array, b"<html>usage</html>", b""):
        assert scan(body, 5)[0].usage is None, body


def test_json_usage_too_large_is_not_one():
    huge = {"total_tokens": 5, "pad": "x" * (MAX_USAGE_BYTES + 10)}
    assert scan(embeddings(1, huge), 1000)[0].usage is None


def test_event_meter_counts_events_and_reads_usage_in_any_event():
    usage = {"input_tokens": 20, "output_tokens": 130}
    done = {"type": "response.completed", "response": {"output": [{"text": "m " * 50_000}], "usage": usage}}
    stream = b"".join(
        b"event: x\ndata: " + json.dumps(e).encode() + b"\n\n"
        for e in [{"type": "response.created", "response": {"usage": None}}, {"delta": "m "}, {"delta": "m "}, done]
    )
    for size in (1000, 8192, len(stream)):
        meter = UsageMeter()
        events = EventMeter(meter)
        assert b"".join(events.feed(stream[i : i + size]) for i in range(0, len(stream), size)) == stream
        events.end()
        assert meter.events == 4 and meter.usage == ReportedUsage(20, 130, None) and meter.usage.tokens == 150


def test_event_meter_gives_up_on_an_event_too_large_and_keeps_its_count():
    meter = UsageMeter()
    events = EventMeter(meter)
    events.feed(b'data: {"delta":"a"}\n\ndata: {"delta":"b"}\n\n')
    events.feed(b'data: {"x":"' + b"y" * (MAX_EVENT_BYTES + 1))
    events.feed(b'","usage":{"total_tokens":3}}\n\ndata: [DONE]\n\n')
    events.end()
    assert meter.events == 2 and meter.usage is None


def test_stripper_cuts_the_usage_chunk_and_meters_every_event():
    openai = (b'data: {"choices":[{"delta":{"content":"a"}}],"usage":null}\n\n'
              b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}\n\n'
              b"data: [DONE]\n\n")  # fmt: skip
    meter = UsageMeter()
    stripper = UsageStripper(meter)
    out = b"".join(stripper.feed(openai[i : i + 7]) for i in range(0, len(openai), 7)) + stripper.end()
    assert out == b'data: {"choices":[{"delta":{"content":"a"}}],"usage":null}\n\ndata: [DONE]\n\n'
    assert meter.events == 3 and meter.usage == ReportedUsage(3, 5, 8) and stripper.usage is not None
    moonshot = b'data: {"choices":[{"delta":{},"finish_reason":"stop","usage":{"total_tokens":6}}]}\n\ndata: [DONE]'
    meter = UsageMeter()
    stripper = UsageStripper(meter)
    assert stripper.feed(moonshot) + stripper.end() == moonshot  # Moonshot's usage stays in its chunk: counted
    assert meter.events == 2 and meter.usage.tokens == 6 and stripper.usage is None
