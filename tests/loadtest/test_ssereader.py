"""The load generator's SSE reader (loadtest.ssereader): the WHATWG rules, every split of a read, and the
relay's own parser fed the same streams.

The load generator must not grade the relay with the relay's parser, so it has its own. Here both read the
same tricky streams at every byte boundary and must agree with each other and with the standard.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtest.ssereader import BOM, Event, SSEReader
from proxy.protocol import EventSplitter, event_data

# ---------------------------------------------------------------------------------------------------------
# A literal reading of the standard: the whole stream at once, one line at a time (slow, obviously right).


def spec_events(stream: bytes) -> tuple[list[Event], int | None]:
    """The events the WHATWG "interpreting an event stream" steps dispatch, and the last retry value."""
    if stream.startswith(BOM):
        stream = stream[len(BOM) :]
    events: list[Event] = []
    data, kind, id_buffer, retry = b"", b"", b"", None
    i, n = 0, len(stream)
    while True:
        j = i
        while j < n and stream[j] not in b"\r\n":
            j += 1
        if j == n:
            break  # the stream ended without an end of line: pending data is discarded
        line = stream[i:j]
        i = j + 2 if stream[j : j + 2] == b"\r\n" else j + 1
        if not line:  # dispatch
            last_event_id = id_buffer
            if not data:
                kind = b""
                continue
            if data.endswith(b"\n"):
                data = data[:-1]
            events.append(Event(kind or b"message", data, last_event_id))
            data, kind = b"", b""
            continue
        if line.startswith(b":"):
            continue
        if b":" in line:
            field, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
        else:
            field, value = line, b""
        if field == b"event":
            kind = value
        elif field == b"data":
            data += value + b"\n"
        elif field == b"id":
            if b"\0" not in value:
                id_buffer = value
        elif field == b"retry":
            if value and all(0x30 <= c <= 0x39 for c in value):
                retry = int(value)
    return events, retry


def splits(stream: bytes):
    """The stream whole, cut once at every byte boundary, and one byte per read."""
    yield [stream]
    for i in range(1, len(stream)):
        yield [stream[:i], stream[i:]]
    yield [stream[i : i + 1] for i in range(len(stream))]


def read_events(reads: list[bytes]) -> tuple[list[Event], SSEReader]:
    reader = SSEReader()
    out: list[Event] = []
    for r in reads:
        out += reader.feed_events(r)
    return out, reader


def read_data(reads: list[bytes]) -> list[bytes]:
    reader = SSEReader()
    out: list[bytes] = []
    for r in reads:
        out += reader.feed(r)
    return out


def relay_data(reads: list[bytes]) -> list[bytes]:
    """What the relay's parser makes of the same reads: EventSplitter, then event_data (None: no data)."""
    splitter = EventSplitter()
    out: list[bytes] = []
    for r in reads:
        for event in splitter.feed(r):
            payload = event_data(event)
            if payload is not None:
                out.append(payload)
    for event in splitter.end():
        payload = event_data(event)
        if payload is not None:
            out.append(payload)
    return out


# ---------------------------------------------------------------------------------------------------------
# The streams, with the data the standard gives.

CHUNK = b'{"id":"c","choices":[{"index":0,"delta":{"content":"x"}}]}'

AGREED = {
    "LF": (b"data: " + CHUNK + b"\n\ndata: [DONE]\n\n", [CHUNK, b"[DONE]"]),
    "CRLF": (b"data: " + CHUNK + b"\r\n\r\ndata: [DONE]\r\n\r\n", [CHUNK, b"[DONE]"]),
    "CR only, one line per event": (b"data: " + CHUNK + b"\r\rdata: [DONE]\r\r", [CHUNK, b"[DONE]"]),
    "multi-line data, CRLF": (b"data: a\r\ndata: b\r\n\r\n", [b"a\nb"]),
    "multi-line data, LF": (b"data: {\ndata: }\n\ndata: [DONE]\n\n", [b"{\n}", b"[DONE]"]),
    "comments": (b": ping\n\n: keep-alive\ndata: a\n: between\ndata: b\n\n:x\n\n", [b"a\nb"]),
    "data: without space": (b"data:" + CHUNK + b"\n\ndata:[DONE]\n\n", [CHUNK, b"[DONE]"]),
    "two spaces: one is kept": (b"data:  a\n\n", [b" a"]),
    "empty data": (b"data:\n\ndata: \n\n", [b"", b""]),
    "event, id, retry and unknown fields": (b"event: x\nid: 7\nretry: 10\nfoo: bar\ndata: a\n\n", [b"a"]),
    "no data field: nothing dispatched": (b"event: x\nid: 1\n\n: c\n\n", []),
    "extra blank lines": (b"\n\n\ndata: a\n\n\n\n\ndata: b\n\n\n", [b"a", b"b"]),
    "field name with a space is not data": (b"data : a\n\ndata: b\n\n", [b"b"]),
    "a colon in the value": (b'data: {"a":"b:c"}\n\n', [b'{"a":"b:c"}']),
    "unterminated last event is dropped": (b"data: a\n\ndata: b\n", [b"a"]),
    "a BOM later in the stream is content": (b"data: a\n\n" + BOM + b"data: b\n\n", [b"a"]),
    # Mixed line breaks (the relay's splitter once missed these; both parsers now follow the standard).
    "CR-only line breaks inside an event": (b"data: a\rdata: b\r\r", [b"a\nb"]),
    "LF line, then a CRLF blank line": (b"data: a\n\r\n", [b"a"]),
    "LF line, then a CR blank line": (b"data: a\n\r", [b"a"]),
    "CRLF line, then a CR blank line": (b"data: a\r\n\rdata: b\r\n\r\n", [b"a", b"b"]),
    "CRLF line, then an LF blank line": (b"data: a\r\n\n", [b"a"]),
    "data without colon": (b"data\n\n", [b""]),
    "data without colon, between lines": (b"data: a\ndata\ndata: b\n\n", [b"a\n\nb"]),
    "BOM at the start": (BOM + b"data: a\n\ndata: b\n\n", [b"a", b"b"]),
    # Named events, as Anthropic Messages and OpenAI Responses stream them (the reader's two-slice path).
    "event and one data line": (b'event: message_start\ndata: {}\n\nevent: ping\ndata: {"type":"ping"}\n\n',
                                [b"{}", b'{"type":"ping"}']),
    "event and two data lines": (b"event: x\ndata: a\ndata: b\n\n", [b"a\nb"]),
    "event with an empty name": (b"event: \ndata: a\n\nevent:\ndata: b\n\n", [b"a", b"b"]),
    "event, data without space": (b"event: x\ndata:a\n\nevent:y\ndata: b\n\n", [b"a", b"b"]),
    "event, then an id": (b"event: x\nid: 4\ndata: a\n\nevent: y\ndata: b\n\n", [b"a", b"b"]),
}



@pytest.mark.parametrize("name", sorted(AGREED))
def test_reader_follows_the_standard_at_every_split(name: str) -> None:
    stream, expected = AGREED[name]
    spec, _ = spec_events(stream)
    assert [e.data for e in spec] == expected  # the table itself is right
    for reads in splits(stream):
        events, _ = read_events(reads)
        assert events == spec, reads
        assert read_data(reads) == expected, reads


@pytest.mark.parametrize("name", sorted(AGREED))
def test_relay_and_load_generator_agree_at_every_split(name: str) -> None:
    stream, expected = AGREED[name]
    for reads in splits(stream):
        assert relay_data(reads) == read_data(reads) == expected, reads


def test_a_simulated_stream_agrees_cut_anywhere_twice() -> None:
    from loadtest import simcontent

    events = simcontent.stream_events(
        completion_id="chatcmpl-1", created=1, model="m", words=simcontent.tokens(b"\0" * 32, 3), chunks=3,
        tokens_per_chunk=1, prompt=5, include_usage=True,
    )
    stream = b"".join(e.render(1) for e in events) + simcontent.DONE_EVENT
    whole = relay_data([stream])
    assert whole[-1] == b"[DONE]" and len(whole) == len(events) + 1
    for i in range(1, len(stream), 7):
        for j in range(i, len(stream), 11):
            reads = [stream[:i], stream[i:j], stream[j:]]
            assert read_data(reads) == relay_data(reads) == whole


# ---------------------------------------------------------------------------------------------------------
# The reader alone.


def test_crlf_split_across_reads_is_one_line_break() -> None:
    reader = SSEReader()
    assert reader.feed(b"data: a\r") == []
    assert reader.feed(b"\n") == []  # the LF of the CRLF, not a blank line
    assert reader.feed(b"data: b\r") == []
    assert reader.feed(b"") == []  # an empty read keeps the CR pending
    assert reader.feed(b"\ndata: c\r\n\r\n") == [b"a\nb\nc"]


def test_cr_at_the_end_of_a_read_then_cr_is_a_blank_line() -> None:
    reader = SSEReader()
    assert reader.feed(b"data: a\r") == []
    assert reader.feed(b"\r") == [b"a"]
    assert reader.feed(b"\ndata: b\n\n") == [b"b"]  # that LF closed the CRLF begun by the last CR


def test_types_ids_and_retry() -> None:
    reader = SSEReader()
    stream = b"event: add\nid: 1\ndata: x\n\nid: 2\ndata: y\nretry: 1500\n\nevent:\nretry: 9x\ndata: z\n\n"
    assert reader.feed_events(stream) == [Event(b"add", b"x", b"1"), Event(b"message", b"y", b"2"),
                                          Event(b"message", b"z", b"2")]
    assert reader.retry_ms == 1500
    assert reader.feed_events(b"id: a\0b\ndata: w\n\nid\ndata: v\n\n") == [
        Event(b"message", b"w", b"2"),  # an id with NUL is ignored
        Event(b"message", b"v", b""),  # `id` alone resets it
    ]


def test_bom_only_once_at_the_start_even_split() -> None:
    reader = SSEReader()
    assert reader.feed(BOM[:1]) == []
    assert reader.pending == BOM[:1]
    assert reader.feed(BOM[1:2]) == []
    assert reader.feed(BOM[2:] + b"data: a\n\n" + BOM + b"data: b\n\n") == [b"a"]
    # A stream that only looks like a BOM at first: its bytes are kept.
    reader = SSEReader()
    assert reader.feed(b"\xef") == []
    assert reader.feed(b"data: a\n\n") == []  # field "\xefdata" is unknown
    assert reader.feed(b"data: b\n\n") == [b"b"]


def test_pending_shows_an_event_cut_by_the_end() -> None:
    reader = SSEReader()
    reader.feed(b"data: a\n\ndata: b\r")
    assert reader.pending == b"data: b\n"
    reader.feed(b"\n\n")
    assert reader.pending == b""


_TOKENS = [b"data", b"event", b"id", b"retry", b":", b": ", b" ", b"x", b"{}", b"[DONE]", b"12", b"\0",
           b"\r", b"\n", b"\r\n", b"\n\n", b"\r\r", BOM, b"\xef", b"data: ", b"data:", b"\xc3\xa9"]


@given(st.lists(st.sampled_from(_TOKENS), max_size=40), st.lists(st.integers(0, 200), max_size=6))
def test_any_stream_any_reads_match_the_standard(tokens: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(tokens)
    points = sorted({min(c, len(stream)) for c in cuts})
    reads = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    spec, retry = spec_events(stream)
    events, reader = read_events(reads)
    assert events == spec
    assert read_data(reads) == [e.data for e in spec]
    if not reader.pending.strip(b"\n"):  # nothing cut off at the end: every retry line took effect
        assert reader.retry_ms == retry
