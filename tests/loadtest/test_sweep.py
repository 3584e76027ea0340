"""The sweep's decisions, sans I/O (loadtest/sweep.py): objectives, verdicts, saturation, the load generator as the
limit, and the planner driven by targets whose knee the test knows."""

from __future__ import annotations

import pytest

from loadtest.sweep import (
    Objective,
    Planner,
    StepRun,
    judge,
    limit_summary,
    limit_warnings,
    parse_objectives,
    parse_steps,
    saturation,
    step_figures,
)


def test_parse_objectives():
    got = parse_objectives("ttft_p99=2s, itl_p99=200ms,tpot_p50=40,errors=1%,goodput=95%,gap_p99.9=1s")
    assert [(o.figure, o.limit, o.ceiling) for o in got] == [
        ("ttft_p99", 2000.0, True), ("itl_p99", 200.0, True), ("tpot_p50", 40.0, True), ("errors", 0.01, True),
        ("goodput", 0.95, False), ("gap_p99.9", 1000.0, True)]
    assert parse_objectives("goodput=12.5/s")[0] == Objective("goodput_per_s", 12.5, False)
    assert [o.text() for o in got[:5]] == ["ttft_p99 ≤ 2000 ms", "itl_p99 ≤ 200 ms", "tpot_p50 ≤ 40 ms",
                                           "errors ≤ 1%", "goodput ≥ 95%"]
    for bad in ("latency_p99=1s", "ttft_p97=1s", "errors=2", "ttft_p99", "", "goodput=fast"):
        with pytest.raises(ValueError):
            parse_objectives(bad)


def test_parse_steps():
    assert parse_steps("10..80", integer=True) == [10, 20, 40, 80]
    assert parse_steps("10..100", integer=True) == [10, 20, 40, 80]  # never past the last
    assert parse_steps("1..10x3", integer=False) == [1, 3, 9]
    assert parse_steps("40, 10,20,20", integer=True) == [10, 20, 40]
    assert parse_steps("0.5..2", integer=False) == [0.5, 1, 2]
    for bad in ("0..10", "10..5", "1..4x1", "a,b", "-3"):
        with pytest.raises(ValueError):
            parse_steps(bad, integer=True)


SUMMARY = {
    "sessions": 200, "completed": 196, "failed": 4, "duration_s": 10.0, "requests_per_s": 19.6,
    "ttfc_ms": {"p50": 90.0, "p99": 400.0}, "gap_ms": {"p99": 80.0}, "e2e_ms": {"p99": 2000.0},
    "per_token": {"output_tokens_per_s": 1500.0, "ttft_ms": {"p50": 100.0, "p99": 450.0},
                  "itl_ms": {"p50": 20.0, "p99": 70.0}, "tpot_ms": {"p99": 25.0}},
    "goodput": {"fraction": 0.9, "per_s": 18.0},
    "loadtest_cpu_utilization": 0.3, "loadtest_loop_lag_ms": {"p99": 3.0}, "first_chunk_delay_ms": {"p50": 2.0},
}


def test_step_figures_and_judge():
    f = step_figures(SUMMARY)
    assert (f["errors"], f["goodput"], f["goodput_per_s"], f["throughput"]) == (0.02, 0.9, 18.0, 1500.0)
    assert (f["ttft_p99"], f["ttfc_p99"], f["itl_p99"], f["tpot_p99"], f["gap_p99"]) == (450.0, 400.0, 70.0, 25.0, 80)
    checks = judge(f, parse_objectives("ttft_p99=500ms,itl_p99=50ms,errors=2%,goodput=95%"))
    assert [c.ok for c in checks] == [True, False, True, False]
    no_slo = step_figures({**SUMMARY, "goodput": None})
    assert no_slo["goodput"] == 0.98 and no_slo["goodput_per_s"] == 19.6  # completed share, per second
    nothing = step_figures({"sessions": 3, "failed": 3, "completed": 0})
    assert [c.ok for c in judge(nothing, parse_objectives("ttft_p99=10s,errors=100%"))] == [False, True]


def test_saturation():
    a = {"throughput": 1000.0, "ttft_p50": 100.0, "errors": 0.0}
    assert saturation(None, None, a, 10) is None
    flat = {"throughput": 1020.0, "ttft_p50": 180.0, "errors": 0.0}
    assert "2× the load gave 1.02× the throughput" in saturation(a, 10, flat, 20)
    assert saturation(a, 10, {**flat, "ttft_p50": 120.0}, 20) is None  # latency held: not saturated
    assert saturation(a, 10, {**flat, "throughput": 1900.0}, 20) is None  # it scaled
    assert saturation(a, 10, flat, 12) is None  # too small a step to tell
    assert saturation(None, None, {"errors": 0.6}, 10) == "60% of the sessions failed"


def test_the_load_generator_as_the_limit():
    calm = step_figures(SUMMARY)
    assert limit_warnings(calm, [80.0, 95.0, 100.0], [1.5, 2.0, 2.5]) == []
    busy = {**calm, "loadtest_cpu": 0.95, "loop_lag_p99_ms": 60.0, "first_chunk_delay_p50": 45.0}
    assert limit_warnings(busy, [], [1.5, 2.0, 2.5]) == [
        "CPU 95% of a core per load process", "event-loop lag p99 60 ms",
        "first chunk read 45 ms after the sim sent it (p50) vs 2 ms by a raw probe"]
    starved = {**calm, "loop_lag_p99_ms": 60.0}  # late, though it had work for 30 % of a core: the machine was busy
    assert limit_warnings(starved) == ["event-loop lag p99 60 ms (its CPU was low: the machine's cores were busy)"]
    # without stamps: TTFC, and only beyond the probes' own spread (a random TTFT must not raise it)
    unstamped = {**calm, "first_chunk_delay_p50": None, "ttfc_p50": 600.0}
    assert limit_warnings(unstamped, [100.0, 110.0, 120.0, 130.0]) == ["TTFC p50 600 ms vs 115 ms by a raw probe"]
    assert limit_warnings(unstamped, [100.0, 900.0, 300.0, 1200.0]) == []  # within the probes' spread
    assert limit_warnings(unstamped, [100.0, 110.0]) == []  # too few probes to tell


def test_the_limit_summed_up_over_the_steps():
    calm = {"figures": {"loadtest_cpu": 0.2, "loop_lag_p99_ms": 3.0}, "limits": []}
    assert limit_summary([calm]) is None
    starved = {"figures": {"loadtest_cpu": 0.2, "loop_lag_p99_ms": 58.0},
               "limits": limit_warnings({"loadtest_cpu": 0.2, "loop_lag_p99_ms": 58.0})}
    busy = {"figures": {"loadtest_cpu": 0.97, "loop_lag_p99_ms": 31.0},
            "limits": limit_warnings({"loadtest_cpu": 0.97, "loop_lag_p99_ms": 31.0})}
    assert limit_summary([calm, starved]) == (
        "in 1 of 2 steps the load generator may have been the limit: its event-loop lag p99 up to 58 ms, with its "
        "own CPU low: the machine's cores were busy — add --workers, or load from another machine")
    assert limit_summary([calm, starved, busy]) == (
        "in 2 of 3 steps the load generator may have been the limit: its CPU up to 97% of a core; its event-loop "
        "lag p99 up to 58 ms — add --workers, or load from another machine")


def _drive(planner: Planner, passes, figures=lambda load: {}) -> list[tuple[float, str]]:
    """Run the planner against a target: ``passes(load, nth_run_at_that_load)`` is the verdict."""
    seen: list[tuple[float, str]] = []
    while (nxt := planner.next()) is not None:
        load, phase = nxt
        seen.append(nxt)
        nth = sum(1 for s in seen if s[0] == load)
        ok = passes(load, nth)
        planner.record(StepRun(load, phase, ok, figures(load), [], None))
    return seen


def test_climb_refine_repeat_finds_the_knee():
    planner = Planner([10, 20, 40, 80, 160], repeats=3, refine=10)
    seen = _drive(planner, lambda load, n: load <= 37)
    assert seen[:3] == [(10, "climb"), (20, "climb"), (40, "climb")]  # no step above the first failure
    refined = [load for load, phase in seen if phase == "refine"]
    assert refined[0] == 28  # the geometric midpoint of 20 and 40
    out = planner.outcome()
    assert out["knee"]["load"] == 37 and (out["knee"]["passed"], out["knee"]["runs"]) == (3, 3)
    assert out["first_failure"]["load"] == 38 and out["first_failure"]["runs"] == 3  # adjacent: the knee is exact
    assert out["stop"] == "an objective broke at 40" and not out["budget_spent"]
    assert [p for _, p in seen[-4:]] == ["repeat"] * 4


def test_a_limited_refinement_answers_with_what_it_found():
    planner = Planner([10, 20, 40, 80], repeats=2, refine=2)
    _drive(planner, lambda load, n: load <= 37)
    out = planner.outcome()
    assert out["knee"]["load"] == 33 and out["first_failure"]["load"] == 40  # 28 and 33 passed; 2 bisections


def test_a_candidate_that_fails_a_repeat_gives_way_to_the_next_lower():
    """40 passes only on its first run: the answer is the largest load that passed every run."""
    planner = Planner([10, 20, 40, 80], repeats=3, refine=0)
    seen = _drive(planner, lambda load, n: load <= 20 or (load == 40 and n == 1))
    out = planner.outcome()
    assert out["knee"]["load"] == 20 and out["knee"]["passed"] == 3
    assert out["higher_partial"]["load"] == 40 and (out["higher_partial"]["passed"], out["higher_partial"]["runs"]) \
        == (1, 2)  # it failed its first repeat: no more runs spent on it
    assert seen.count((20, "repeat")) == 2


def test_when_the_first_step_fails_it_halves():
    planner = Planner([64, 128], repeats=1, refine=10)
    seen = _drive(planner, lambda load, n: load <= 10)
    assert [load for load, _ in seen[:5]] == [64, 32, 16, 8, 11]  # halving until a pass, then bisection
    assert planner.outcome()["knee"]["load"] == 10


def test_no_load_passes():
    planner = Planner([4, 8], repeats=2, refine=10)
    _drive(planner, lambda load, n: False)
    out = planner.outcome()
    assert out["knee"] is None and out["first_failure"]["load"] == 1  # halved down to one session
    assert out["first_failure"]["broken"] == []  # the test's runs had no checks


def test_every_step_passes():
    planner = Planner([1, 2, 4], repeats=3)
    seen = _drive(planner, lambda load, n: True)
    out = planner.outcome()
    assert out["knee"]["load"] == 4 and out["first_failure"] is None
    assert "the knee is higher" in out["stop"] and seen[-2:] == [(4, "repeat"), (4, "repeat")]


def test_a_saturated_target_stops_the_climb():
    planner = Planner([10, 20, 40, 80], repeats=1)
    seen = []
    while (nxt := planner.next()) is not None:
        seen.append(nxt)
        load, phase = nxt
        planner.record(StepRun(load, phase, True, {}, [], "flat" if load == 20 else None))
    out = planner.outcome()
    assert [load for load, _ in seen] == [10, 20]  # 40 and 80 only queue: not run
    assert out["saturated_at"] == 20 and out["stop"] == "saturated at 20: flat" and out["knee"]["load"] == 20


def test_the_run_budget_ends_the_sweep():
    planner = Planner([10, 20, 40, 80], repeats=5, refine=10, max_runs=6)
    seen = _drive(planner, lambda load, n: load <= 37)
    out = planner.outcome()
    assert len(seen) == 6 and out["budget_spent"]
    assert out["knee"]["load"] == max(load for load, _ in seen if load <= 37)


def test_rate_steps_refine_to_the_resolution():
    planner = Planner([1.0, 2.0, 4.0, 8.0], repeats=1, refine=20, integer=False, resolution=0.05)
    _drive(planner, lambda load, n: load <= 5.3)
    out = planner.outcome()
    assert 5.3 / 1.05 <= out["knee"]["load"] <= 5.3 < out["first_failure"]["load"] <= out["knee"]["load"] * 1.05


def test_the_largest_partly_passing_load_below_the_first_failure_is_reported():
    """119 is the first failure (it passed 1 of 3), 114 passed 2 of 3, 109 all 3: the answer is 109, 114 is said."""
    verdicts = {109: [True, True, True], 114: [True, True, False], 119: [False, True, False]}
    planner = Planner([109, 114, 119], repeats=3, refine=0)
    _drive(planner, lambda load, n: verdicts[load][n - 1])
    out = planner.outcome()
    assert (out["knee"]["load"], out["first_failure"]["load"], out["higher_partial"]["load"]) == (109, 119, 114)
    assert out["higher_partial"]["passed"] == 2


def test_a_first_failure_that_passes_some_repeats_is_reported_once():
    planner = Planner([10, 20], repeats=3, refine=0)
    _drive(planner, lambda load, n: load == 10 or n > 1)  # 20 fails on its first run only
    out = planner.outcome()
    assert out["first_failure"]["load"] == 20 and out["first_failure"]["passed"] == 2
    assert out["higher_partial"] is None


def test_spread_over_repeats():
    planner = Planner([10], repeats=3)
    values = iter([100.0, 140.0, 120.0])
    _drive(planner, lambda load, n: True, figures=lambda load: {"ttft_p99": next(values), "errors": 0.0})
    assert planner.outcome()["knee"]["spread"] == {"ttft_p99": [100.0, 140.0], "errors": [0.0, 0.0]}
