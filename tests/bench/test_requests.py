"""bench/requests.py's pure parts (percentiles, the rate verdicts, hey's output, the report) and bench/openloop.py
against an in-process sim over real sockets."""

import json

from bench.openloop import closed_loop, open_loop, request_bytes
from bench.requests import BODY, Step, highest_rate, holds, parse_hey, percentile, render, summarise
from tests.conftest import start_sim

HEY = """
Summary:
  Total:	1.0123 secs
  Requests/sec:	493.9243

Latency distribution:
  10%% in 0.0012 secs
  50%% in 0.0021 secs
  99%% in 0.0150 secs

Status code distribution:
  [200]	495 responses
  [502]	5 responses
"""


def step(rate, p99, *, sent=100, ok=100):
    return Step(rate=rate, sent=sent, ok=ok, failed=sent - ok, p50_ms=p99 / 2, p99_ms=p99, p999_ms=p99,
                client_cpu_share=0.1)


def test_percentile_is_nearest_rank():
    assert percentile([5, 1, 3, 2, 4], 50) == 3
    assert percentile(list(range(1, 101)), 99) == 99
    assert percentile([7], 99.9) == 7
    nan = percentile([], 50)
    assert nan != nan


def test_a_step_holds_only_with_every_request_answered_and_p99_within_the_bound_over_direct():
    direct = step(500, 2.0)
    assert holds(step(500, 2.9), direct, 1.0)
    assert not holds(step(500, 3.1), direct, 1.0)
    assert not holds(step(500, 2.1, ok=99), direct, 1.0)


def test_the_highest_rate_is_the_top_of_the_unbroken_run_from_the_lowest_step():
    direct = {r: step(r, 1.0) for r in (250, 500, 1000, 2000)}
    steps = [step(250, 1.2), step(500, 1.8), step(1000, 9.0), step(2000, 1.5)]  # 2000 passes by chance: not counted
    assert highest_rate(steps, direct, 1.0) == 500
    assert highest_rate(steps, direct, 10.0) == 2000
    assert highest_rate([step(250, 50.0)], direct, 10.0) is None


def test_hey_output_is_read():
    got = parse_hey(HEY)
    assert got["requests_per_s"] == 493.9243
    assert got["p50_ms"] == 2.1 and got["p99_ms"] == 15.0
    assert got["statuses"] == {200: 495, 502: 5}


def test_the_report_shows_added_latency_against_direct_of_the_same_repeat():
    def rec(p50, p99, cpu):
        return {"closed": {"cpu_us_per_request": cpu}, "steps": [{**step(500, p99).__dict__, "p50_ms": p50}]}

    direct = [rec(1.0, 2.0, 400.0), rec(1.0, 3.0, 410.0)]
    relay = [rec(1.5, 2.5, 300.0), rec(1.2, 4.0, 320.0)]
    nginx = [rec(1.1, 2.1, 60.0), rec(1.1, 3.1, 62.0)]
    medians = {t: summarise(r, direct, 500.0) for t, r in (("direct", direct), ("moonrelay", relay), ("nginx", nginx))}
    assert medians["moonrelay"]["added_latency_p99_ms"] == 0.75  # (0.5 + 1.0) / 2
    assert medians["moonrelay"]["cpu_us_per_request"] == 310.0
    text = render({"command": "python -m bench.requests --out x", "rate": 500.0, "rates": [500.0], "duration_s": 5.0,
                   "repeat": 2, "connections": 50, "per_connection": 100, "machine": {"cores": 2},
                   "versions": {"moonrelay": "git abc"}, "medians": medians})
    row = next(line for line in text.splitlines() if line.startswith("| moonrelay"))
    assert "310.0 (5.1×)" in row and "0.8 / 0.8" not in row


async def test_both_loops_answer_against_a_sim_over_real_sockets(nursery):
    sim = await start_sim(nursery, ttft=0, interval=0, chunks=2)
    host, port = sim.host, sim.port
    data = request_bytes(host, port, "/v1/chat/completions", BODY)
    closed = await closed_loop(host, port, data, 3, 4)
    assert closed.ok == 12 and not closed.failures
    opened = await open_loop(host, port, data, 200.0, 0.1)
    assert opened.sent == 20 and opened.ok == 20 and len(opened.latencies_ns) == 20
    assert json.loads(BODY)["stream"] is False


def test_a_run_writes_scenario_documents_the_summary_reads(tmp_path):
    from bench.archive import discover
    from bench.requests import write_scenario_docs

    med = {"cpu_us_per_request": 300.0, "added_latency_p99_ms": 0.8}
    run = {"closed": {"cpu_us_per_request": 300.0}, "steps": []}
    folder = tmp_path / "requests-x"
    folder.mkdir()
    write_scenario_docs({"out": str(folder), "connections": 50, "per_connection": 100, "rate": 500.0,
                         "rates": [500.0], "duration_s": 5.0, "command": "python -m bench.requests",
                         "machine": {"date (UTC)": "2026-12-07 17:00"}, "versions": {"moonrelay": "git abc"},
                         "medians": {"moonrelay": med, "nginx": {"cpu_us_per_request": 70.0}},
                         "runs": {"moonrelay": [run], "nginx": [run]}})
    runs, left_out = discover(tmp_path)
    assert not left_out
    (found,) = runs
    assert found.scenario == "requests" and found.commit == "git abc"
    assert round(found.ratio("moonrelay", "cpu_us_per_request"), 2) == 4.29


def test_the_requests_shape_is_described_for_the_summary():
    """bench.summary heads each scenario with its shape in words; a ``requests`` run has no streams or chunks."""
    from bench.readme import describe

    text = describe({"name": "requests", "connections": 50, "per_connection": 100, "rate": 500.0,
                     "rates": [250.0, 500.0, 1000.0], "duration_s": 3.0})  # fmt: skip
    assert text.startswith("50 kept-alive connections × 100 non-streaming requests")
    assert "500 requests/s" in text and "250, 500, 1000 requests/s, 3 s each" in text
