"""Per-token figures (loadtest/tokens.py): streams fed through the accounting at chosen receive times, then the sim."""

from __future__ import annotations

import json

import pytest

from loadtest import report, stats, tokens
from loadtest.accounting import StreamAccounting
from loadtest.quantiles import weighted_percentiles
from loadtest.record import RunData, SessionRecord
from loadtest.runner import LoadConfig, Runner
from tests.conftest import start_sim

MS = 1_000_000


def _event(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def _content(text: str) -> bytes:
    return _event({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})


def _session(timed: list[tuple[int, bytes]], **rec_fields) -> SessionRecord:
    """A record filled as run_session fills it: each event fed at its time (ms after the intended start 0)."""
    rec = SessionRecord(intended_ns=0, **rec_fields)
    acct = StreamAccounting(rec)
    for t_ms, data in timed:
        acct.feed(data, t_ms * MS)
    acct.feed(b"data: [DONE]\n\n", timed[-1][0] * MS)
    acct.end(timed[-1][0] * MS)
    rec.end_ns = timed[-1][0] * MS
    rec.error_kind, rec.error_detail = acct.verdict()
    return rec


ROLE = _event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
FINISH = _event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})


def test_openai_stream_one_token_per_chunk_with_usage():
    usage = _event({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}})
    rec = _session([(100, ROLE), (300, _content("The")), (340, _content(" moon")), (400, _content(" is")),
                    (500, _content(" far")), (510, FINISH), (511, usage)])
    assert rec.empty_chunks == [0, 5, 6]
    f = tokens.session_tokens(rec)
    assert (f.tokens, f.source) == (4, "usage")
    assert f.ttft_ms == 300  # the role chunk carries no token: TTFC says 100
    assert rec.ttfc_ms == 100
    assert f.tpot_ms == pytest.approx(200 / 3)  # (500 - 300) / (4 - 1)
    assert f.itl == [(40, 1), (60, 1), (100, 1)]
    assert f.tokens_per_s == pytest.approx(4 / 0.511)


def test_several_tokens_per_chunk_share_their_gap():
    """Moonshot's usage in choices[0]: 12 tokens in 3 chunks, so each chunk's gap is shared by its 4 tokens."""
    finish = _event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop",
                                  "usage": {"prompt_tokens": 3, "completion_tokens": 12}}]})
    rec = _session([(200, _content("a b c d")), (600, _content(" e f g h")), (1400, _content(" i j k l")),
                    (1401, finish)])
    f = tokens.session_tokens(rec)
    assert (f.tokens, f.source, f.ttft_ms) == (12, "usage", 200)
    assert f.tpot_ms == pytest.approx(1200 / 8)  # the 8 tokens after the first chunk's 4
    assert f.itl == [(100, 4), (200, 4)]
    itl = weighted_percentiles(f.itl)
    assert itl["mean"] == pytest.approx(f.tpot_ms) and itl["count"] == 8
    assert itl["p50"] == 100 and itl["p90"] == 200


def test_without_usage_tokens_are_counted_from_the_chunks_and_said_so():
    plain = _session([(100, ROLE), (200, _content("a")), (250, _content("b")), (300, FINISH)])
    with_usage = _session([(100, _content("a")), (150, _content("b")), (
        160, _event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop",
                                  "usage": {"prompt_tokens": 1, "completion_tokens": 2}}]}))])
    failed = _session([(100, _content("a"))])  # no finish_reason: failed, not counted
    assert failed.error_kind == "no_finish_reason"
    f = tokens.session_tokens(plain)
    assert (f.tokens, f.source, f.ttft_ms, f.tpot_ms) == (2, "chunks", 200, 50)
    s = tokens.token_summary([plain, with_usage, failed], window_s=1.0)
    assert s["sessions"] == 2 and s["output_tokens"] == 4 and s["output_tokens_per_s"] == 4.0
    assert s["source"] == "mixed" and s["sessions_by_source"] == {"usage": 1, "chunks": 1}
    assert s["tpot_ms"]["count"] == 2 and s["itl_ms"]["count"] == 2
    from loadtest.reportmd import token_source_note

    assert token_source_note(s) == ("output tokens: 1 session(s) from the upstream's usage; 1 session(s) returned no "
                                    "usage: counted from their chunks, one token per chunk with output")


def test_tool_calls_and_reasoning_are_output():
    tool = _event({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]},
                                "finish_reason": None}]})
    think = _event({"choices": [{"index": 0, "delta": {"reasoning_content": "hmm", "content": None},
                                 "finish_reason": None}]})
    rec = _session([(100, think), (200, tool), (300, FINISH)])
    assert rec.empty_chunks == [2]
    assert tokens.session_tokens(rec).tokens == 2


async def test_the_sims_usage_gives_tokens_per_chunk(nursery):
    sim = await start_sim(nursery, chunks=6, interval=0.01, tokens_per_chunk=3)
    runner = Runner(LoadConfig(url=sim.url, concurrency=2, requests=4))
    run = await runner.run()
    s = stats.summarize(run)["per_token"]
    assert s["sessions"] == 4 and s["source"] == "usage" and s["output_tokens"] == 4 * 18
    assert s["tpot_ms"]["count"] == 4 and s["itl_ms"]["count"] == 4 * 15
    # 5 gaps of ~10 ms, each shared by 3 tokens, over the 15 tokens after the first chunk's 3
    assert 2 < s["tpot_ms"]["p50"] < 10 and s["itl_ms"]["mean"] == pytest.approx(s["tpot_ms"]["mean"], rel=0.05)
    md = report.render_markdown(report.build_result(run, machine={}, versions={}))
    assert "## Per token" in md and "- relay: output tokens: 4 session(s) from the upstream's usage." in md


def test_summary_block_of_an_empty_run():
    run = RunData(command=[], config={}, started_unix=0, t0_ns=0, t_end_ns=0, records=[])
    s = stats.summarize(run)["per_token"]
    assert s["sessions"] == 0 and s["source"] is None and s["tpot_ms"]["p50"] is None
