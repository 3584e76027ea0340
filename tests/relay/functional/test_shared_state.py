"""``--state redis://…`` end to end, on a real redis-server: an upstream's ``max_concurrent`` is one cap across every
worker and instance, and the relay rides out a Redis that dies, restarts or stalls (docs/reference.md, "--state").

The simulator runs in this process and counts its own peak of open streams exactly (every request it starts);
the relays are real ``python -m proxy --workers 2`` processes.
"""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest
import trio

from proxy.config import Settings
from tests.conftest import start_relay, start_sim
from tests.support import ROOT
from tests.support.children import stop_child
from tests.support.relays import scrape, start_relay_process, wait_backend, write_config

CHAT = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "hi"}], "stream": True}
SLOTS_KEY = "moonrelay:slots:upstream:sim"


class PeakOpen:
    """The sim's own open-stream count at its highest: read after every request the sim starts."""

    def __init__(self, sim) -> None:
        self.peak = 0
        stats = sim.stats
        started = stats.on_started

        def on_started() -> None:
            started()
            self.peak = max(self.peak, stats.snapshot()["open"])

        stats.on_started = on_started


def stop(proc: subprocess.Popen) -> None:
    stop_child(proc, grace_s=15)


async def chat(client: httpx.AsyncClient, url: str, results: list) -> None:
    """One streamed chat request, read to the end: (status, seconds to the response head, seconds in all)."""
    began = time.monotonic()
    async with client.stream("POST", url + "/v1/chat/completions", json=CHAT) as resp:
        head = time.monotonic() - began
        await resp.aread()
    results.append((resp.status_code, head, time.monotonic() - began))


async def push(roots: list[str], clients: int) -> list[tuple[int, float, float]]:
    """``clients`` streams at once, spread over ``roots``, each on a new connection (so over every worker)."""
    results: list[tuple[int, float, float]] = []
    limits = httpx.Limits(max_keepalive_connections=0, max_connections=None)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client, trio.open_nursery() as nursery:
        for i in range(clients):
            nursery.start_soon(chat, client, roots[i % len(roots)], results)
    return results


async def test_one_relay_counts_its_cap_in_redis(redis_server, nursery) -> None:
    sim = await start_sim(nursery, ttft=5.0)
    tables = ({"name": "sim", "base_url": sim.url, "default": True, "max_concurrent": 1},)
    root = await start_relay(nursery, sim.url, upstreams=tables, state=redis_server.url, access_log="off")
    async with httpx.AsyncClient(timeout=10) as client:
        async with client.stream("POST", root + "/v1/chat/completions", json=CHAT) as first:
            assert redis_server.command("ZCARD", SLOTS_KEY) == b":1\r\n"  # the slot is a lease in Redis
            second = await client.post(root + "/v1/chat/completions", json=CHAT)
            assert second.status_code == 429 and "across the relays" in second.json()["error"]["message"]
            assert first.status_code == 200
    # The client left mid-stream: the call's end gave the lease back.
    for _ in range(100):
        if redis_server.command("ZCARD", SLOTS_KEY) == b":0\r\n":
            break
        await trio.sleep(0.02)
    assert redis_server.command("ZCARD", SLOTS_KEY) == b":0\r\n"


@pytest.mark.slow
async def test_two_instances_of_two_workers_share_one_cap(redis_server, nursery, tmp_path) -> None:
    cap = 6
    sim = await start_sim(nursery, ttft=0.3, chunks=20, interval=0.05)  # each stream lasts about 1.3 s
    peak = PeakOpen(sim)
    config = write_config(tmp_path, sim.url, cap)
    args = ["--workers", "2", "--config", config, "--state", redis_server.url]
    relays = [start_relay_process(args, tmp_path / f"relay{i}.err") for i in range(2)]
    try:
        results = await push([root for _, root in relays], 5 * cap)
    finally:
        for proc, _ in relays:
            stop(proc)
    served = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 429]
    assert len(served) + len(refused) == 5 * cap, sorted({r[0] for r in results})
    assert peak.peak <= cap, f"the sim saw {peak.peak} open streams with a shared cap of {cap}"
    assert len(served) >= cap  # the cap was reached, not merely respected
    assert max(head for _, head, _ in refused) < 1.0  # refused at once, not queued behind the streams
    for i in range(2):
        assert "Traceback" not in (tmp_path / f"relay{i}.err").read_text()


@pytest.mark.slow
async def test_a_dead_restarted_or_stalled_redis_holds_no_request(redis_server, nursery, tmp_path) -> None:
    sim = await start_sim(nursery, ttft=0.05, chunks=5, interval=0.02)  # each stream lasts about 0.15 s
    config = write_config(tmp_path, sim.url, 100)
    log = tmp_path / "relay.err"
    args = ["--workers", "2", "--config", config, "--state", redis_server.url, "--state-timeout-s", "0.25",
            "--state-probe-s", "0.2"]  # fmt: skip
    relay, root = start_relay_process(args, log)
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            await wait_backend(client, root, 1, 5)
            assert all(r[0] == 200 for r in await push([root], 8))

            redis_server.kill()  # a crash: connections refused
            results = await push([root], 20)
            assert all(r[0] == 200 for r in results)
            assert max(total for _, _, total in results) < 2.0  # stream 0.15 s + at most one 0.25 s deadline
            assert scrape((await client.get(root + "/metrics")).text, "moonrelay_state_errors_total") >= 1
            await wait_backend(client, root, 0, 5)

            redis_server.start()  # the same port, empty
            await wait_backend(client, root, 1, 5)
            held = {**CHAT, "sim_fault": "headers-then-stall"}
            async with client.stream("POST", root + "/v1/chat/completions", json=held):
                assert redis_server.command("ZCARD", SLOTS_KEY) == b":1\r\n"  # counted in Redis again

            redis_server.pause()  # a stalled Redis: connections open, no answer
            try:
                results = await push([root], 20)
            finally:
                redis_server.resume()
            assert all(r[0] == 200 for r in results)
            assert max(total for _, _, total in results) < 2.0
            await wait_backend(client, root, 1, 5)
    finally:
        stop(relay)
    text = log.read_text()
    assert "Traceback" not in text
    # One line per worker each way per outage (two outages, two workers), not one per request.
    assert 2 <= text.count("unavailable (") <= 4 and 2 <= text.count("answers again") <= 4, text[-3000:]


def test_the_state_url_is_checked_before_serving() -> None:
    from proxy.edge import build_store

    with pytest.raises(ValueError, match="redis://HOST:PORT/DB"):
        build_store(Settings(state="localhost:6379"))
    assert not build_store(Settings()).shared


def test_the_example_in_the_reference_loads(tmp_path) -> None:
    from proxy.config import load

    text = (ROOT / "docs" / "reference.md").read_text()
    example = text.split("## Shared state on Redis", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "relay.toml"
    path.write_text(example)
    settings = load({}, {}, str(path))
    assert (settings.state, settings.state_timeout_s, settings.workers) == ("redis://10.0.0.5:6379/0", 0.25, 2)
    assert [c.max_concurrent for c in settings.routes] == [1000]


def redis_time(redis_server) -> float:
    """Redis's own clock (``TIME``), the one every window is counted by."""
    reply = redis_server.command("TIME").split(b"\r\n")
    return int(reply[2]) + int(reply[4]) / 1e6


async def test_a_client_keys_rpm_holds_across_relays_sharing_state(redis_server, nursery, monkeypatch) -> None:
    """Client-key limits count in the same store: with --state, two relays (as two instances) share one key's rpm;
    each alone, the third request would pass. The windows start a second before the test, not on a wall-clock
    minute, so the three requests fall in one window whenever the test runs."""
    from functools import partial

    import proxy.edge._server
    from proxy.limits import RedisStore

    origin = redis_time(redis_server) - 1.0
    monkeypatch.setattr(proxy.edge._server, "RedisStore", partial(RedisStore, window_origin_s=origin))
    sim = await start_sim(nursery)
    roots = [
        await start_relay(
            nursery, sim.url, state=redis_server.url, api_keys="mr-shared-key", key_rpm=2, access_log="off"
        )
        for _ in range(2)
    ]
    headers = {"authorization": "Bearer mr-shared-key"}
    body = {**CHAT, "stream": False}
    async with httpx.AsyncClient(timeout=10) as client:
        first = await client.post(roots[0] + "/v1/chat/completions", json=body, headers=headers)
        second = await client.post(roots[1] + "/v1/chat/completions", json=body, headers=headers)
        third = await client.post(roots[0] + "/v1/chat/completions", json=body, headers=headers)
    assert (first.status_code, second.status_code, third.status_code) == (200, 200, 429)
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert 50 < int(third.headers["retry-after"]) <= 59  # the window the test set: it began a second before


async def two_relays_in_front_of(nursery, monkeypatch, tables: list[dict], state: str) -> list[str]:
    """Two relays (as two instances) with the same deployments; ``state``: a Redis URL, or "" for each its own."""
    monkeypatch.setenv("PRIMARY_KEY", "sk-primary")
    return [await start_relay(nursery, "http://flat-upstream.invalid/v1", upstreams=tables, retries=0, state=state,
                              access_log="off") for _ in range(2)]  # fmt: skip


async def served_by(client: httpx.AsyncClient, root: str) -> str:
    with trio.fail_after(10):
        answer = await client.post(root + "/v1/chat/completions", json={**CHAT, "model": "kimi-k2", "stream": False})
    assert answer.status_code == 200
    return answer.headers["x-moonrelay-upstream"]


@pytest.mark.parametrize("shared", [True, False])
async def test_a_429d_deployment_rests_on_every_instance(redis_server, nursery, monkeypatch, shared) -> None:
    """A 429 (Retry-After: 30) seen by one relay rests that deployment for the other relay too when they share
    --state; each on its own, the second relay still sends its first request there (the control)."""
    from tests.relay.functional.test_deployments import AlwaysRateLimited

    limited = await nursery.start(AlwaysRateLimited().serve)
    backup = await start_sim(nursery)
    tables = [{"name": "limited", "base_url": limited.url, "models": ["kimi-k2"], "key_env": "PRIMARY_KEY",
               "weight": 100}, {"name": "backup", "base_url": backup.url, "models": ["kimi-k2"]}]  # fmt: skip
    one, two = await two_relays_in_front_of(nursery, monkeypatch, tables, redis_server.url if shared else "")
    async with httpx.AsyncClient(timeout=10) as client:
        assert await served_by(client, one) == "backup"  # moved after the 429
        assert [await served_by(client, two) for _ in range(3)] == ["backup"] * 3
    assert limited.requests == (1 if shared else 2)


@pytest.mark.parametrize("shared", [True, False])
async def test_an_open_circuit_is_open_on_every_instance(redis_server, nursery, monkeypatch, shared) -> None:
    """A deployment's breaker opened by one relay's failure keeps the other relay away from it too when they share
    --state; each on its own, the second relay sends its own failing request first (the control)."""
    primary = await start_sim(nursery, key_faults={"sk-primary": "status:503"})
    backup = await start_sim(nursery)
    tables = [{"name": "primary", "base_url": primary.url, "models": ["kimi-k2"], "key_env": "PRIMARY_KEY",
               "weight": 100, "breaker_failures": 1, "breaker_cooldown_s": 60},
              {"name": "backup", "base_url": backup.url, "models": ["kimi-k2"]}]  # fmt: skip
    one, two = await two_relays_in_front_of(nursery, monkeypatch, tables, redis_server.url if shared else "")
    async with httpx.AsyncClient(timeout=10) as client:
        assert await served_by(client, one) == "backup"
        assert [await served_by(client, two) for _ in range(3)] == ["backup"] * 3
    assert primary.stats.snapshot()["started"] == (1 if shared else 2)


@pytest.mark.parametrize("stream", [True, False])
async def test_a_slot_is_free_in_redis_before_the_client_has_the_end_of_its_answer(redis_server, nursery,
                                                                                   stream) -> None:  # fmt: skip
    """The release is applied in Redis before the response's last bytes go out (docs/reference.md, "--state"): the
    moment the client has read its answer, no slot is held, with no wait and no poll."""
    sim = await start_sim(nursery)
    tables = ({"name": "sim", "base_url": sim.url, "default": True, "max_concurrent": 5},)
    root = await start_relay(nursery, sim.url, upstreams=tables, state=redis_server.url, access_log="off")
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(5):
            async with client.stream("POST", root + "/v1/chat/completions", json={**CHAT, "stream": stream}) as resp:
                assert resp.status_code == 200
                await resp.aread()
            assert redis_server.command("ZCARD", SLOTS_KEY) == b":0\r\n"
