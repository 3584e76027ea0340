"""The collector's thresholds while a load runs: older generations rare, the previous thresholds back after."""

import gc

import trio

from loadtest.gcpauses import LOAD_THRESHOLDS, quiet_collector
from loadtest.runner import LoadConfig, Runner
from loadtest.shapes import WorkerLoad
from tests.conftest import start_sim


def test_thresholds_are_set_and_restored_even_on_error():
    before = gc.get_threshold()
    try:
        with quiet_collector():
            assert gc.get_threshold() == LOAD_THRESHOLDS
            raise RuntimeError("a load that failed")
    except RuntimeError:
        pass
    assert gc.get_threshold() == before


async def test_sessions_run_under_the_load_thresholds(nursery, monkeypatch):
    seen: list[tuple[int, int, int]] = []
    run = WorkerLoad.run

    async def spy(self, t0_ns: int) -> None:
        seen.append(gc.get_threshold())
        await run(self, t0_ns)

    monkeypatch.setattr(WorkerLoad, "run", spy)
    sim = await start_sim(nursery, ttft=0.01, chunks=2, interval=0.01)
    before = gc.get_threshold()
    with trio.fail_after(20):
        data = await Runner(LoadConfig(url=sim.url, concurrency=3)).run()
    assert seen == [LOAD_THRESHOLDS] and gc.get_threshold() == before
    assert all(r.completed for r in data.records)
