"""result.json layout, report.md rendering, written files and the report round-trip from disk."""

from __future__ import annotations

import json

import pytest

from loadtest import report, stats
from loadtest.record import ProcessUsage, RunData, SessionRecord

S = 1_000_000_000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MACHINE = {"cpus": 16, "fd_limit_soft": 20000, "fd_limit_hard": 20000, "python": "CPython 3.12.0",
           "platform": "Linux", "hostname": "bench"}


def ns(seconds: float) -> int:
    return round(seconds * S)


def session(target: str, start: float, ttfc: float | None, e2e: float, *, gaps=(50.0, 50.0), error=None,
            warmup=False, delays=()) -> SessionRecord:
    return SessionRecord(
        target=target, intended_ns=ns(start), start_ns=ns(start), connected_ns=ns(start + 0.001),
        sent_ns=ns(start + 0.002), first_chunk_ns=None if ttfc is None else ns(start + ttfc),
        end_ns=ns(start + e2e), status=200, chunks=0 if ttfc is None else 1 + len(gaps),
        done=error is None, gaps_ms=list(gaps) if ttfc is not None else [], relay_delay_ms=list(delays),
        prompt_tokens=12, completion_tokens=3, error_kind=error, warmup=warmup,
    )


def make_run(*, baseline: bool = True, slo=None, warnings=None) -> RunData:
    records = [
        session("relay", 0.0, 0.100, 1.0, delays=(0.5, 0.6, 0.7)),
        session("relay", 0.2, 0.300, 1.5, delays=(0.8,)),
        session("relay", 0.4, 0.200, 1.2),
        session("relay", 0.5, None, 0.6, error="http_429"),
        session("relay", 0.6, None, 0.7, error="timeout"),
        session("relay", 0.7, None, 0.8, error="timeout"),
        session("relay", 0.0, 0.050, 0.5, warmup=True),
    ]
    if baseline:
        records += [session("direct", 3.0, 0.040, 0.9), session("direct", 3.1, 0.060, 1.1)]
    return RunData(
        command=["loadtest", "run", "--concurrency", "3", "--prompt", "hello world"],
        config={"concurrency": 3, "duration_s": 5, "stream": True},
        started_unix=1_700_000_000.0,
        t0_ns=0,
        t_end_ns=ns(5),
        records=records,
        processes=[ProcessUsage("relay", 101, 0.5, 120 * 2**20, 100 * 2**20),
                   ProcessUsage("loadtest", 102, 4.6, 60 * 2**20)],
        warnings=list(warnings or []),
        slo=slo,
        fd_limit=(20000, 20000),
    )


def test_build_result_has_every_field():
    result = report.build_result(make_run(slo={"ttfc_ms": 250}))
    assert result["schema_version"] == 1
    assert result["command"][0] == "loadtest"
    assert result["command_line"] == "loadtest run --concurrency 3 --prompt 'hello world'"
    assert result["started_at"] == "2023-11-14T22:13:20+00:00"
    assert result["config"] == {"concurrency": 3, "duration_s": 5, "stream": True}
    assert set(result["machine"]) == {"cpus", "fd_limit_soft", "fd_limit_hard", "python", "platform", "hostname"}
    assert result["machine"]["fd_limit_soft"] == 20000
    assert set(result["versions"]) == {"moonrelay", "trio", "httpx", "hypercorn", "quart", "quart_trio", "h11"}
    assert result["versions"]["trio"] is not None
    assert result["processes"][0] == {"role": "relay", "pid": 101, "cpu_s": 0.5, "peak_rss_bytes": 120 * 2**20,
                                      "idle_rss_bytes": 100 * 2**20, "per_process": None}
    assert result["interrupted"] is False

    s = result["summary"]
    for key in ("sessions", "completed", "failed", "errors_by_kind", "peak_concurrency", "duration_s",
                "requests_per_s", "chunks_per_s", "tokens_per_s", "chunks", "connect_ms", "ttfc_ms",
                "ttfc_sent_ms", "e2e_ms", "gap_ms", "relay_delay_ms", "first_chunk_delay_ms", "tokens", "goodput",
                "overhead_ms",
                "direct", "relay_cpu_us_per_chunk", "loadtest_cpu_us_per_chunk", "loadtest_cpu_utilization",
                "relay_mem_per_stream_bytes"):
        assert key in s, key
    for block in stats.LATENCY_BLOCKS:
        assert set(s[block]) == {"p50", "p90", "p95", "p99", "p99.9", "min", "max", "mean", "count"}
    assert s["errors_by_kind"] == {"http_429": 1, "timeout": 2}
    assert set(s["goodput"]) == {"slo", "sessions", "fraction", "per_s"}
    assert set(s["overhead_ms"]) == {"ttfc_p50", "ttfc_p99", "e2e_p50", "e2e_p99"}
    assert s["overhead_ms"]["ttfc_p50"] == pytest.approx(200.0 - 50.0)
    assert s["tokens"] == {"prompt": 72, "completion": 18}
    assert s["relay_mem_per_stream_bytes"] == pytest.approx(20 * 2**20 / s["peak_concurrency"])

    series = result["series"]
    assert series["open_sessions"] and all(len(p) == 2 for p in series["open_sessions"])
    assert max(n for _, n in series["open_sessions"]) == s["peak_concurrency"]
    # chunks: 4 relay sessions (warmup included) and 2 direct, 3 each
    assert sum(n for _, n in series["chunks_per_s"]) * series["chunks_per_s_step_s"] == 4 * 3 + 2 * 3
    h = result["histograms"]["ttfc_ms"]
    assert set(h["counts"]) == {"relay", "direct"}
    assert len(h["edges"]) == len(h["counts"]["relay"]) + 1
    json.dumps(result, allow_nan=False)  # strict JSON


def test_derived_warnings():
    # 4.6 CPU-seconds over a 5 s run in one loadtest process: 92 %.
    result = report.build_result(make_run(warnings=["fd soft limit raised to 20000"]), machine=MACHINE)
    ws = result["warnings"]
    assert ws[0] == "fd soft limit raised to 20000"
    assert any("load generator near saturation" in w for w in ws)
    assert any("3 of 6 sessions failed" in w for w in ws)


def test_series_are_bounded_for_long_runs():
    recs = [session("relay", i * 3.0, 0.1, 2.0) for i in range(3000)]  # a 9,000 s run
    run = RunData(command=["loadtest"], config={}, started_unix=0.0, t0_ns=0, t_end_ns=ns(9000), records=recs)
    result = report.build_result(run, machine=MACHINE, versions={})
    assert len(result["series"]["open_sessions"]) <= 2000
    assert len(result["series"]["chunks_per_s"]) <= 2000
    assert result["summary"]["peak_concurrency"] == 1


def test_render_markdown_has_command_and_headline_numbers():
    result = report.build_result(make_run(slo={"ttfc_ms": 250}), machine=MACHINE, versions={"trio": "0.30"})
    md = report.render_markdown(result)
    assert "```sh\n./dev loadtest run --concurrency 3 --prompt 'hello world'\n```" in md  # runs from a clone
    assert "| Metric | relay | direct | overhead (ms) |" in md
    assert "| TTFC p50 (ms) | 200.0 | 50.00 | 150.0 |" in md
    assert "| Sessions | 6 | 2 |  |" in md
    assert "| Failed | 3 | 0 |  |" in md
    assert "| Peak concurrency | 6 | 2 |  |" in md
    assert "Relay delay p50 (ms)" in md
    assert "Goodput (fraction) | 33.3%" in md
    assert "`timeout` | 2" in md
    assert "⚠ load generator near saturation" in md
    assert "Relay CPU per chunk" in md and "Load generator CPU utilisation (per load process): 92.0%" in md
    assert "`concurrency` | `3`" in md
    assert "![ttfc_distribution](ttfc_distribution.png)" in md
    assert "difference of percentiles" in md and "intended" in md and "CLOCK_MONOTONIC" in md


def test_render_markdown_without_baseline():
    md = report.render_markdown(report.build_result(make_run(baseline=False), machine=MACHINE, versions={}))
    assert "| Metric | relay |" in md and "direct" not in md.split("## Latency")[0].split("## Headline")[1]


def test_write_outputs_and_report_round_trip(tmp_path):
    run = make_run(slo={"ttfc_ms": 250, "e2e_ms": 2000})
    result = report.write_outputs(tmp_path, run)
    for name in ("result.json", "requests.jsonl", "report.md", *report.PLOT_FILES):
        assert (tmp_path / name).is_file(), name
    for name in report.PLOT_FILES:
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC
    lines = (tmp_path / "requests.jsonl").read_text().splitlines()
    assert len(lines) == len(run.records)
    assert SessionRecord.from_json(json.loads(lines[0])) == run.records[0]
    assert [json.loads(line) for line in lines] == [json.loads(json.dumps(r.to_json())) for r in run.records]

    loaded = report.load_result(tmp_path / "result.json")
    assert loaded == json.loads(json.dumps(result))
    md = (tmp_path / "report.md").read_text()
    assert report.render_markdown(loaded) == md

    # `loadtest report DIR/result.json`: everything again from the file alone.
    again = tmp_path / "again"
    written = report.write_report(again, loaded)
    assert (again / "report.md").read_text() == md
    assert {p.name for p in written} == {"report.md", "report.html", *report.PLOT_FILES}


def test_write_outputs_without_requests(tmp_path):
    report.write_outputs(tmp_path, make_run(baseline=False), save_requests=False)
    assert not (tmp_path / "requests.jsonl").exists()
    assert (tmp_path / "result.json").is_file()


def test_empty_run_renders(tmp_path):
    run = RunData(command=["loadtest"], config={}, started_unix=0.0, t0_ns=0, t_end_ns=0, records=[],
                  interrupted=True)
    result = report.write_outputs(tmp_path, run)
    assert result["summary"]["sessions"] == 0
    assert "Interrupted" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "ttfc_distribution.png").read_bytes()[:8] == PNG_MAGIC


def test_ten_thousand_sessions_plot_bounded_series(tmp_path):
    """What keeps drawing cheap for any run size: every series in result.json is bounded, not one point per session
    (asserted on the document, not on a wall clock)."""
    recs = [session("relay", i * 0.006, 0.05 + (i % 97) / 1000, 2.0 + (i % 13) / 10, gaps=[20.0] * 20)
            for i in range(10_000)]
    run = RunData(command=["loadtest"], config={}, started_unix=0.0, t0_ns=0, t_end_ns=ns(65), records=recs)
    result = report.build_result(run, machine=MACHINE, versions={})
    from loadtest import plots

    def lengths(node):
        if isinstance(node, list):
            yield len(node)
            for item in node:
                yield from lengths(item)
        elif isinstance(node, dict):
            for value in node.values():
                yield from lengths(value)

    assert max(lengths(result)) <= stats.MAX_SERIES_POINTS
    plots.write_plots(result, tmp_path)
    assert sorted(p.suffix for p in tmp_path.iterdir()) and all(p.stat().st_size > 0 for p in tmp_path.iterdir())
    assert result["summary"]["peak_concurrency"] == stats.peak_open(recs)


def test_worker_balance_is_reported_per_process():
    run = make_run()
    workers = [{"pid": 11, "cpu_s": 1.5, "peak_fds": 10040}, {"pid": 12, "cpu_s": 1.4, "peak_fds": 9990}]
    run.processes.append(ProcessUsage(role="relay", pid=10, cpu_s=2.9, peak_rss_bytes=1, per_process=workers))
    result = json.loads(json.dumps(report.build_result(run)))
    md = report.render_markdown(result)
    assert "worker balance" in md
    rows = [line for line in md.splitlines() if line.startswith(("| relay | 11 |", "| relay | 12 |"))]
    assert len(rows) == 2 and "10,040" in rows[0] and "9,990" in rows[1]


def test_unverified_and_resent_are_said_prominently():
    run = make_run(baseline=False)
    for r in run.records[:2]:
        r.unverified = True
    run.records[2].resent = 1
    result = report.build_result(run, machine=MACHINE, versions={})
    s = result["summary"]
    assert (s["completed"], s["verified"], s["unverified"], s["failed"], s["resent"]) == (3, 1, 2, 3, 1)
    assert any(w.startswith("completeness unverified: 2 of 3 completed sessions") for w in result["warnings"])
    assert any(w.startswith("1 request re-sent on a fresh connection") for w in result["warnings"])
    md = report.render_markdown(result)
    assert "| Completed | 3 |" in md
    assert "| … verified (sim stamps: no chunk lost) | 1 |" in md
    assert "| … unverified (no sim stamps) | 2 |" in md
    assert "| Re-sent (connection found closed before writing) | 1 |" in md
    assert "> ⚠ completeness unverified: 2 of 3 completed sessions" in md
    assert "**Unverified**" in md and "**Verified**" in md and "**Re-sent**" in md
