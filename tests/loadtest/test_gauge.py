"""loadtest.gauge: the sim's open-stream gauge, sampled over HTTP."""

import httpx
import trio

from loadtest.gauge import OpenStreams
from tests.conftest import start_sim


async def test_open_streams_samples_the_sims_gauge(nursery):
    sim = await start_sim(nursery, ttft=30)
    gauge = OpenStreams(sim.url)
    body = {"model": "moonshot-v1-8k", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(timeout=60) as client, trio.open_nursery() as inner:
        await gauge.sample(client)
        assert gauge.peak == 0
        for _ in range(3):
            await inner.start(open_stream_and_hold, client, sim.url, body)
        await gauge.sample(client)
        inner.cancel_scope.cancel()
    assert gauge.peak == 3


async def open_stream_and_hold(client: httpx.AsyncClient, url: str, body: dict, task_status) -> None:
    async with client.stream("POST", url + "/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        task_status.started()
        await trio.sleep_forever()
