"""Load shapes against the sim over real sockets: closed and open loop, keep-alive, interrupt, workers."""

import gc
import os
from functools import partial

import httpx
import pytest
import trio

from loadtest import stats
from loadtest.client import now_ns
from loadtest.progress import LiveStats
from loadtest.record import SessionRecord, SpilledRecords
from loadtest.report import build_result
from loadtest.reportmd import render_markdown
from loadtest.runner import LoadConfig, Runner
from loadtest.shapes import WorkerLoad
from loadtest.sim import SimConfig, SimStats, serve_sim
from tests.conftest import start_sim
from tests.support.openwatch import OpenWatch


async def _sim_stats(sim) -> dict:
    async with httpx.AsyncClient() as client:
        return (await client.get(sim.url.removesuffix("/v1") + "/sim/stats")).json()


async def test_closed_loop_each_slot_once_200(nursery):
    sim = await start_sim(nursery, ttft=0.3, chunks=3, interval=0.02)
    with trio.fail_after(20):
        run = await Runner(LoadConfig(url=sim.url, concurrency=200)).run()
    s = stats.summarize(run)
    assert (s["completed"], s["failed"], s["peak_concurrency"]) == (200, 0, 200), s["errors_by_kind"]
    assert s["new_connections"] == 200
    assert {r.slot for r in run.records} == set(range(200))
    # The sim shares this test's event loop: its work shows as the load generator's own (loadtest.looplag).
    assert not run.interrupted and not [w for w in run.warnings if not w.startswith("load generator busy")]
    assert s["relay_delay_ms"]["p50"] is not None
    assert run.processes and run.processes[0].role == "loadtest" and run.processes[0].cpu_s > 0
    # The client's CPU share of the machine, from this run's own numbers: CPU s / wall s / cores.
    assert run.cores == os.cpu_count() and s["cores"] == run.cores and s["loadtest_processes"] == 1
    expected = run.processes[0].cpu_s / (s["run_duration_s"] * run.cores)
    assert s["loadtest_cpu_share"] == pytest.approx(expected) and 0 < expected <= 1
    assert "Load generator CPU share (1 process(es)" in render_markdown(build_result(run))


async def test_requests_reuse_keepalive_connections(nursery):
    sim = await start_sim(nursery, ttft=0.01, chunks=2, interval=0.005)
    with trio.fail_after(20):
        run = await Runner(LoadConfig(url=sim.url, concurrency=10, requests=50)).run()
    assert len(run.records) == 50 and all(r.ok for r in run.records)
    assert sum(r.connected_ns is not None for r in run.records) == 10  # one connection per slot
    # The slot's next session is due when the previous one ended: intended start = previous end.
    by_slot = sorted((r for r in run.records if r.slot == 0), key=lambda r: r.seq)
    assert all(b.intended_ns == a.end_ns for a, b in zip(by_slot, by_slot[1:], strict=False))
    assert (await _sim_stats(sim))["completed"] >= 50


async def test_no_keepalive_and_duration(nursery):
    sim = await start_sim(nursery, ttft=0.01, chunks=2, interval=0.005)
    with trio.fail_after(20):
        run = await Runner(LoadConfig(url=sim.url, concurrency=5, duration_s=0.4, keepalive=False)).run()
    assert len(run.records) > 10 and all(r.ok for r in run.records)
    assert all(r.connected_ns is not None for r in run.records)
    last_start = max(r.intended_ns for r in run.records)
    assert (last_start - run.t0_ns) / 1e9 < 0.6


async def test_open_loop_rate_with_cap(nursery):
    sim = await start_sim(nursery, ttft=0.05, chunks=2, interval=0.01)
    cfg = LoadConfig(url=sim.url, rate=400, requests=80, max_concurrency=4)
    with trio.fail_after(20):
        run = await Runner(cfg).run()
    s = stats.summarize(run)
    assert s["completed"] == 80 and s["peak_concurrency"] <= 4
    # Arrivals outpace 4 slots of ~60 ms sessions: latency from the intended start shows the queueing.
    assert s["ttfc_ms"]["max"] > s["ttfc_sent_ms"]["max"] + 100
    assert sum(r.connected_ns is not None for r in run.records) <= 4  # idle connections were reused


async def test_warmup_marks_early_sessions(nursery):
    sim = await start_sim(nursery, ttft=0.01, chunks=2, interval=0.005)
    with trio.fail_after(20):
        run = await Runner(LoadConfig(url=sim.url, concurrency=3, duration_s=0.2, warmup_s=0.2)).run()
    assert any(r.warmup for r in run.records) and any(not r.warmup for r in run.records)


async def test_interrupt_returns_partial_run(nursery):
    sim = await start_sim(nursery, ttft=30, chunks=2)
    live = OpenWatch(20)
    runner = Runner(LoadConfig(url=sim.url, concurrency=20, timeout_s=60), live=live)
    done = trio.Event()
    result = []

    async def run():
        result.append(await runner.run())
        done.set()

    nursery.start_soon(run)
    with trio.fail_after(10):
        await live.reached.wait()
        runner.interrupt()
        await done.wait()
    run_data = result[0]
    assert run_data.interrupted
    assert len(run_data.records) == 20
    assert {r.error_kind for r in run_data.records} == {"interrupted"}
    assert stats.summarize(run_data)["peak_concurrency"] == 20


async def test_workers_merge_records(nursery):
    sim = await start_sim(nursery, ttft=0.02, chunks=2, interval=0.005)
    live = LiveStats()
    with trio.fail_after(30):
        run = await Runner(LoadConfig(url=sim.url, concurrency=20, requests=40), workers=2, live=live).run()
    assert len(run.records) == 40 and all(r.ok for r in run.records)
    assert {r.worker for r in run.records} == {0, 1}
    assert {r.slot for r in run.records} == set(range(20))
    assert [p.role for p in run.processes] == ["loadtest-worker", "loadtest-worker"]
    assert live.completed == 40 and live.open == 0  # progress deltas arrived from both children
    assert stats.summarize(run)["peak_concurrency"] == 20


async def test_connect_failures_counted_and_warned():
    import socket

    with socket.socket() as s, trio.fail_after(10):  # bound, never listening: refused, and nobody can take the port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        run = await Runner(LoadConfig(url=f"http://127.0.0.1:{port}/v1", concurrency=2)).run()
    assert [r.error_kind for r in run.records] == ["connect", "connect"]
    assert run.connect_retries == 6
    assert any("connect retries" in w for w in run.warnings)
    assert any("2 of 2 sessions failed" in w for w in run.warnings)


class SimOpenWatch(SimStats):
    """The sim's counters, with ``reached`` set once ``n`` chat requests are open at the sim."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.reached = trio.Event()

    def on_started(self) -> None:
        super().on_started()
        if self.snapshot()["open"] >= self.n:
            self.reached.set()


async def test_interrupt_stops_worker_processes_and_keeps_their_records(nursery):
    watch = SimOpenWatch(10)
    sim = await nursery.start(partial(serve_sim, SimConfig(port=0, ttft=30, chunks=2), stats=watch))
    runner = Runner(LoadConfig(url=sim.url, concurrency=10, timeout_s=60), workers=2)
    done = trio.Event()
    result = []

    async def run():
        result.append(await runner.run())
        done.set()

    nursery.start_soon(run)
    with trio.fail_after(30):
        await watch.reached.wait()  # every session of both children is in flight at the sim
        runner.interrupt()
        await done.wait()
    run_data = result[0]
    assert run_data.interrupted
    assert len(run_data.records) == 10 and {r.worker for r in run_data.records} == {0, 1}
    assert {r.error_kind for r in run_data.records} == {"interrupted"}
    assert [p.role for p in run_data.processes] == ["loadtest-worker", "loadtest-worker"]
    assert not any("returned no records" in w for w in run_data.warnings)


async def test_a_long_run_keeps_its_records_on_disk_until_the_report(nursery, monkeypatch):
    """The sessions' records wait on disk in batches while the load runs (a long run's memory stays flat); the
    report gets every one of them, interrupted or not."""
    monkeypatch.setattr(SpilledRecords, "BATCH", 10)
    sim = await start_sim(nursery, ttft=0, chunks=2, interval=0)
    load = WorkerLoad(LoadConfig(url=sim.url, concurrency=4, requests=60), target="relay", url=sim.url)
    with trio.fail_after(20):
        await load.run(now_ns())
    gc.collect()
    in_memory = sum(1 for obj in gc.get_objects() if type(obj) is SessionRecord)
    assert in_memory < SpilledRecords.BATCH
    records = load.records
    assert len(records) == 60 and all(r.completed for r in records)
    assert sorted((r.slot, r.seq) for r in records) == sorted((i % 4, i // 4) for i in range(60))
