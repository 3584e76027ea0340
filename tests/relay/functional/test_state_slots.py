"""Slots in a shared store come back, whatever happens to the request, the relay or Redis (docs/reference.md,
"Shared state on Redis"), and a client that waits for its answers is never refused for concurrency.

Every slot is a lease of ``--state-lease-s``, renewed while its request lives: a lease nobody renews (an acquire Redis
applied after the relay gave up on it, a release lost while Redis was unreachable, a relay killed mid-stream) lapses
within ``--state-lease-s``. Redis is a real redis-server; a TCP proxy in front of it (tests/support/tcpproxy.py)
delays or cuts what the relay sends; relays that must be killed or run several workers are child processes.
"""

from __future__ import annotations

import time

import httpx
import trio

from tests.conftest import start_relay, start_sim
from tests.support.children import stop_child
from tests.support.relays import start_relay_process, wait_backend, write_config
from tests.support.tcpproxy import TCPProxy

KEY = "mr-slots-0123456789"
AUTH = {"authorization": f"Bearer {KEY}"}
CHAT = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "hi"}], "stream": True}
LEASE_S = 1.5
# Live leases (score past Redis's now) under the client keys' concurrency slots and the upstreams' slots.
LIVE = ("local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) local n = 0 "
        "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do n = n + redis.call('ZCOUNT', k, now, '+inf') end "
        "return n")  # fmt: skip


def live(redis_server, pattern: str = "moonrelay:key:*:concurrent") -> int:
    reply = redis_server.command("EVAL", LIVE, "0", pattern)
    assert reply.startswith(b":"), reply
    return int(reply[1:])


async def until(check, within_s: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, f"not within {within_s} s: {what}"
        await trio.sleep(0.02)


async def shared_again(client: httpx.AsyncClient, root: str) -> None:
    """Until the relay counts in Redis again (after its fall back to local counting)."""
    await wait_backend(client, root, 1, 10)


async def status(client: httpx.AsyncClient, root: str, body: dict = CHAT) -> int:
    """One request read to its end: its status."""
    async with client.stream("POST", root + "/v1/chat/completions", json=body, headers=AUTH) as resp:
        await resp.aread()
    return resp.status_code


async def admitted_again_within(client: httpx.AsyncClient, root: str, since: float, within_s: float) -> list[int]:
    """Requests one after another until one gets 200; fails if none does within ``within_s`` of ``since``."""
    seen = []
    while (code := await status(client, root)) != 200:
        seen.append(code)
        assert time.monotonic() - since < within_s, f"still refused {time.monotonic() - since:.1f} s on: {seen}"
        await trio.sleep(0.1)
    return seen


def relay_args(**flags: object) -> dict:
    return {"api_keys": KEY, "key_concurrent": 1, "state_lease_s": LEASE_S, "state_probe_s": 0.1,
            "access_log": "off", **flags}  # fmt: skip


async def test_a_slot_redis_took_after_the_relay_gave_up_comes_back_within_the_lease(redis_server, nursery) -> None:
    sim = await start_sim(nursery)
    proxy = await nursery.start(TCPProxy(redis_server.port).serve)
    root = await start_relay(nursery, sim.url, state=proxy.url, **relay_args(state_timeout_s=0.25))
    async with httpx.AsyncClient(timeout=10) as client:
        assert await status(client, root) == 200  # the connection open, the scripts loaded
        proxy.delay_next(0.6)  # the next acquire reaches Redis after the relay gave up on it
        assert await status(client, root) == 200  # let through, counted in the worker meanwhile
        await until(lambda: live(redis_server) == 1, what="Redis applies the late acquire")
        applied = time.monotonic()
        await shared_again(client, root)
        await admitted_again_within(client, root, applied, LEASE_S + 1.0)


async def test_a_release_lost_while_redis_was_unreachable_comes_back_within_the_lease(redis_server, nursery) -> None:
    sim = await start_sim(nursery, chunks=10, interval=0.05)
    proxy = await nursery.start(TCPProxy(redis_server.port).serve)
    root = await start_relay(nursery, sim.url, state=proxy.url, **relay_args())
    async with httpx.AsyncClient(timeout=10) as client:
        async with client.stream("POST", root + "/v1/chat/completions", json=CHAT, headers=AUTH) as held:
            assert held.status_code == 200 and live(redis_server) == 1
            proxy.cut()  # Redis unreachable: the release at the stream's end is lost
            cut = time.monotonic()
            await held.aread()
        refused = proxy.refused
        await until(lambda: proxy.refused > refused, what="the relay tries Redis after the stream ended")
        proxy.restore()
        await shared_again(client, root)
        assert live(redis_server) == 1  # the lost release: still counted, renewed by nobody
        await admitted_again_within(client, root, cut, LEASE_S + 1.0)


async def test_the_slots_of_a_relay_killed_mid_stream_come_back_within_the_lease(redis_server, nursery, tmp_path):
    sim = await start_sim(nursery, chunks=200, interval=0.05)
    config = write_config(tmp_path, sim.url, 1)
    args = ["--config", config, "--state", redis_server.url, "--api-keys", KEY, "--key-concurrent", "1",
            "--state-lease-s", str(LEASE_S)]  # fmt: skip
    proc, killed_root = start_relay_process(args, tmp_path / "killed.err")
    survivor = await start_relay(nursery, sim.url, upstreams=({"name": "sim", "base_url": sim.url, "default": True,
                                 "max_concurrent": 1},), state=redis_server.url, **relay_args())  # fmt: skip
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            async with client.stream("POST", killed_root + "/v1/chat/completions", json=CHAT, headers=AUTH) as held:
                assert held.status_code == 200
                assert live(redis_server) == 1 and live(redis_server, "moonrelay:slots:upstream:*") == 1
                proc.kill()  # SIGKILL: nothing given back, nothing renewed from now on
                proc.wait()
                killed = time.monotonic()
            assert await status(client, survivor) == 429  # both slots still held by the dead relay's leases
            await admitted_again_within(client, survivor, killed, LEASE_S + 1.0)
    finally:
        stop_child(proc)


async def test_a_client_that_waits_for_each_answer_is_never_refused_for_concurrency(redis_server, nursery, tmp_path):
    """Two workers sharing one Redis, a key and an upstream with room for one request: 20 requests one after the
    other (streamed and not, each on a new connection, so both workers serve them) all get 200 — every slot is
    free before the client can see the end of the answer before it."""
    sim = await start_sim(nursery)
    args = ["--workers", "2", "--config", write_config(tmp_path, sim.url, 1), "--state", redis_server.url,
            "--api-keys", KEY, "--key-concurrent", "1"]  # fmt: skip
    proc, root = start_relay_process(args, tmp_path / "relay.err")
    try:
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=10, limits=limits) as client:
            codes = [await status(client, root, {**CHAT, "stream": i % 2 == 0}) for i in range(20)]
    finally:
        stop_child(proc)
    assert codes == [200] * 20
    assert "Traceback" not in (tmp_path / "relay.err").read_text()


async def test_a_slow_redis_costs_a_request_one_deadline_in_all(redis_server, nursery) -> None:
    """Redis answers every call in 0.3 s, within the deadline of 0.4 s: a keyed request that checks its
    concurrency, tpm, budget and rpm and takes an upstream slot (five calls) still waits on Redis at most 0.4 s in
    all, then counts in the worker."""
    sim = await start_sim(nursery)
    proxy = await nursery.start(TCPProxy(redis_server.port).serve)
    upstream = ({"name": "sim", "base_url": sim.url, "default": True, "max_concurrent": 5},)
    root = await start_relay(nursery, sim.url, upstreams=upstream, state=proxy.url,
                             **relay_args(key_tpm=100000, key_budget="1000000/1d", key_rpm=1000, state_timeout_s=0.4,
                                          state_probe_s=30))  # fmt: skip
    async with httpx.AsyncClient(timeout=10) as client:
        assert await status(client, root) == 200  # every script loaded, the connection open
        await until(lambda: redis_server.command("KEYS", "moonrelay:key:*:tpm:*") != b"*0\r\n", what="tokens added")
        proxy.delay_s = 0.3
        began = time.monotonic()
        assert await status(client, root) == 200
        took = time.monotonic() - began
    assert took < 1.0, f"{took:.2f} s: each call waited on its own deadline"
