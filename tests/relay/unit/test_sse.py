from hypothesis import given
from hypothesis import strategies as st

from proxy.protocol import DONE, EventSplitter, event_data


def test_splits_events_across_reads():
    s = EventSplitter()
    assert s.feed(b'data: {"a":1}\n\nda') == [b'data: {"a":1}']
    assert s.feed(b"ta: [DO") == []
    assert s.feed(b"NE]\n\n") == [b"data: [DONE]"]
    assert s.pending == b""


def test_crlf_and_comments():
    s = EventSplitter()
    assert s.feed(b": ping\r\n\r\ndata: x\r\n\r\n") == [b": ping", b"data: x"]
    assert event_data(b": ping") is None
    assert event_data(b"data: x\r") is not None


def test_event_data_multiline_and_fields():
    assert event_data(b"event: message\ndata: a\ndata: b") == b"a\nb"
    assert event_data(b"event: message\ndata: a") == b"a"  # the named events of Messages and Responses
    assert event_data(b"event: message\r\ndata: a") == b"a"
    assert event_data(b"event: message\ndata:a") == b"a"
    assert event_data(b"event: message\nid: 1\ndata: a") == b"a"
    assert event_data(b"event: message") is None
    assert event_data(b"data:nospace") == b"nospace"
    assert event_data(b"data: [DONE]") == DONE


events = st.lists(
    st.binary(min_size=1, max_size=40).map(lambda b: b"data: " + b.replace(b"\n", b"").replace(b"\r", b"")),
    min_size=1,
    max_size=20,
)


@given(events, st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=50))
def test_any_split_of_the_stream_gives_the_same_events(evs, cuts):
    stream = b"".join(e + b"\n\n" for e in evs)
    s = EventSplitter()
    out, pos, i = [], 0, 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        out += s.feed(stream[pos : pos + step])
        pos += step
        i += 1
    assert out == evs
    assert s.pending == b""


def test_well_formed():
    from proxy.protocol import well_formed

    assert well_formed(b'data: {"a": 1}')
    assert well_formed(b"data: [DONE]")
    assert well_formed(b": ping")
    assert well_formed(b"event: x")
    assert not well_formed(b"data: {not json")
    assert not well_formed(b"data: 42")
    assert not well_formed(b'data: {"a": 1')
    assert well_formed(b'data: {"a": 1} \t')  # trailing JSON whitespace, as json.loads allows
    assert not well_formed(b'data: {"a": 1} x')
    assert not well_formed(b'data: {"a": 1}{"b": 2}')
    assert not well_formed(b'data: {"a": "\xff"}')  # not UTF-8


def test_feed_whole_forwards_only_completed_events():
    s = EventSplitter()
    assert s.feed_whole(b'data: {"a":1}\n\ndata: {"b"') == ([b'data: {"a":1}'], b'data: {"a":1}\n\n')
    assert s.feed_whole(b":2") == ([], b"")  # still mid-event: nothing to forward
    assert s.feed_whole(b"}\n\n") == ([b'data: {"b":2}'], b'data: {"b":2}\n\n')
    whole = b"data: x\n\n"
    assert s.feed_whole(whole)[1] is whole  # a read of whole events goes out as it came, uncopied


@given(events, st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=50))
def test_feed_whole_of_any_split_is_the_stream_cut_at_event_ends(evs, cuts):
    stream = b"".join(e + b"\n\n" for e in evs)
    s = EventSplitter()
    out, pos, i = [], 0, 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        _, whole = s.feed_whole(stream[pos : pos + step])
        assert whole == b"" or whole.endswith(b"\n\n")
        out.append(whole)
        pos += step
        i += 1
    assert b"".join(out) == stream
