"""bench/clientbias.py's pure parts: the comparison of two clients' TTFC and its report."""

import pytest

from bench.clientbias import compare, phase_row, raw_phases, render, summarize


def test_compare_is_loadtest_minus_raw_at_each_percentile():
    lt = [1000.0 + i for i in range(101)]  # p50 1050, p99 1099
    raw = [1000.0 + i / 2 for i in range(101)]  # p50 1025, p99 1049.5
    c = compare(lt, raw)
    assert c["loadtest_p50_ms"] == 1050 and c["raw_p50_ms"] == 1025 and c["diff_p50_ms"] == 25
    assert c["diff_p99_ms"] == pytest.approx(1099 - 1049.5)
    assert c["loadtest_sessions"] == c["raw_sessions"] == 101


def test_no_samples_no_difference():
    c = compare([], [1000.0])
    assert c["diff_p50_ms"] is None and c["raw_p50_ms"] == 1000.0


def test_summary_pools_samples_and_takes_median_cpu_shares():
    reps = [{**compare([1004.0], [1000.0]), "loadtest_cpu_share": s, "raw_cpu_share": 0.1} for s in (0.2, 0.4, 0.9)]
    result = summarize(reps, {"loadtest": [1004.0, 1010.0, 1030.0], "raw": [1000.0, 1001.0, 1002.0]},
                       command="python -m bench.clientbias", concurrency=500, ttft_s=1.0)
    assert result["loadtest_cpu_share"] == 0.4 and result["repeat"] == 3
    assert result["pooled"]["diff_p50_ms"] == 9.0
    text = render(result)
    assert "# Load generator bias at 500 streams" in text
    assert "| TTFC p50 (ms, all repeats pooled) | 1010.0 | 1001.0 | 9.0 |" in text
    assert "p50 within 10 ms (pooled): met" in text
    assert "| CPU share of the machine, ? cores (median) | 40.0% | 10.0% | |" in text
    assert text.count("| 1004.0 / 1004.0 | 1000.0 / 1000.0 | 4.0 / 4.0 |") == 3
    # Each repeat's difference is 4 ms: the median of the repeats meets the goal that the pooled p50 misses.
    assert result["median_diff_p50_ms"] == 4.0 and "median of the repeats: met" in text
    assert result["noise"] == {"raw_p50_min_ms": 1000.0, "raw_p50_max_ms": 1000.0,
                               "diff_p50_min_ms": 4.0, "diff_p50_max_ms": 4.0}


def test_read_lag_percentiles_and_versions_reach_the_readme():
    lags = [0.1 * i for i in range(101)]  # p50 5.0, p99 9.9
    phases = {"loadtest": {"sent": [], "headers": [], "read_lag": lags}, "raw": {}}
    result = summarize([], {"loadtest": [], "raw": [], "phases": phases}, command="c", concurrency=1, ttft_s=1.0,
                       versions={"trio": "0.35.0"})
    assert result["first_chunk_read_lag_ms"]["p50"] == pytest.approx(5.0)
    text = render(result)
    assert "first-chunk read lag" in text and "p99 9.90 ms" in text and "Versions: trio 0.35.0." in text


def test_goal_met_within_ten_ms_unless_told_otherwise():
    result = summarize([], {"loadtest": [1009.0], "raw": [1000.0]}, command="c", concurrency=1, ttft_s=1.0)
    assert "p50 within 10 ms (pooled): met" in render(result) and "p99 within 10 ms (pooled): met" in render(result)
    strict = summarize([], {"loadtest": [1009.0], "raw": [1000.0]}, command="c", concurrency=1, ttft_s=1.0, goal_ms=5)
    assert "p50 within 5 ms (pooled): missed by 4.0 ms" in render(strict)
    # One-sided: a load generator that reads first chunks earlier than the reference adds nothing of its own.
    earlier = summarize([], {"loadtest": [980.0], "raw": [1000.0]}, command="c", concurrency=1, ttft_s=1.0)
    assert "p50 within 10 ms (pooled): met (loadtest 20.0 ms earlier)" in render(earlier)


def test_phases_of_both_clients_are_compared_pooled_and_by_the_median_of_the_repeats():
    raw_doc = {"sent_ns": [100_000_000, None], "headers_ns": [150_000_000, None], "read_lag_ns": [200_000, None]}
    raw = raw_phases(raw_doc)
    assert raw == {"sent": [100.0], "headers": [150.0], "read_lag": [0.2]}  # a failed session is left out
    lt = {"sent": [103.0], "headers": [151.0], "read_lag": [0.5]}
    row = phase_row(lt, raw)
    assert row["diff_sent_p50_ms"] == pytest.approx(3.0) and row["diff_read_lag_p99_ms"] == pytest.approx(0.3)
    reps = [{**compare([1004.0], [1000.0]), **phase_row({**lt, "sent": [100.0 + d]}, raw), "loadtest_cpu_share": 0.1,
             "raw_cpu_share": 0.1} for d in (1.0, 2.0, 9.0)]
    result = summarize(reps, {"loadtest": [1004.0], "raw": [1000.0], "phases": {"loadtest": lt, "raw": raw}},
                       command="c", concurrency=1, ttft_s=1.0)
    assert result["median_phase_diffs"]["diff_sent_p50_ms"] == pytest.approx(2.0)
    text = render(result)
    assert "| requests written | 103.00 / 103.00 | 100.00 / 100.00 | 3.00 / 3.00 | 2.00 / 2.00 |" in text
    assert "first-chunk read lag" in text and "| 0.50 / 0.50 | 0.20 / 0.20 |" in text
