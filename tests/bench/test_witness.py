"""bench/witness.py's pure parts: the local tokenizer, both clients' metrics, their comparison and report."""

import json

import pytest

from bench.witness import (
    aiperf_metrics,
    aiperf_sim_view,
    compare,
    loadtest_metrics,
    loadtest_sim_view,
    render,
    tokenizer_files,
)
from loadtest.simcontent import VOCABULARY


def test_tokenizer_knows_every_sim_word_once():
    files = tokenizer_files(["moon", "the", "moon"])
    tok = json.loads(files["tokenizer.json"])
    assert tok["model"] == {"type": "WordLevel", "vocab": {"[UNK]": 0, "moon": 1, "the": 2}, "unk_token": "[UNK]"}
    assert tok["pre_tokenizer"] == {"type": "Whitespace"}
    assert json.loads(files["tokenizer_config.json"])["tokenizer_class"] == "PreTrainedTokenizerFast"
    vocab = json.loads(tokenizer_files(VOCABULARY)["tokenizer.json"])["model"]["vocab"]
    assert set(VOCABULARY) <= vocab.keys() and sorted(vocab.values()) == list(range(len(vocab)))


def _rec(ttfc, gaps, **kw):
    sent = None if ttfc is None else ttfc - 30.0
    return {"error_kind": None, "warmup": False, "ttfc_ms": ttfc, "ttfc_sent_ms": sent, "gaps_ms": gaps, **kw}


def test_loadtest_itl_divides_by_tokens_minus_one_and_failures_are_left_out():
    # Three tokens 40 and 60 ms apart, then the usage event 0.5 ms later: (100.5) / (3 - 1), not a mean of 3 gaps.
    recs = [_rec(1000.0 + i, [40.0, 60.0, 0.5], completion_tokens=3) for i in range(100)]
    recs += [_rec(1000.0 + 100, [50.0, 70.0])]  # no usage: the mean gap
    recs += [_rec(5.0, [1.0], error_kind="reset"), _rec(5.0, [1.0], warmup=True), _rec(None, [])]
    m = loadtest_metrics(recs)
    assert m["ttft_ms"] == {"p50": 1050.0, "p99": 1099.0, "count": 101}
    assert m["ttft_from_sent_ms"] == {"p50": 1020.0, "p99": 1069.0, "count": 101}
    assert m["itl_ms"]["p50"] == pytest.approx(50.25) and m["itl_ms"]["count"] == 101
    assert loadtest_metrics([_rec(1000.0, [50.0, 70.0])])["itl_ms"]["p50"] == 60.0  # no usage: the mean gap


def test_aiperf_metrics_in_ms_whatever_their_unit():
    doc = {
        "time_to_first_token": {"unit": "ms", "p50": 1001.5, "p99": 1010.0, "count": 200},
        "inter_token_latency": {"unit": "ns", "p50": 50_100_000, "p99": 52_000_000},
    }
    m = aiperf_metrics(doc)
    assert m["ttft_ms"] == {"p50": 1001.5, "p99": 1010.0, "count": 200}
    assert m["itl_ms"]["p50"] == pytest.approx(50.1) and m["itl_ms"]["p99"] == pytest.approx(52.0)
    assert aiperf_metrics({"records": doc})["ttft_ms"]["p50"] == 1001.5


def test_compare_within_five_percent_and_render():
    lt = {"ttft_ms": {"p50": 1040.0, "p99": 1200.0, "count": 200}, "itl_ms": {"p50": 50.0, "p99": None, "count": 0}}
    ai = {"ttft_ms": {"p50": 1000.0, "p99": 1100.0, "count": 200}, "itl_ms": {"p50": 50.0, "p99": 51.0, "count": 1}}
    rows = compare(lt, ai)
    by = {(r["metric"], r["p"]): r for r in rows}
    assert by["ttft_ms", "p50"]["relative"] == pytest.approx(0.04) and by["ttft_ms", "p50"]["within_goal"]
    assert by["ttft_ms", "p99"]["within_goal"] is False  # +9.1 %
    assert by["itl_ms", "p99"]["within_goal"] is None
    sent = {"ttft_from_sent_ms": {"p50": 1010.0, "p99": 1150.0}}
    text = render(
        {
            "loadtest": sent,
            "command": "python -m bench.witness",
            "concurrency": 50,
            "requests": 200,
            "ttft_s": 1.0,
            "chunks": 20,
            "interval_s": 0.05,
            "rows": rows,
            "sessions": {"loadtest": 200, "aiperf": 200},
            "commands": ["loadtest ...", "aiperf profile ..."],
            "notes": ["a note"],
        }
    )
    assert "| TTFT p50 (ms) | 1040.0 | 1000.0 | +4.00 % | yes |" in text
    assert "| TTFT p99 (ms) | 1200.0 | 1100.0 | +9.09 % | no |" in text
    assert "| ITL p99 (ms) | — | 51.0 | — % | — |" in text
    assert "- a note" in text and "aiperf profile ..." in text
    assert "from the request written instead: p50 1010.0 ms, p99 1150.0 ms." in text


def test_sim_view_of_loadtest_from_gaps_and_relay_delays():
    # Received at 0, 50, 110 (usage event); the sim sent at -1, 49, 104: sim ITL (104 - -1) / (3 - 1).
    rec = _rec(1000.0, [50.0, 60.0], relay_delay_ms=[1.0, 1.0, 6.0], completion_tokens=3)
    v = loadtest_sim_view([rec, _rec(1.0, [1.0], relay_delay_ms=[1.0, 1.0], error_kind="reset")])
    assert v["sim_itl_ms"]["p50"] == pytest.approx(52.5) and v["sim_itl_ms"]["count"] == 1
    assert v["read_lag_ms"]["count"] == 3 and v["read_lag_ms"]["p50"] == 1.0


def _packet(content, ns):
    data = {"choices": [{"delta": {"content": content} if content is not None else {}}], "sim": {"ns": ns}}
    return {"name": "data", "value": json.dumps(data)}


def test_sim_view_of_aiperf_counts_content_chunks_only():
    ms = 1_000_000
    line = json.dumps(
        {
            "responses": [
                {"perf_ns": 1000 * ms + ms, "packets": [_packet("the", 1000 * ms)]},
                {"perf_ns": 1050 * ms + 3 * ms, "packets": [_packet(" moon", 1050 * ms)]},
                {"perf_ns": 1101 * ms, "packets": [_packet(" orbits", 1100 * ms)]},
                {"perf_ns": 1102 * ms, "packets": [_packet(None, 1101 * ms), {"name": "data", "value": "[DONE]"}]},
            ]
        }
    )
    v = aiperf_sim_view([line, ""])
    assert v["sim_itl_ms"]["p50"] == pytest.approx(50.0) and v["sim_itl_ms"]["count"] == 1
    assert v["read_lag_ms"]["count"] == 3 and v["read_lag_ms"]["p50"] == pytest.approx(1.0)
