"""Deployments of one model (issue 15, item 2), without sockets: the config, the weighted choice, the breaker's
decisions (pure), and the breaker's states in a store (LocalStore with a fake clock)."""

from collections import Counter

import pytest

from proxy.config import Settings
from proxy.limits import LocalStore
from proxy.routing import (
    HALF_OPEN_S,
    Circuit,
    Health,
    Outcome,
    Router,
    Seen,
    SmoothWeighted,
    Step,
    balance_order,
    breaker_outcome,
)
from proxy.routing._breaker import opens, step


def table(name: str, **extra) -> dict:
    return {"name": name, "base_url": f"http://{name}.test/v1", **extra}


# -- the config ---------------------------------------------------------------------------------------


def test_tables_that_share_a_model_are_its_deployments():
    configs = (
        Settings(
            upstreams=[
                table("a", models=["kimi", "a-only"], weight=3),
                table("b", models=["kimi"]),
                table("c", models=["kimi-*"], default=True),
            ]
        )  # fmt: skip
    ).routes
    router = Router(configs)
    assert router.deployments("kimi") == ("a", "b")
    assert router.deployments("a-only") == ("a",) and router.deployments("kimi-x") == ("c",)
    assert router.deployments("other") == ("c",) and router.route("kimi") == "a"
    a, b, _ = configs
    assert (a.weight, b.weight) == (3, 1)
    assert (b.breaker_failures, b.breaker_window_s, b.breaker_cooldown_s) == (5, 30.0, 30.0)


def test_no_default_and_no_match_has_no_deployment():
    assert Router(Settings(upstreams=[table("a", models=["m"])]).routes).deployments("x") == ()


# -- the weighted choice (pure) -----------------------------------------------------------------------


def test_smooth_weighted_round_robin_spreads_in_proportion_and_smoothly():
    rr = SmoothWeighted([5, 1, 1])
    assert ["abc"[rr.pick([True] * 3)] for _ in range(7)] == list("aabacaa")  # nginx's own example
    rr = SmoothWeighted([3, 1])
    assert Counter(rr.pick([True, True]) for _ in range(400)) == {0: 300, 1: 100}


def test_an_unusable_deployment_is_left_out_without_losing_its_place():
    rr = SmoothWeighted([1, 1])
    assert [rr.pick([False, True]) for _ in range(3)] == [1, 1, 1]
    assert rr.pick([False, False]) is None
    assert sorted(rr.pick([True, True]) for _ in range(2)) == [0, 1]


def test_after_the_chosen_one_the_others_go_heavier_first():
    assert balance_order([1, 5, 2, 5], 2) == [2, 1, 3, 0]


# -- the breaker's decisions (pure) -------------------------------------------------------------------


def test_the_state_is_read_from_the_rests():
    assert Seen().circuit is Circuit.CLOSED and Seen().usable
    assert Seen(open_s=3, tripped_s=10).circuit is Circuit.OPEN and not Seen(open_s=3).usable
    half = Seen(tripped_s=5)
    assert half.circuit is Circuit.HALF_OPEN and half.usable and half.wait_s == 0
    resting = Seen(rest_s=2.5)
    assert resting.circuit is Circuit.CLOSED and not resting.usable and resting.wait_s == 2.5
    assert [int(c) for c in Circuit] == [0, 1, 2] and Circuit.HALF_OPEN.label == "half-open"


def test_what_counts_as_a_failure():
    assert [breaker_outcome(s) for s in (None, 500, 503, 429, 200, 400, 404)] == [
        Outcome.FAILURE, Outcome.FAILURE, Outcome.FAILURE, Outcome.NEUTRAL, Outcome.SUCCESS, Outcome.SUCCESS,
        Outcome.SUCCESS,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("result", "seen", "probing", "expected"),
    [
        (Outcome.FAILURE, Seen(), False, Step.COUNT),
        (Outcome.FAILURE, Seen(tripped_s=5), True, Step.OPEN),
        (Outcome.SUCCESS, Seen(), False, Step.NOTHING),  # the usual case: no store call
        (Outcome.SUCCESS, Seen(failing_s=4), False, Step.RESET),
        (Outcome.SUCCESS, Seen(tripped_s=5), True, Step.CLOSE),
        (Outcome.NEUTRAL, Seen(failing_s=4), False, Step.NOTHING),
        (Outcome.NEUTRAL, Seen(tripped_s=5), True, Step.NOTHING),
    ],
)
def test_what_an_answer_does(result, seen, probing, expected):
    assert step(result, seen, probing=probing) is expected


def test_only_the_failure_that_reaches_the_threshold_opens():
    assert [opens(total, 3) for total in (1, 2, 3, 4, 5)] == [False, False, True, False, False]
    assert not opens(1, 0)  # 0 failures: no breaker


# -- the breaker in a store ---------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0  # a window boundary: windows of 10 s start here

    def __call__(self) -> float:
        return self.now


def health_of(failures: int = 3, **extra) -> tuple[Health, Clock, list]:
    clock = Clock()
    breaker = {"breaker_failures": failures, "breaker_window_s": 10, "breaker_cooldown_s": 5}
    configs = Settings(upstreams=[table("d", default=True, **breaker, **extra)]).routes
    changes: list = []
    health = Health(LocalStore(clock), configs, changed=lambda *change: changes.append(change))
    return health, clock, changes


async def fail(health: Health, times: int = 1) -> None:
    for _ in range(times):
        (seen,) = await health.look(["d"])
        await health.settle("d", Outcome.FAILURE, seen, None)


async def circuit(health: Health) -> Circuit:
    return (await health.look(["d"]))[0].circuit


async def test_failures_in_a_row_open_then_one_probe_then_closed():
    health, clock, changes = health_of()
    await fail(health, 2)
    assert await circuit(health) is Circuit.CLOSED
    await fail(health)
    assert await circuit(health) is Circuit.OPEN and changes == [("d", Circuit.OPEN, True)]
    await fail(health)  # a request sent before it opened fails after: no second opening
    assert changes == [("d", Circuit.OPEN, True)]
    clock.now += 4.9
    assert await circuit(health) is Circuit.OPEN
    clock.now += 0.2
    (seen,) = await health.look(["d"])
    assert seen.circuit is Circuit.HALF_OPEN
    probe = await health.probe("d")
    assert probe is not None and await health.probe("d") is None  # exactly one probe at a time
    await health.settle("d", Outcome.SUCCESS, seen, probe)
    assert await circuit(health) is Circuit.CLOSED and changes[-1] == ("d", Circuit.CLOSED, False)
    await fail(health, 2)  # the count started again from 0
    assert await circuit(health) is Circuit.CLOSED


async def test_a_failed_probe_opens_again_and_a_neutral_one_gives_the_probe_back():
    health, clock, changes = health_of(failures=1)
    await fail(health)
    clock.now += 5.1
    (seen,) = await health.look(["d"])
    probe = await health.probe("d")
    await health.settle("d", Outcome.NEUTRAL, seen, probe)  # a 429: no verdict, the probe is free again
    assert await circuit(health) is Circuit.HALF_OPEN
    probe = await health.probe("d")
    assert probe is not None
    await health.settle("d", Outcome.FAILURE, seen, probe)
    assert await circuit(health) is Circuit.OPEN
    assert changes == [("d", Circuit.OPEN, True), ("d", Circuit.OPEN, True)]
    assert await health.probe("d") is not None  # the failed probe gave its slot back


async def test_a_success_resets_the_count_and_a_new_window_starts_at_zero():
    health, clock, _ = health_of()
    await fail(health, 2)
    (seen,) = await health.look(["d"])
    assert seen.failing_s > 0
    await health.settle("d", Outcome.SUCCESS, seen, None)
    assert (await health.look(["d"]))[0].failing_s == 0
    await fail(health, 2)
    assert await circuit(health) is Circuit.CLOSED
    clock.now += 10  # the next window
    await fail(health, 2)
    assert await circuit(health) is Circuit.CLOSED
    await fail(health)
    assert await circuit(health) is Circuit.OPEN


async def test_a_half_open_circuit_nobody_probed_closes_after_a_long_while():
    health, clock, _ = health_of(failures=1)
    await fail(health)
    clock.now += 5 + HALF_OPEN_S - 1
    assert await circuit(health) is Circuit.HALF_OPEN
    clock.now += 2
    assert await circuit(health) is Circuit.CLOSED


async def test_no_breaker_with_zero_failures_and_a_rest_is_not_a_circuit():
    health, _, changes = health_of(failures=0)
    await fail(health, 10)
    assert await circuit(health) is Circuit.CLOSED and changes == []
    await health.rest("d", 7)
    (seen,) = (await health.report()).values()
    assert (seen.circuit, seen.usable, seen.wait_s) == (Circuit.CLOSED, False, 7)


async def test_a_deployment_whose_every_key_rests_is_not_usable():
    health, _, _ = health_of()
    health.keys = {"d": ["key:aaaa", "key:bbbb"]}
    await health.store.rest("key:aaaa", 4)
    (seen,) = await health.look(["d"])
    assert seen.usable and seen.keys_s == 0  # one key is free
    await health.store.rest("key:bbbb", 2)
    (seen,) = await health.look(["d"])
    assert (seen.usable, seen.keys_s, seen.wait_s, seen.circuit) == (False, 2, 2, Circuit.CLOSED)


def test_the_circuit_gauge_is_a_state_not_a_sum_over_workers(tmp_path):
    """Two workers (processes) write the gauge in multiprocess mode: the scrape shows the most recent state, where a
    summed gauge would show 2 + 1."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    write = "from proxy.observability._metrics import Metrics; Metrics().circuit('a', {}, {})"
    for state, opened in ((2, True), (1, False)):  # one worker opened it, then another saw it half-open
        subprocess.run([sys.executable, "-c", write.format(state, opened)], env=env, check=True)
    scrape = "from proxy.observability._metrics import Metrics; print(Metrics().render().decode())"
    text = subprocess.run([sys.executable, "-c", scrape], env=env, check=True, capture_output=True, text=True).stdout
    assert 'moonrelay_upstream_circuit_state{upstream="a"} 1.0' in text
    assert 'moonrelay_upstream_circuit_openings_total{upstream="a"} 1.0' in text


async def test_a_request_cancelled_while_probing_gives_the_probe_back():
    import httpx

    from proxy.routing import Candidates, Upstream, Upstreams
    from proxy.state import RequestState

    settings = Settings(upstreams=[table("a", models=["m"], breaker_failures=1), table("b", models=["m"])])
    upstreams = Upstreams(settings, [Upstream(settings, httpx.MockTransport(lambda r: None), config=c)
                                     for c in settings.routes])  # fmt: skip
    await upstreams.store.rest("tripped:a", 60)  # a is half-open
    candidates = await Candidates.plan(upstreams, upstreams.deployments("m"))
    assert [u.name for u in candidates.order] == ["a", "b"]  # a half-open deployment may be chosen: for its probe
    state = RequestState()
    assert (await candidates.next(state)).name == "a" and candidates.probe is not None
    assert await upstreams.health.probe("a") is None  # held
    await candidates.abandon()
    assert candidates.probe is None and await upstreams.health.probe("a") is not None
