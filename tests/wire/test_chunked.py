"""The chunked-coding decoder (wire/_chunked.py) with bytes only, against h11's encoder."""

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire import ChunkedDecoder, ChunkedError


def _encode(pieces: list[bytes], trailers: list[tuple[bytes, bytes]] = ()) -> bytes:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    conn.next_event()
    out = conn.send(h11.Response(status_code=200, headers=[("transfer-encoding", "chunked")]))
    head = len(out)
    for p in pieces:
        out += conn.send(h11.Data(data=p))
    out += conn.send(h11.EndOfMessage(headers=list(trailers)))
    return out[head:]


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=12), st.lists(st.integers(1, 50), max_size=40))
def test_any_split_of_any_body_decodes_to_the_body(pieces, cuts):
    wire = _encode(pieces, [(b"x-trailer", b"1")] if len(pieces) % 2 else [])
    dec = ChunkedDecoder()
    got = b""
    pos = 0
    for cut in cuts:
        got += dec.feed(wire[pos : pos + cut])
        pos += cut
    got += dec.feed(wire[pos:])
    assert got == b"".join(pieces)
    assert dec.done and dec.leftover == b""


def test_not_done_until_the_final_crlf_and_leftover_is_kept():
    dec = ChunkedDecoder()
    assert dec.feed(b"5\r\nhello\r\n0\r\n") == b"hello"
    assert not dec.done
    assert dec.feed(b"\r\nHTTP/1.1 200") == b""
    assert dec.done and dec.leftover == b"HTTP/1.1 200"


def test_chunk_extensions_are_ignored():
    assert ChunkedDecoder().feed(b"3;name=value\r\nabc\r\n0\r\n\r\n") == b"abc"


@pytest.mark.parametrize("wire", [b"zz\r\nab\r\n", b"+3\r\nabc\r\n", b"1_0\r\n", b"3\r\nabcXY", b"x" * 5000])
def test_invalid_coding_raises(wire):
    with pytest.raises(ChunkedError):
        ChunkedDecoder().feed(wire)


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=12))
def test_one_read_per_chunk_decodes_each_chunk_at_once(pieces):
    # The usual read (a whole chunk, nothing buffered) takes the decoder's short path: same bytes, same end.
    dec = ChunkedDecoder()
    for piece in pieces:
        assert dec.feed(b"%x\r\n%b\r\n" % (len(piece), piece)) == piece
    assert not dec.done
    assert dec.feed(b"0\r\n\r\n") == b"" and dec.done


@pytest.mark.parametrize("wire", [b"0x3\r\nabc\r\n", b"-3\r\nabc\r\n", b"3\r\nabcd\r\n", b"3\r\nab\r\n\r\n"])
def test_an_invalid_whole_chunk_raises(wire):
    with pytest.raises(ChunkedError):
        ChunkedDecoder().feed(wire)
