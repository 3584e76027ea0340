"""bench/capacity.py's pure parts: the search's next count, the verdict of one step, the report."""

from bench.capacity import FAIL, PASS, RIG, added, capacity, judge, next_count, render, rig_share


def drive(limit: int, start: int = 50, maximum: int = 2000, resolution: float = 0.1) -> list[int]:
    """The counts the search runs against a proxy that holds exactly ``limit`` streams."""
    outcomes: dict[int, str] = {}
    while (n := next_count(outcomes, start, maximum, resolution)) is not None:
        assert n not in outcomes, f"{n} run twice"
        outcomes[n] = PASS if n <= limit else FAIL
    return list(outcomes)


def test_doubles_then_bisects_to_within_the_resolution():
    counts = drive(700)
    assert counts[:5] == [50, 100, 200, 400, 800]
    outcomes = {n: PASS if n <= 700 else FAIL for n in counts}
    best = capacity(outcomes)
    assert best <= 700 and 700 - best <= 70  # within 10 % of the pass
    assert len(counts) <= 10


def test_exact_to_one_stream_with_zero_resolution():
    counts = drive(333, resolution=0)
    assert capacity({n: PASS if n <= 333 else FAIL for n in counts}) == 333


def test_stops_at_the_maximum_when_everything_passes():
    assert drive(10_000, start=50, maximum=300) == [50, 100, 200, 300]


def test_first_step_failing_searches_below_the_start():
    counts = drive(10, start=50, resolution=0)
    assert counts[0] == 50 and capacity({n: PASS if n <= 10 else FAIL for n in counts}) == 10


def test_rig_saturation_ends_the_search():
    assert next_count({50: PASS, 100: RIG}, 50, 2000) is None
    assert capacity({50: PASS, 100: RIG}) == 50


def figs(**kw):
    return {"completed": 100, "failed": 0, "unverified": 0, "ttfc_p50_ms": 2000.0, "ttfc_p99_ms": 2900.0,
            "relay_delay_p50_ms": 0.5, "relay_delay_p99_ms": 2.0, "first_chunk_delay_p50_ms": 0.4,
            "first_chunk_delay_p99_ms": 1.0, **kw}


def test_judge_against_direct_at_the_same_count():
    direct = figs()
    assert judge(100, figs(relay_delay_p99_ms=11.9), direct, 0.5).outcome == PASS  # 9.9 ms added
    assert judge(100, figs(relay_delay_p99_ms=12.1), direct, 0.5).outcome == FAIL
    assert judge(100, figs(failed=1), direct, 0.5).outcome == FAIL
    assert judge(100, figs(unverified=1), direct, 0.5).outcome == FAIL
    assert judge(100, figs(completed=99), direct, 0.5).outcome == FAIL
    assert judge(100, figs(), direct, 0.9).outcome == RIG


def test_added_and_rig_share():
    a = added(figs(ttfc_p99_ms=2950.0, relay_delay_p50_ms=1.5, first_chunk_delay_p99_ms=4.0), figs())
    assert a == {"added_ttfc_p50_ms": 0.0, "added_ttfc_p99_ms": 50.0, "added_delay_p50_ms": 1.0,
                 "added_delay_p99_ms": 0.0, "added_first_chunk_p50_ms": 0.0, "added_first_chunk_p99_ms": 3.0}
    record = {"summary": {"run_duration_s": 10.0, "loadtest_cpu_s": 6.0}, "sim_usage": {"cpu_s": 3.0}}
    assert rig_share(record, 1) == 0.9
    assert rig_share({"summary": {}}, 1) is None


def test_render_names_the_answer_and_the_rig():
    steps = [{"streams": 50, "outcome": PASS, "reason": "ok", "rig_share": 0.2,
              "target": {"cpu_us_per_chunk": 120.0, "mem_per_stream_kb": 25.0},
              **added(figs(relay_delay_p99_ms=3.0), figs())},
             {"streams": 100, "outcome": RIG, "reason": "rig used 95% of its cores", "rig_share": 0.95,
              "target": {}}]
    text = render("moonrelay", steps, command="python -m bench.capacity", pinning="proxy on core 0",
                  max_added_ms=10)
    assert "**50 streams per proxy core**" in text
    assert "rig saturated first at 100 streams" in text
    assert "| CPU per chunk (µs) | 120.0 |" in text and "| RSS per stream (KB) | 25.0 |" in text
    assert "| 0.0 / 1.0 |" in text  # added delay p50 / p99 of the passing step
    assert "No count passed" in render("x", [{"streams": 50, "outcome": FAIL, "reason": "r"}], command="c",
                                       pinning="p", max_added_ms=10)
