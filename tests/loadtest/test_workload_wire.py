"""Workloads on the wire: the sim answers with the requested output length; the same seed sends the same requests."""

import json
import random
from collections import Counter

import httpx
import pytest
import trio

from loadtest import stats
from loadtest.runner import LoadConfig, Runner
from loadtest.workload import Workload, parse_distribution
from proxy.protocol import DONE, EventSplitter, event_data
from tests.conftest import start_relay, start_sim

CHAT = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "Tell me about the moon"}]}


async def _events(url: str, body: dict) -> list:
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.post(url + "/chat/completions", json=body)
    assert r.status_code == 200, r.text
    datas = [event_data(e) for e in EventSplitter().feed(r.content)]
    assert datas[-1] == DONE
    return [json.loads(d) for d in datas[:-1]]


async def test_sim_streams_exactly_max_tokens(nursery):
    sim = await start_sim(nursery, chunks=4, tokens_per_chunk=3)
    events = await _events(sim.url, {**CHAT, "stream": True, "max_tokens": 7})
    content = [e["choices"][0]["delta"].get("content") for e in events[:-1]]
    assert [len(c.split()) for c in content] == [3, 3, 1]  # ceil(7 / 3) chunks, the last with the rest
    final = events[-1]["choices"][0]
    assert final["finish_reason"] == "length" and final["usage"]["completion_tokens"] == 7
    assert events[-1]["sim"]["of"] == 4

    # max_completion_tokens (OpenAI's newer name) wins; usage at the top level with include_usage
    events = await _events(sim.url, {**CHAT, "stream": True, "max_tokens": 50, "max_completion_tokens": 2,
                                     "stream_options": {"include_usage": True}})
    assert events[-1]["usage"]["completion_tokens"] == 2 and len(events) == 1 + 1 + 1

    # without max_tokens: the configured shape, finish_reason stop; an explicit sim_chunks wins over max_tokens
    events = await _events(sim.url, {**CHAT, "stream": True})
    assert len(events) == 5 and events[-1]["choices"][0]["finish_reason"] == "stop"
    events = await _events(sim.url, {**CHAT, "stream": True, "max_tokens": 100, "sim_chunks": 2})
    assert len(events) == 3 and events[-1]["choices"][0]["usage"]["completion_tokens"] == 6


async def test_sim_completion_has_max_tokens_words_and_refuses_bad_values(nursery):
    sim = await start_sim(nursery)
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.post(sim.url + "/chat/completions", json={**CHAT, "max_tokens": 11})
        body = r.json()
        assert len(body["choices"][0]["message"]["content"].split()) == 11
        assert body["usage"]["completion_tokens"] == 11 and body["choices"][0]["finish_reason"] == "length"
        for bad in (0, -3, 2.5, "7", True):
            r = await client.post(sim.url + "/chat/completions", json={**CHAT, "max_tokens": bad})
            assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"], bad


def _sent(sim) -> Counter:
    """(prompt text, max_tokens) of every chat request the sim saw."""
    return Counter((b["messages"][0]["content"], b.get("max_tokens")) for r in sim.recent
                   if r["path"] == "/v1/chat/completions" for b in [r["body"]])


@pytest.mark.parametrize("through_relay", [False, True])
async def test_synthetic_workload_reaches_the_sim_and_repeats_with_its_seed(nursery, through_relay):
    sim = await start_sim(nursery, ttft=0.01, interval=0.001)
    url = sim.url
    if through_relay:
        url = (await start_relay(nursery, sim.url)).rstrip("/") + "/v1"
    workload = Workload(input_tokens=parse_distribution("uniform:10,300"),
                        output_tokens=parse_distribution("lognormal:12,8,max=60"), seed=5)
    expected = [workload.request(i) for i in range(40)]

    async def run(workers: int = 1, **shape) -> tuple[Counter, list]:
        sim.recent.clear()
        with trio.fail_after(30):
            run = await Runner(LoadConfig(url=url, workload=workload, **shape), workers=workers).run()
        return _sent(sim), run.records

    sent, records = await run(concurrency=8, requests=40)
    assert sent == Counter((r.messages[0]["content"], r.max_tokens) for r in expected)
    s = stats.target_summary(records)
    assert (s["completed"], s["failed"]) == (40, 0), s["errors_by_kind"]
    # usage says what was asked: per request, and so in the totals
    assert s["tokens"]["completion"] == sum(r.max_tokens for r in expected)
    assert sorted(r.completion_tokens for r in records) == sorted(r.max_tokens for r in expected)
    drawn = [workload.input_tokens.sample(random.Random(f"5/{i}")) for i in range(40)]  # request i's first draw
    assert sorted(r.prompt_tokens for r in records) == sorted(drawn)
    # the same seed, another shape (concurrency, two load processes): the same requests
    again, _ = await run(concurrency=3, requests=40, workers=2)
    assert again == sent
