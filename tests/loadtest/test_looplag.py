"""The load generator's own event-loop lateness (loadtest/looplag.py), and where a run reports it."""

from __future__ import annotations

import time

import trio
import trio.testing

from loadtest import stats
from loadtest.looplag import INTERVAL_S, LoopLag
from loadtest.runner import LoadConfig, Runner
from tests.conftest import start_sim


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
