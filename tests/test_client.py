"""The load generator's client and session accounting: pure framing, then real sessions against the sim."""

import json
import socket
import time

import pytest
import trio

from loadtest.client import ChunkedDecoder, Endpoint, ProtocolError
from loadtest.record import SessionRecord
from loadtest.session import (
    ConnectionSlot,
    RetryCounter,
    StreamAccounting,
    build_request,
    run_session,
)
from tests.conftest import start_sim

MESSAGES = [{"role": "user", "content": "Tell me about the moon"}]


def _chunk(seq: int, of: int, ns: int = 1_000, **extra) -> bytes:
    body = {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "x"}}]}
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


@pytest.mark.parametrize("wire", [b"zz\r\n", b"3\r\nabcXY", b"0\r\n\r\nextra", b"1" * 5000])
def test_chunked_decoder_rejects_garbage(wire):
    with pytest.raises(ProtocolError):
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
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens there now
    ep = Endpoint.from_url(f"http://127.0.0.1:{port}/v1")
    spec = build_request(ep, model="m", messages=MESSAGES, max_tokens=None, stream=True)
    retries = RetryCounter()
    rec = await run_session(ep, spec, SessionRecord(), ConnectionSlot(), timeout_s=5, retries=retries)
    assert rec.error_kind == "connect"
    assert retries.n == 3
