"""Percentile maths, open sessions, chunk series, goodput and the summary on hand-made records."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtest import stats
from loadtest.record import ProcessUsage, RunData, SessionRecord

S = 1_000_000_000  # ns per second


def ns(seconds: float) -> int:
    return round(seconds * S)


def rec(
    start: float,
    first: float | None,
    end: float,
    *,
    intended: float | None = None,
    sent: float | None = None,
    connected: float | None = None,
    gaps: list[float] | None = None,
    chunks: int | None = None,
    target: str = "relay",
    error: str | None = None,
    warmup: bool = False,
    relay_delay: list[float] | None = None,
    prompt: int | None = 10,
    completion: int | None = None,
) -> SessionRecord:
    """A session from times in seconds; chunks default to 1 + len(gaps) when the first chunk arrived."""
    gaps = list(gaps or [])
    if chunks is None:
        chunks = 0 if first is None else 1 + len(gaps)
    return SessionRecord(
        target=target,
        intended_ns=ns(start if intended is None else intended),
        start_ns=ns(start),
        connected_ns=None if connected is None else ns(connected),
        sent_ns=ns(start if sent is None else sent),
        first_chunk_ns=None if first is None else ns(first),
        end_ns=ns(end),
        status=200 if error is None else 429,
        chunks=chunks,
        expected_chunks=chunks,
        done=error is None,
        gaps_ms=gaps,
        relay_delay_ms=list(relay_delay or []),
        prompt_tokens=prompt,
        completion_tokens=chunks if completion is None else completion,
        error_kind=error,
        warmup=warmup,
    )


# --- percentiles -----------------------------------------------------------------------------------


def test_percentiles_of_1_to_100():
    p = stats.percentiles(range(1, 101))
    # rank h = 99 * p / 100: p50 -> 49.5 -> 50.5; p90 -> 89.1 -> 90.1; p99.9 -> 98.901 -> 99.901
    assert p["p50"] == pytest.approx(50.5)
    assert p["p90"] == pytest.approx(90.1)
    assert p["p95"] == pytest.approx(95.05)
    assert p["p99"] == pytest.approx(99.01)
    assert p["p99.9"] == pytest.approx(99.901)
    assert (p["min"], p["max"], p["count"]) == (1, 100, 100)
    assert p["mean"] == pytest.approx(50.5)


def test_percentiles_hand_computed_unsorted():
    p = stats.percentiles([50, 15, 40, 20, 35], ps=(0, 40, 50, 90, 100))
    assert p["p0"] == 15
    assert p["p40"] == pytest.approx(29.0)  # h = 1.6: 20 + 0.6 * (35 - 20)
    assert p["p50"] == 35
    assert p["p90"] == pytest.approx(46.0)  # h = 3.6: 40 + 0.6 * (50 - 40)
    assert p["p100"] == 50
    assert p["mean"] == pytest.approx(32.0)


def test_percentiles_single_and_empty():
    assert stats.percentiles([7.0]) == {
        "p50": 7.0,
        "p90": 7.0,
        "p95": 7.0,
        "p99": 7.0,
        "p99.9": 7.0,
        "min": 7.0,
        "max": 7.0,
        "mean": 7.0,
        "count": 1,
    }
    empty = stats.percentiles([])
    assert empty["count"] == 0
    assert all(empty[k] is None for k in ("p50", "p99.9", "min", "max", "mean"))


def test_percentiles_match_numpy_linear():
    np = pytest.importorskip("numpy")
    values = [3.1, 0.2, 9.9, 4.4, 4.4, 12.0, 7.5, 1.0, 100.0, 2.2, 8.8]
    p = stats.percentiles(values)
    for q in stats.DEFAULT_PS:
        assert p[stats.pkey(q)] == pytest.approx(float(np.percentile(values, q)))


def test_percentile_outside_range_rejected():
    with pytest.raises(ValueError):
        stats.quantile_sorted([1.0], 101)


finite = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False)


@given(
    values=st.lists(finite, min_size=1, max_size=200),
    ps=st.lists(st.floats(min_value=0, max_value=100), min_size=1, max_size=20),
)
def test_percentiles_monotone_and_bounded(values, ps):
    xs = sorted(values)
    qs = [stats.quantile_sorted(xs, p) for p in sorted(ps)]
    assert all(a <= b for a, b in zip(qs, qs[1:], strict=False))
    assert all(xs[0] <= q <= xs[-1] for q in qs)


# --- open sessions ---------------------------------------------------------------------------------


def overlapping() -> list[SessionRecord]:
    return [
        rec(0.0, 0.1, 3.0),  # A
        rec(1.0, 1.1, 2.0),  # B
        rec(2.0, 2.1, 4.0),  # C: starts the instant B ends -> they never overlap
        rec(2.5, 2.55, 2.6),  # D
    ]


def test_peak_open_exact():
    assert stats.peak_open(overlapping()) == 3  # A, C, D at 2.5 s
    assert stats.peak_open([]) == 0
    # Back-to-back sessions on one slot are never both open.
    assert stats.peak_open([rec(0, 0.1, 1), rec(1, 1.1, 2), rec(2, 2.1, 3)]) == 1


def test_open_sessions_series_bucket_max():
    series = stats.open_sessions_series(overlapping(), 0, 1.0, t_end_ns=ns(4))
    assert series == [(0.0, 1), (1.0, 2), (2.0, 3), (3.0, 1)]
    assert max(n for _, n in series) == stats.peak_open(overlapping())


def test_open_sessions_series_fine_step_and_offset_t0():
    t0 = ns(100)
    shifted = [rec(100 + r.start_ns / S, None, 100 + r.end_ns / S) for r in overlapping()]
    series = stats.open_sessions_series(shifted, t0, 0.5)
    assert series[:6] == [(0.0, 1), (0.5, 1), (1.0, 2), (1.5, 2), (2.0, 2), (2.5, 3)]
    assert series[-1] == (3.5, 1)


def test_warmup_counts_in_open_sessions():
    rs = overlapping() + [rec(0.0, 0.5, 4.0, warmup=True)]
    assert stats.peak_open(rs) == 4
    assert stats.open_sessions_series(rs, 0, 1.0)[0] == (0.0, 2)


def test_session_before_t0_gives_negative_time():
    series = stats.open_sessions_series([rec(-1.0, None, 0.5)], 0, 1.0)
    assert series == [(-1.0, 1), (0.0, 1)]


# --- chunks ----------------------------------------------------------------------------------------


def test_chunk_times_are_first_plus_cumulative_gaps():
    r = rec(0.0, 1.0, 2.0, gaps=[10.0, 20.0])
    assert stats.chunk_times(r) == [ns(1.0), ns(1.01), ns(1.03)]
    assert stats.chunk_times(rec(0.0, None, 1.0, error="connect")) == []


def test_chunks_per_second_series():
    rs = [rec(0.0, 0.5, 2.0, gaps=[100.0, 600.0]), rec(0.0, 0.9, 3.5, gaps=[2500.0])]
    # chunk times: 0.5, 0.6, 1.2 and 0.9, 3.4
    assert stats.chunks_per_second_series(rs, 0, 1.0) == [(0.0, 3.0), (1.0, 1.0), (2.0, 0.0), (3.0, 1.0)]
    assert stats.chunks_per_second_series(rs, 0, 2.0) == [(0.0, 2.0), (2.0, 0.5)]
    assert stats.chunks_in_window(rs, 0, ns(1.0)) == 3


def test_step_for_and_downsample():
    assert stats.step_for(60, 0.1) == 0.1
    assert stats.step_for(600, 0.1) == 0.5  # 600 / 2000 = 0.3 -> next 1-2-5 step
    assert stats.step_for(3600, 1.0) == 2.0
    assert len(stats.open_sessions_series([rec(0, None, 3600)], 0, stats.step_for(3600, 0.1))) <= 2000
    series = [[float(i), float(i % 7)] for i in range(5000)]
    down = stats.downsample(series, 2000)
    assert len(down) <= 2000
    assert max(p[1] for p in down) == 6.0


# --- goodput ---------------------------------------------------------------------------------------


def test_goodput_needs_completion_and_every_slo():
    rs = [
        rec(0.0, 0.1, 1.0, gaps=[10.0, 20.0]),  # good
        rec(0.0, 0.6, 1.0),  # TTFC 600 ms > 500
        rec(0.0, 0.1, 3.0),  # E2E 3000 ms > 2000
        rec(0.0, 0.1, 1.0, gaps=[10.0, 80.0]),  # its own p99 gap 79.3 ms > 50
        rec(0.0, 0.1, 1.0, error="no_done"),  # failed
        rec(1.0, 1.1, 2.0),  # good
        rec(0.0, 0.1, 1.0, warmup=True),  # ignored
    ]
    g = stats.goodput(rs, {"ttfc_ms": 500, "e2e_ms": 2000, "gap_ms": 50})
    assert g["sessions"] == 2
    assert g["fraction"] == pytest.approx(2 / 6)
    assert g["per_s"] == pytest.approx(2 / 3.0)  # window: 0 s to 3 s
    assert g["slo"] == {"ttfc_ms": 500, "e2e_ms": 2000, "gap_ms": 50}


def test_goodput_rejects_unknown_slo():
    with pytest.raises(ValueError, match="ttfc"):
        stats.goodput([], {"ttft_ms": 1})


# --- summary ---------------------------------------------------------------------------------------


def baseline_run(slo: dict[str, float] | None = None) -> RunData:
    records = [
        rec(0.0, 0.1, 1.0, connected=0.001, sent=0.002, gaps=[100.0, 200.0], relay_delay=[1.0, 2.0, 3.0]),
        rec(0.5, 0.8, 2.0, sent=0.6, gaps=[300.0, 300.0], relay_delay=[4.0]),
        rec(1.0, None, 1.5, error="http_429", connected=1.004),
        rec(0.0, 5.0, 6.0, warmup=True),  # slow, but warmup: only open-session counts see it
        rec(3.0, 3.05, 3.5, target="direct", gaps=[100.0, 100.0]),
        rec(3.0, 3.15, 4.0, target="direct", gaps=[100.0, 100.0]),
        rec(3.2, None, 3.3, target="direct", error="reset"),
    ]
    return RunData(
        command=["loadtest", "run", "--concurrency", "2", "--baseline", "--slo", "ttfc_ms=200"],
        config={"concurrency": 2, "duration_s": 10, "warmup_s": 0.1},
        started_unix=1_700_000_000.0,
        t0_ns=0,
        t_end_ns=ns(10),
        records=records,
        processes=[
            ProcessUsage("relay", 11, 0.7, 200_000_000, 100_000_000),
            ProcessUsage("sim", 12, 0.3, 50_000_000, 40_000_000),
            ProcessUsage("loadtest", 13, 1.1, 80_000_000),
            ProcessUsage("loadtest-worker", 14, 0.9, 90_000_000),
        ],
        slo=slo,
        fd_limit=(20_000, 20_000),
    )


def test_summary_counts_errors_and_warmup_exclusion():
    s = stats.summarize(baseline_run())
    assert s["target"] == "relay"
    assert (s["sessions"], s["completed"], s["failed"], s["warmup_sessions"]) == (3, 2, 1, 1)
    assert s["errors_by_kind"] == {"http_429": 1}
    assert s["direct"]["errors_by_kind"] == {"reset": 1}
    assert s["peak_concurrency"] == 3  # warmup session counts: it is open from 0 s to 6 s
    # Latencies ignore the 5 s warmup TTFC and the failed session.
    assert s["ttfc_ms"]["count"] == 2
    assert s["ttfc_ms"]["p50"] == pytest.approx(200.0)  # 100 and 300 ms
    assert s["ttfc_ms"]["p99"] == pytest.approx(298.0)
    assert s["ttfc_ms"]["max"] == pytest.approx(300.0)
    assert s["ttfc_sent_ms"]["min"] == pytest.approx(98.0)
    assert s["e2e_ms"]["p50"] == pytest.approx(1250.0)
    assert s["gap_ms"]["count"] == 4
    assert s["relay_delay_ms"]["count"] == 4
    assert s["first_chunk_delay_ms"]["count"] == 2  # one per session: its first stamped chunk
    assert s["first_chunk_delay_ms"]["max"] == pytest.approx(4.0)
    assert s["first_chunk_delay_ms"]["min"] == pytest.approx(1.0)
    assert "relay_delay_ms" not in s["direct"]
    assert s["connect_ms"]["count"] == 2  # failed sessions' connects count
    assert s["connect_ms"]["p50"] == pytest.approx(2.5)
    assert s["duration_s"] == pytest.approx(2.0)  # 0 s to 2 s: warmup excluded
    assert s["run_duration_s"] == pytest.approx(10.0)
    assert s["requests_per_s"] == pytest.approx(1.0)
    assert s["chunks"] == 6
    assert s["chunks_per_s"] == pytest.approx(3.0)
    assert s["tokens"] == {"prompt": 30, "completion": 6}
    assert s["tokens_per_s"] == pytest.approx(3.0)
    assert "goodput" not in s


def test_summary_overhead_is_difference_of_percentiles():
    s = stats.summarize(baseline_run())
    d = s["direct"]
    assert d["ttfc_ms"]["p50"] == pytest.approx(100.0)  # 50 and 150 ms
    assert s["overhead_ms"]["ttfc_p50"] == pytest.approx(100.0)
    assert s["overhead_ms"]["ttfc_p99"] == pytest.approx(298.0 - 149.0)
    assert s["overhead_ms"]["e2e_p50"] == pytest.approx(1250.0 - 750.0)
    assert s["overhead_ms"]["e2e_p99"] == pytest.approx(1495.0 - 995.0)


def test_summary_process_costs():
    s = stats.summarize(baseline_run())
    # relay chunks in [0, 10 s]: 3 + 3 + the warmup session's 1 = 7
    assert s["relay_cpu_us_per_chunk"] == pytest.approx(0.7 / 7 * 1e6)
    # every target's chunks: 7 relay + 6 direct
    assert s["loadtest_cpu_us_per_chunk"] == pytest.approx(2.0 / 13 * 1e6)
    assert s["loadtest_cpu_utilization"] == pytest.approx(2.0 / (10 * 2))
    assert s["loadtest_cpu_share"] is None  # the machine's cores unknown: no share of them
    run = baseline_run()
    run.cores = 4
    assert stats.summarize(run)["loadtest_cpu_share"] == pytest.approx(2.0 / (10 * 4))
    assert s["relay_mem_per_stream_bytes"] == pytest.approx(100_000_000 / 3)


def test_summary_goodput_with_slo():
    s = stats.summarize(baseline_run(slo={"ttfc_ms": 200}))
    assert s["goodput"]["sessions"] == 1
    assert s["goodput"]["fraction"] == pytest.approx(1 / 3)
    assert s["direct"]["goodput"]["sessions"] == 2


def test_summary_without_baseline_or_processes():
    run = baseline_run()
    run.records = [r for r in run.records if r.target == "relay"]
    run.processes = []
    s = stats.summarize(run)
    assert "direct" not in s and "overhead_ms" not in s
    assert "relay_cpu_us_per_chunk" not in s and "relay_mem_per_stream_bytes" not in s


def test_summary_of_empty_run():
    run = RunData(command=["loadtest"], config={}, started_unix=0.0, t0_ns=0, t_end_ns=0, records=[])
    s = stats.summarize(run)
    assert s["sessions"] == 0 and s["ttfc_ms"]["count"] == 0 and s["requests_per_s"] is None


def test_histogram_shares_edges_and_counts_everything():
    h = stats.histogram({"relay": [1.0, 2.0, 100.0], "direct": [5.0]}, bins=10)
    assert h["scale"] == "log"
    assert len(h["edges"]) == 11 and h["edges"][0] == 1.0 and h["edges"][-1] == 100.0
    assert sum(h["counts"]["relay"]) == 3 and sum(h["counts"]["direct"]) == 1
    assert h["counts"]["relay"][-1] == 1  # the maximum falls in the closed last bucket
    assert stats.histogram({"relay": []})["edges"] == []


def test_unverified_is_completed_not_verified_and_resent_is_counted():
    """A stream without the sim's stamps completed by the protocol: goodput counts it; verified does not."""
    stripped = rec(0.0, 0.1, 1.0)
    stripped.unverified = True
    resent = rec(0.2, 0.3, 1.2)
    resent.resent = 1
    rs = [rec(0.0, 0.1, 1.0), stripped, resent, rec(0.5, None, 0.6, error="bad_seq")]
    run = RunData(command=["loadtest"], config={}, started_unix=0.0, t0_ns=0, t_end_ns=ns(2), records=rs,
                  slo={"ttfc_ms": 500})
    s = stats.summarize(run)
    assert (s["sessions"], s["completed"], s["verified"], s["unverified"], s["failed"]) == (4, 3, 2, 1, 1)
    assert s["resent"] == 1
    assert s["ttfc_ms"]["count"] == 3
    assert s["goodput"]["sessions"] == 3
    assert s["errors_by_kind"] == {"bad_seq": 1}
