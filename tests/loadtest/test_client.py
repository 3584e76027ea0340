"""The load generator's client and session accounting: pure framing, then real sessions against the sim."""

import json
import socket
import struct
import time

import pytest
import trio

from loadtest.accounting import StreamAccounting
from loadtest.client import Endpoint
from loadtest.record import SessionRecord
from loadtest.session import ConnectionSlot, RetryCounter, build_request, run_session
from tests.conftest import start_sim
from wire import ChunkedDecoder, ChunkedError

MESSAGES = [{"role": "user", "content": "Tell me about the moon"}]


def _chunk(seq: int, of: int, ns: int = 1_000, **extra) -> bytes:
    """A stamped chunk as the sim sends it: the last one announced carries the finish_reason."""
    finish = "stop" if seq == of - 1 else None
    body = {"id": "c", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": finish}]}
    body.update(extra)
    body["sim"] = {"ns": ns, "seq": seq, "of": of}
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


# --- sans-I/O accounting ----------------------------------------------------------------------------


def test_accounting_byte_by_byte_moonshot_usage():
    rec = SessionRecord()
    acct = StreamAccounting(rec)
    last = _chunk(2, 3, choices=[{"index": 0, "delta": {}, "usage": {"prompt_tokens": 7, "completion_tokens": 3}}])
    body = _chunk(0, 3) + _chunk(1, 3) + last + b"data: [DONE]\n\n"
    for i in range(len(body)):
        acct.feed(body[i : i + 1], 2_000_000 + i * 1_000_000)
    acct.end(0)
    assert (rec.chunks, rec.expected_chunks, rec.done) == (3, 3, True)
    assert (rec.prompt_tokens, rec.completion_tokens) == (7, 3)
    assert len(rec.gaps_ms) == 2 and all(g > 0 for g in rec.gaps_ms)
    assert len(rec.relay_delay_ms) == 3 and rec.relay_delay_ms[0] > 0
    assert rec.bytes == len(body)
    assert acct.malformed is None and acct.error_event is None


def test_accounting_openai_usage_error_and_malformed():
    rec = SessionRecord()
    acct = StreamAccounting(rec)
    acct.feed(_chunk(0, 2) + _chunk(1, 2, choices=[], usage={"prompt_tokens": 4, "completion_tokens": 9}), 5_000)
    assert (rec.prompt_tokens, rec.completion_tokens) == (4, 9)
    acct.feed(b'data: {"error": {"message": "upstream went away", "type": "server_error"}}\n\n', 6_000)
    assert "upstream went away" in acct.error_event
    acct.feed(b"data: {not json\n\n: keep-alive comment\n\n", 7_000)
    assert acct.malformed.startswith("chunk is not JSON")
    assert rec.chunks == 2


def test_accounting_data_after_done_and_ndjson():
    rec = SessionRecord()
    acct = StreamAccounting(rec)
    acct.feed(_chunk(0, 1) + b"data: [DONE]\n\n" + _chunk(1, 1), 1)
    assert acct.malformed == "data after [DONE]"

    rec = SessionRecord()
    acct = StreamAccounting(rec, ndjson=True)
    lines = [json.dumps({"choices": [{"delta": {}}], "sim": {"ns": 1, "seq": k, "of": 2}}).encode() for k in range(2)]
    data = b"\n".join(lines)  # the last line unterminated: flushed by end()
    acct.feed(data[:10], 10)
    acct.feed(data[10:], 20)
    acct.end(30)
    assert (rec.chunks, rec.expected_chunks) == (2, 2)


def test_chunked_decoder_any_split():
    wire = b"5\r\nhello\r\n1a;ext=1\r\n" + b"x" * 26 + b"\r\n0\r\nTrailer: v\r\n\r\n"
    for step in (1, 2, 3, 7, len(wire)):
        dec = ChunkedDecoder()
        out = b"".join(dec.feed(wire[i : i + step]) for i in range(0, len(wire), step))
        assert out == b"hello" + b"x" * 26 and dec.done


@pytest.mark.parametrize("wire", [b"zz\r\n", b"3\r\nabcXY", b"1" * 5000])
def test_chunked_decoder_rejects_garbage(wire):
    with pytest.raises(ChunkedError):
        ChunkedDecoder().feed(wire)


def test_endpoint_and_request():
    ep = Endpoint.from_url("http://127.0.0.1:8117/v1/")
    assert (ep.host, ep.port, ep.base_path, ep.host_header) == ("127.0.0.1", 8117, "/v1", b"127.0.0.1:8117")
    spec = build_request(ep, model="m", messages=MESSAGES, max_tokens=5, stream=True, api_key="k")
    assert spec.path == b"/v1/chat/completions"
    assert (b"authorization", b"Bearer k") in spec.headers
    assert json.loads(spec.body)["max_tokens"] == 5
    assert build_request(ep, model="m", messages=MESSAGES, max_tokens=None, stream=True, ndjson=True).path == (
        b"/chat/completions"
    )
    with pytest.raises(ValueError):
        Endpoint.from_url("ftp://x/v1")


# --- real sessions against the sim --------------------------------------------------------------------


async def _session(url: str, *, stream=True, timeout_s=5.0, slot=None, **extra) -> SessionRecord:
    """One session; closes its connection unless the caller passed a slot to keep it in."""
    ep = Endpoint.from_url(url)
    spec = build_request(ep, model="moonshot-v1-8k", messages=MESSAGES, max_tokens=None, stream=stream, extra=extra)
    own = slot is None
    slot = slot or ConnectionSlot()
    rec = SessionRecord(intended_ns=time.monotonic_ns())
    try:
        return await run_session(ep, spec, rec, slot, timeout_s=timeout_s, retries=RetryCounter())
    finally:
        if own:
            await slot.aclose()


async def test_stream_session_completes(nursery):
    sim = await start_sim(nursery, chunks=5)
    rec = await _session(sim.url)
    assert rec.ok, rec.error_detail
    assert rec.status == 200 and rec.done
    assert rec.chunks == rec.expected_chunks >= 5
    assert rec.completion_tokens and rec.prompt_tokens  # Moonshot: choices[0].usage
    assert len(rec.relay_delay_ms) == rec.chunks and all(d >= 0 for d in rec.relay_delay_ms)
    assert len(rec.gaps_ms) == rec.chunks - 1
    assert rec.connected_ns is not None and rec.sent_ns <= rec.first_chunk_ns <= rec.end_ns
    assert rec.ttfc_ms >= 15  # the sim's TTFT is 20 ms


async def test_include_usage_and_non_stream(nursery):
    sim = await start_sim(nursery, chunks=4)
    rec = await _session(sim.url, stream_options={"include_usage": True})
    assert rec.ok, rec.error_detail
    assert rec.chunks == rec.expected_chunks
    assert rec.completion_tokens and rec.prompt_tokens

    rec = await _session(sim.url, stream=False)
    assert rec.ok, rec.error_detail
    assert not rec.stream and rec.chunks == 1 and rec.completion_tokens and rec.first_chunk_ns


async def test_keepalive_reuse_and_fresh_after_error(nursery):
    sim = await start_sim(nursery)
    slot = ConnectionSlot()
    first = await _session(sim.url, slot=slot)
    second = await _session(sim.url, slot=slot)
    assert first.ok and second.ok
    assert first.connected_ns is not None and second.connected_ns is None
    failed = await _session(sim.url, slot=slot, sim_fault="status:429")
    assert failed.error_kind == "http_429" and failed.connected_ns is None
    third = await _session(sim.url, slot=slot)
    assert third.ok
    await slot.aclose()


@pytest.mark.parametrize(
    "fault, kinds",
    [
        ("status:429", {"http_429"}),
        ("drop:2", {"reset", "missing_chunks"}),
        ("malformed:1", {"malformed"}),
    ],
)
async def test_fault_accounting(nursery, fault, kinds):
    sim = await start_sim(nursery, chunks=5)
    rec = await _session(sim.url, sim_fault=fault)
    assert rec.error_kind in kinds, (rec.error_kind, rec.error_detail)
    assert not rec.ok


async def test_stall_times_out(nursery):
    sim = await start_sim(nursery)
    with trio.fail_after(5):
        rec = await _session(sim.url, timeout_s=0.3, sim_fault="stall")
    assert rec.error_kind == "timeout"
    assert 250 <= rec.e2e_ms < 2000


async def test_connect_refused_is_counted():
    with socket.socket() as s:  # bound, never listening: connections are refused, and nobody else can take the port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        ep = Endpoint.from_url(f"http://127.0.0.1:{port}/v1")
        spec = build_request(ep, model="m", messages=MESSAGES, max_tokens=None, stream=True)
        retries = RetryCounter()
        rec = await run_session(ep, spec, SessionRecord(), ConnectionSlot(), timeout_s=5, retries=retries)
    assert rec.error_kind == "connect"
    assert retries.n == 3


# --- completeness, seq order, chunk sizes, re-sends (issue 17 item 7) ---------------------------------


def _plain_chunk(text: str = "x", finish: str | None = None) -> bytes:
    """A chat.completion.chunk as a peer that re-serialises chunks sends it: without the sim's stamp."""
    body = {"id": "c", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def _sse_response(events: bytes) -> bytes:
    head = f"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {len(events)}\r\n\r\n"
    return head.encode() + events


async def _read_request(stream: trio.SocketStream, buf: bytearray) -> bool:
    """Read one whole request (headers plus Content-Length body) off ``buf``/``stream``; False at EOF."""
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some(65536)
        if not data:
            return False
        buf += data
    end = buf.index(b"\r\n\r\n") + 4
    length = 0
    for line in bytes(buf[:end]).split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    while len(buf) < end + length:
        data = await stream.receive_some(65536)
        if not data:
            return False
        buf += data
    del buf[: end + length]
    return True


class ScriptedTarget:
    """A raw-socket HTTP/1.1 target: ``answer(conn_index, request_index)`` says what each request gets.

    An answer is the response bytes (the connection stays open for the next request), ``"close"`` (the
    response, then a clean close), or ``"reset"`` (no response: an RST right after reading the request).
    """

    def __init__(self, answer) -> None:
        self.answer = answer
        self.requests: list[tuple[int, int]] = []  # (connection, request on it) of every request read
        self.connections = 0
        self.closed = trio.Event()  # set when a "close" answer's connection is closed

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        index = self.connections
        self.connections += 1
        buf = bytearray()
        async with stream:
            k = 0
            while await _read_request(stream, buf):
                self.requests.append((index, k))
                what = self.answer(index, k)
                k += 1
                if what == "reset":
                    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                if isinstance(what, tuple):  # ("close", response)
                    await stream.send_all(what[1])
                    await stream.aclose()
                    self.closed.set()
                    return
                await stream.send_all(what)


async def _scripted_session(nursery, events: bytes) -> SessionRecord:
    target = ScriptedTarget(lambda conn, k: _sse_response(events))
    port = await nursery.start(target.serve)
    return await _session(f"http://127.0.0.1:{port}/v1")


async def test_stream_without_stamps_is_completed_not_verified(nursery):
    """A target that strips the sim's stamps: the protocol says it ended, but nothing can check the chunk count."""
    rec = await _scripted_session(nursery, _plain_chunk("a") + _plain_chunk("b", "stop") + b"data: [DONE]\n\n")
    assert rec.error_kind is None and rec.chunks == 2 and rec.done
    assert rec.unverified and rec.completed and not rec.verified


async def test_done_only_stream_is_not_complete(nursery):
    rec = await _scripted_session(nursery, b"data: [DONE]\n\n")
    assert rec.error_kind == "empty_stream", (rec.error_kind, rec.error_detail)
    assert not rec.ok


@pytest.mark.parametrize(
    "seqs, of, word",
    [
        ((0, 2), 3, "gap"),  # seq 1 never came
        ((0, 2, 1), 3, "reordered"),
        ((0, 1, 1), 3, "duplicate"),
        ((0, 1, 1, 2), 3, "duplicate"),  # a duplicate plus the whole count: still failed
        ((1, 2, 3), 3, "gap"),  # the sim starts at seq 0
    ],
)
async def test_seq_gap_reorder_duplicate_fail_with_reason(nursery, seqs, of, word):
    events = b"".join(_chunk(s, of) for s in seqs) + b"data: [DONE]\n\n"
    rec = await _scripted_session(nursery, events)
    assert rec.error_kind == "bad_seq", (rec.error_kind, rec.error_detail)
    assert word in rec.error_detail


def test_partly_stamped_stream_fails():
    """Stamps on some chunks but not all: the target altered chunks; the count cannot vouch for them."""
    rec = SessionRecord()
    acct = StreamAccounting(rec)
    acct.feed(_chunk(0, 3) + _chunk(1, 3) + _plain_chunk() + b"data: [DONE]\n\n", 1)
    acct.end(2)
    assert acct.verdict() == ("unstamped", "1 of 3 data chunks without the sim's stamp")


@pytest.mark.parametrize(
    "size, n",  # n: the payload Python's int(size, 16) would have read
    [(b"0x1f", 31), (b"1_0", 16), (b" +3 ", 3), (b"-1", 1), (b"", 0), (b"1f ", 31), (b"+1f", 31), (b"\t3", 3),
     (b"0" * 16 + b"3", 3)],
)
def test_chunk_size_rejects_what_rfc9112_does_not_allow(size, n):
    with pytest.raises(ChunkedError):
        ChunkedDecoder().feed(size + b"\r\n" + b"x" * n + b"\r\n0\r\n\r\n")


async def test_a_bad_chunk_size_on_the_wire_is_a_malformed_response(nursery):
    """The decoder's ChunkedError becomes the client's ProtocolError, so the session fails as ``malformed``."""
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    event = _chunk(0, 2)
    body = b"%x\r\n%b\r\n" % (len(event), event) + b"0x10\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n"
    target = ScriptedTarget(lambda conn, k: ("close", head + body))
    port = await nursery.start(target.serve)
    rec = await _session(f"http://127.0.0.1:{port}/v1")
    assert rec.error_kind == "malformed" and "bad chunk size" in rec.error_detail, (rec.error_kind, rec.error_detail)


async def test_bytes_after_the_chunked_end_are_a_malformed_response(nursery):
    """The decoder keeps them as ``leftover``; the client never pipelines, so it fails the response."""
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    event = _chunk(0, 1)
    body = b"%x\r\n%b\r\n" % (len(event), event) + b"0\r\n\r\nextra"
    target = ScriptedTarget(lambda conn, k: ("close", head + body))
    port = await nursery.start(target.serve)
    rec = await _session(f"http://127.0.0.1:{port}/v1")
    assert rec.error_kind == "malformed" and "after the end" in rec.error_detail, (rec.error_kind, rec.error_detail)


@pytest.mark.parametrize("line, n", [(b"1f", 31), (b"1F", 31), (b"a;ext=1", 10), (b"a ; ext=1", 10), (b"00a", 10)])
def test_chunk_size_accepts_hex_with_extensions(line, n):
    dec = ChunkedDecoder()
    assert dec.feed(line + b"\r\n" + b"x" * n + b"\r\n0\r\n\r\n") == b"x" * n and dec.done


async def test_reused_connection_reset_after_request_is_a_failure_not_resent(nursery):
    """The request reached the target (it read it) before the reset: sending it again could run it twice."""
    ok = _sse_response(_chunk(0, 1) + b"data: [DONE]\n\n")
    target = ScriptedTarget(lambda conn, k: "reset" if (conn, k) == (0, 1) else ok)
    port = await nursery.start(target.serve)
    slot = ConnectionSlot()
    try:
        first = await _session(f"http://127.0.0.1:{port}/v1", slot=slot)
        assert first.ok, (first.error_kind, first.error_detail)
        second = await _session(f"http://127.0.0.1:{port}/v1", slot=slot)
    finally:
        await slot.aclose()
    assert second.error_kind == "reset", (second.error_kind, second.error_detail)
    assert second.resent == 0
    assert target.requests == [(0, 0), (0, 1)]  # never sent a second time


async def test_reused_connection_found_closed_is_resent_and_counted(nursery):
    """The target closed the idle connection before the next request: nothing was written, a re-send is safe."""
    ok = _sse_response(_chunk(0, 1) + b"data: [DONE]\n\n")
    target = ScriptedTarget(lambda conn, k: ("close", ok) if conn == 0 else ok)
    port = await nursery.start(target.serve)
    slot = ConnectionSlot()
    try:
        first = await _session(f"http://127.0.0.1:{port}/v1", slot=slot)
        assert first.ok and slot.conn is not None
        with trio.fail_after(5):
            await target.closed.wait()
            await trio.lowlevel.wait_readable(slot.conn.socket)  # the target's FIN is here
        second = await _session(f"http://127.0.0.1:{port}/v1", slot=slot)
    finally:
        await slot.aclose()
    assert second.ok, (second.error_kind, second.error_detail)
    assert second.resent == 1 and second.connected_ns is not None
    assert target.requests == [(0, 0), (1, 0)]
