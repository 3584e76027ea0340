"""The load generator's checks of its own event loop (loadtest/looplag.py): a sleeper's lateness and the stretches
without polling, and where a run reports them."""

from __future__ import annotations

import time

import trio

from loadtest import looplag, stats
from loadtest.looplag import INTERVAL_S, LoopBusy, LoopLag, measuring
from loadtest.runner import LoadConfig, Runner
from tests.conftest import start_sim


async def test_a_task_that_holds_the_loop_is_a_long_stretch():
    with measuring() as busy:
        await trio.lowlevel.checkpoint()
        time.sleep(0.03)  # noqa: ASYNC251 - the point: this task keeps the loop from polling
        await trio.lowlevel.checkpoint()
    assert busy.over >= 1 and 30 <= busy.longest_ms <= busy.over_total_ms


def test_warning_names_the_longest_stretch_and_counts_all():
    assert looplag.warning("relay", [(1, LoopBusy(4.0, 0, 0.0))]) is None
    text = looplag.warning("relay", [(1, LoopBusy(12.0, 1, 12.0)), (2, LoopBusy(31.5, 2, 45.0)), (3, LoopBusy())])
    assert text is not None and text.startswith("load generator busy: its event loop ran up to 32 ms")
    assert "(process 2, relay; 3 stretch(es) over 10 ms in 2 process(es))" in text and "--workers" in text


async def test_a_run_whose_loop_was_held_says_so(nursery):
    sim = await start_sim(nursery, ttft=0.3, chunks=2, interval=0.01)

    async def hold_the_loop() -> None:
        await trio.sleep(0.1)  # the sessions wait for their first chunk
        time.sleep(0.06)  # noqa: ASYNC251

    nursery.start_soon(hold_the_loop)
    with trio.fail_after(20):
        run = await Runner(LoadConfig(url=sim.url, concurrency=2)).run()
    busy = [w for w in run.warnings if w.startswith("load generator busy")]
    assert len(busy) == 1 and "relay" in busy[0]
    assert int(busy[0].split("ran up to ")[1].split(" ms")[0]) >= 60


async def test_a_blocked_loop_shows_as_lag():
    lag = LoopLag()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lag.run)
        await trio.sleep(3 * INTERVAL_S)
        time.sleep(0.15)  # the loop cannot run: its next wake-up is this late  # noqa: ASYNC251
        await trio.sleep(2 * INTERVAL_S)
        nursery.cancel_scope.cancel()
    assert max(lag.samples_ms) >= 100
    assert min(lag.samples_ms) < 50


async def test_a_run_reports_its_loop_lag(nursery):
    sim = await start_sim(nursery, ttft=0.05, chunks=3)
    run = await Runner(LoadConfig(url=sim.url, concurrency=2, requests=4)).run()
    lag = stats.summarize(run)["loadtest_loop_lag_ms"]
    assert lag["count"] >= 1 and lag["p99"] is not None
