"""``--metrics-bind``: the live progress as Prometheus metrics, scraped during runs over real sockets."""

import json
import signal
import subprocess
import sys
from functools import partial

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from loadtest.livemetrics import serve_metrics
from loadtest.runner import LoadConfig, Runner
from tests.conftest import start_sim
from tests.support.openwatch import OpenWatch


async def scrape(url: str) -> dict:
    """``{(name, ((label, value), ...)): value}`` of every sample at ``url``."""
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.get(url)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(r.text) for s in fam.samples}


def sample(m: dict, name: str, **labels) -> float:
    return m[(name, tuple(sorted({"shard": "0/1", **labels}.items())))]


async def test_metrics_during_a_run(nursery):
    sim = await start_sim(nursery, ttft=0.01, chunks=3, interval=0.002)
    live = OpenWatch(8)
    url = await nursery.start(partial(serve_metrics, live, "127.0.0.1", 0, const_labels={"shard": "0/1"}))
    assert url.startswith("http://127.0.0.1:") and not url.startswith("http://127.0.0.1:0/")

    # Eight sessions the sim never answers: open until the run is interrupted.
    stalled = Runner(LoadConfig(url=sim.url, concurrency=8, extra_body={"sim_fault": "stall"}), live=live)
    ended = trio.Event()

    async def run_stalled() -> None:
        await stalled.run()
        ended.set()

    nursery.start_soon(run_stalled)
    with trio.fail_after(20):
        await live.reached.wait()
        m = await scrape(url)
        assert sample(m, "loadtest_open_sessions") == 8 and sample(m, "loadtest_planned_sessions") == 8
        assert sample(m, "loadtest_sessions_total", outcome="completed") == 0
        stalled.interrupt()
        await ended.wait()
        m = await scrape(url)
    assert sample(m, "loadtest_open_sessions") == 0
    assert sample(m, "loadtest_sessions_total", outcome="failed") == 8
    assert sample(m, "loadtest_errors_total", kind="interrupted") == 8

    # Then ten sessions in two worker processes: their progress deltas carry the histograms.
    with trio.fail_after(30):
        run = await Runner(LoadConfig(url=sim.url, concurrency=4, requests=10), live=live, workers=2).run()
        m = await scrape(url)
    assert sample(m, "loadtest_sessions_total", outcome="completed") == 10
    assert sample(m, "loadtest_ttfc_seconds_count") == 10
    assert sample(m, "loadtest_ttfc_seconds_bucket", le="+Inf") == 10
    gaps = [g for r in run.records for g in r.gaps_ms]
    assert len(gaps) == 10 * 3  # 3 content chunks + the final one: 3 gaps a stream
    assert sample(m, "loadtest_chunk_gap_seconds_count") == 30
    assert sample(m, "loadtest_chunk_gap_seconds_sum") == pytest.approx(sum(gaps) / 1000)
    under = sum(1 for g in gaps if g <= 1000)
    assert sample(m, "loadtest_chunk_gap_seconds_bucket", le="1.0") == under
    assert sample(m, "loadtest_info", phase="relay") == 1

    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(url.removesuffix("/metrics") + "/other")).status_code == 404


async def test_cli_reports_the_port_and_serves_until_stopped(nursery, tmp_path):
    sim = await start_sim(nursery, ttft=300)  # sessions that stay open until the run is stopped
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "loadtest", "--url", sim.url, "-c", "3", "--metrics-bind", "127.0.0.1:0", "--quiet",
         "--out", str(tmp_path)], stderr=subprocess.PIPE)
    try:
        buf = b""
        with trio.fail_after(30):
            while b"metrics on " not in buf or not buf.endswith(b"\n"):
                data = await proc.stderr.receive_some(4096)
                assert data, buf
                buf += data
            url = buf.split(b"metrics on ", 1)[1].split()[0].decode()
            m = await scrape(url)
        assert ("loadtest_open_sessions", ()) in m and ("loadtest_planned_sessions", ()) in m
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            assert await proc.wait() == 130
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert json.loads((tmp_path / "result.json").read_text())["interrupted"] is True
