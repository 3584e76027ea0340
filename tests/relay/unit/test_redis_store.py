"""The Redis store (proxy/limits/_redis.py) and its failover (proxy/limits/_failover.py) on a real redis-server.

The contract cases of tests/relay/unit/test_store.py hold here too; then what only a shared store has: leases that
lapse after their TTL unless renewed, two stores (two workers) counting one cap, scripts reloaded after a restart,
a deadline on every call and one budget for a request's calls, and the fall back to local counting and the way back.
"""

from __future__ import annotations

import logging
import time

import pytest
import trio
import trio.testing

from proxy.limits import FailoverStore, LocalStore, RedisStore, StoreUnavailable
from tests.relay.unit.test_store import contract_rests, contract_slots, contract_windows


async def started(nursery, store):
    await nursery.start(store.run)
    return store


@pytest.mark.parametrize("case", [contract_slots, contract_windows, contract_rests])
async def test_redis_store_contract(case, redis_server, nursery) -> None:
    await case(await started(nursery, RedisStore(redis_server.url)))


@pytest.mark.parametrize("case", [contract_slots, contract_windows, contract_rests])
async def test_failover_store_contract(case, redis_server, nursery) -> None:
    await case(await started(nursery, FailoverStore(RedisStore(redis_server.url))))


async def test_two_stores_share_one_cap_and_the_prefix_parts_them(redis_server, nursery) -> None:
    a = await started(nursery, RedisStore(redis_server.url))
    b = await started(nursery, RedisStore(redis_server.url))
    other = await started(nursery, RedisStore(redis_server.url, prefix="other:"))
    token = await a.acquire("slots:up", 2)
    assert token and await b.acquire("slots:up", 2)
    assert await b.acquire("slots:up", 2) is None and await a.acquire("slots:up", 2) is None
    assert await other.acquire("slots:up", 2) is not None
    await a.release("slots:up", token)
    assert await b.held("slots:up") == 1 and await b.acquire("slots:up", 2) is not None
    assert (await a.hit("rpm:k", 60.0, 1)).allowed and not (await b.hit("rpm:k", 60.0, 1)).allowed
    await a.rest("key:x", 5.0)
    assert (await b.resting(["key:x"]))[0] > 4.0


async def test_a_lease_lapses_after_its_ttl_unless_its_store_renews_it(redis_server, nursery) -> None:
    """A store that stops renewing (its worker crashed) loses its slots after lease_s; one that runs keeps them."""
    running = await started(nursery, RedisStore(redis_server.url, lease_s=0.6))
    crashed = await started(nursery, RedisStore(redis_server.url, lease_s=0.6))
    kept = await running.acquire("slots:u", 2)
    lost = await crashed.acquire("slots:u", 2)
    assert kept and lost and await running.acquire("slots:u", 2) is None
    crashed._leases.clear()  # as good as dead: it renews nothing
    await trio.sleep(1.0)  # past the TTL: running.run() renewed its lease every 0.2 s
    assert await running.held("slots:u") == 1
    assert await running.acquire("slots:u", 2) is not None  # the crashed worker's slot came back


async def test_every_lease_is_the_stores_own_ttl(redis_server, nursery) -> None:
    """Whoever takes a slot (an upstream's, a client key's, a probe), its lease is lease_s: the store sets it."""
    store = await started(nursery, RedisStore(redis_server.url, lease_s=2.0))
    for name in ("slots:upstream:u", "key:k:concurrent", "probe:u"):
        assert await store.acquire(name, 1) is not None
        ttl = int(redis_server.command("PTTL", f"moonrelay:{name}")[1:])
        assert 1000 < ttl <= 2000, (name, ttl)


async def test_renewal_adds_back_the_leases_a_restarted_redis_lost(redis_server, nursery) -> None:
    store = await started(nursery, RedisStore(redis_server.url))
    token = await store.acquire("slots:u", 5)
    assert token
    redis_server.kill()
    redis_server.start()  # empty: no persistence
    assert redis_server.command("ZCARD", "moonrelay:slots:u") == b":0\r\n"  # (no await since: nothing renewed yet)
    for _ in range(3):  # a pooled connection to the old server fails its next call once; then a new one is made
        try:
            await store.renew_held()  # what run() does every third of the TTL; scripts loaded again (NOSCRIPT)
            break
        except StoreUnavailable:
            pass
    else:
        raise AssertionError("the store never reconnected")
    assert await store.held("slots:u") == 1


async def test_scripts_are_loaded_again_after_a_script_flush(redis_server, nursery) -> None:
    store = await started(nursery, RedisStore(redis_server.url))
    assert (await store.hit("rpm:k", 60.0, 5)).used == 1
    assert redis_server.command("SCRIPT", "FLUSH") == b"+OK\r\n"
    assert (await store.hit("rpm:k", 60.0, 5)).used == 2


async def test_a_paused_redis_costs_a_call_its_deadline_and_no_more(redis_server, nursery) -> None:
    store = await started(nursery, RedisStore(redis_server.url, timeout_s=0.2))
    assert await store.held("slots:u") == 0
    redis_server.pause()
    try:
        began = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.acquire("slots:u", 5)
        assert time.monotonic() - began < 0.5
        assert store._leases == {}  # a lease we cannot know was taken is not renewed: it lapses if it was
    finally:
        redis_server.resume()
    assert await store.held("slots:u") in (0, 1)


async def test_an_unreachable_redis_falls_back_to_local_and_comes_back(redis_server, nursery, caplog) -> None:
    caplog.set_level(logging.INFO, "moonrelay")
    store = FailoverStore(RedisStore(redis_server.url, timeout_s=0.2), probe_s=0.1)
    changes: list[bool] = []
    back = trio.Event()

    def changed(up: bool) -> None:
        changes.append(up)
        if up:
            back.set()

    store.on_change = changed
    await started(nursery, store)
    shared = await store.acquire("slots:u", 1)
    assert shared and shared.startswith("r:") and store.up
    redis_server.kill()
    began = time.monotonic()
    local = await store.acquire("slots:u", 1)  # Redis is gone: counted here, and at once
    assert local and local.startswith("l:") and not store.up and changes == [False]
    assert await store.acquire("slots:u", 1) is None  # the local cap holds while down
    assert time.monotonic() - began < 0.5
    began = time.monotonic()
    await store.release("slots:u", shared)  # a Redis lease given back while down: forgotten at once (it lapses)
    assert time.monotonic() - began < 0.05 and store.redis._leases == {}
    assert store.errors >= 1
    redis_server.start()
    with trio.fail_after(2):
        await back.wait()  # the probe finds it within a probe period
    assert changes == [False, True]
    assert (await store.acquire("slots:u", 1) or "").startswith("r:")
    await store.release("slots:u", local)  # the local lease goes back to the local store
    assert await store.local.held("slots:u") == 0
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("state:")]
    assert sum("unavailable" in line for line in lines) == 1 and sum("answers again" in line for line in lines) == 1


async def test_the_log_lines_never_show_the_password(nursery, caplog) -> None:
    caplog.set_level(logging.INFO, "moonrelay")
    store = FailoverStore(RedisStore("redis://relay:pw-8d1f@127.0.0.1:1/0", timeout_s=0.2), probe_s=0.1)
    await started(nursery, store)  # nothing listens on port 1: unavailable
    assert not store.up and store.redis.url == "redis://relay:***@127.0.0.1:1/0"
    lines = [record.getMessage() for record in caplog.records]
    assert any("redis://relay:***@127.0.0.1:1/0 unavailable" in line for line in lines), lines
    assert not any("pw-8d1f" in line for line in lines)


async def test_a_redis_down_at_start_is_counted_locally_until_it_answers(tmp_path, nursery) -> None:
    store = FailoverStore(RedisStore(f"unix://{tmp_path}/none.sock?db=0", timeout_s=0.2), LocalStore(), probe_s=0.1)
    await started(nursery, store)
    assert not store.up
    assert (await store.acquire("slots:u", 1) or "").startswith("l:")
    assert (await store.hit("rpm:k", 60.0, 1)).allowed and not (await store.hit("rpm:k", 60.0, 1)).allowed


async def test_acquires_of_one_moment_go_out_as_one_call_and_fill_the_cap_in_order(redis_server, nursery) -> None:
    store = await started(nursery, RedisStore(redis_server.url))
    calls: list[int] = []
    send = store._asks._send

    async def counted(asks) -> None:
        calls.append(len(asks))
        await send(asks)

    store._asks._send = counted
    tokens: list[str | None] = [None] * 50

    async def one(i: int) -> None:
        tokens[i] = await store.acquire("slots:burst", 30)

    async with trio.open_nursery() as burst:
        for i in range(50):
            burst.start_soon(one, i)
    assert sum(calls) == 50 and len(calls) <= 3  # the first alone at most, then the rest together
    assert sum(t is not None for t in tokens) == 30 and await store.held("slots:burst") == 30


async def test_batches_send_what_was_queued_meanwhile_and_signal_each_batch() -> None:
    from proxy.limits._batch import Batches

    sent: list[list[int]] = []
    gate = trio.Event()

    async def send(items: list[int]) -> None:
        sent.append(items)
        await gate.wait()

    batches = Batches(send, most=2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(batches.run)
        first = batches.add(1)
        await trio.testing.wait_all_tasks_blocked()
        second = batches.add(2), batches.add(3), batches.add(4)  # queued while the first call is on its way
        assert sent == [[1]] and not first.is_set()
        gate.set()
        await first.wait()
        await second[0].wait()
        assert sent == [[1], [2, 3], [4]] and second[0] is second[2]
        nursery.cancel_scope.cancel()


async def test_a_release_is_applied_before_it_returns(redis_server, nursery) -> None:
    """What the relay relies on to free a slot before a response's last bytes: once ``release`` returned, every
    other worker sees the slot free."""
    store = await started(nursery, FailoverStore(RedisStore(redis_server.url)))
    other = await started(nursery, RedisStore(redis_server.url))
    for _ in range(20):
        token = await store.acquire("slots:r", 1)
        assert token and await other.acquire("slots:r", 1) is None
        await store.release("slots:r", token)
        assert await other.held("slots:r") == 0


async def test_releases_of_one_moment_go_out_together_and_each_waits_for_its_own(redis_server, nursery) -> None:
    store = await started(nursery, RedisStore(redis_server.url))
    other = await started(nursery, RedisStore(redis_server.url))
    tokens = [await store.acquire("slots:b", 50) for _ in range(50)]
    calls: list[int] = []
    send = store._releases._send

    async def counted(gives) -> None:
        calls.append(len(gives))
        await send(gives)

    store._releases._send = counted
    async with trio.open_nursery() as burst:
        for token in tokens:
            burst.start_soon(store.release, "slots:b", token)
    assert sum(calls) == 50 and len(calls) <= 3 and await other.held("slots:b") == 0


async def test_a_lone_acquire_is_sent_by_its_caller_not_the_batch_task(redis_server, nursery) -> None:
    store = await started(nursery, RedisStore(redis_server.url))
    queued: list[object] = []
    add = store._asks.add
    store._asks.add = lambda item: queued.append(item) or add(item)
    assert await store.acquire("slots:l", 5) is not None
    assert queued == []


async def test_a_requests_calls_share_one_deadline(redis_server, nursery) -> None:
    """Redis answers every call in 0.15 s, within the deadline of 0.25 s: alone, each call succeeds; within one
    request's budget, the second runs out of what is left (0.1 s) and the third fails at once."""
    from proxy.limits import StoreBudget
    from tests.support.tcpproxy import TCPProxy

    proxy = await nursery.start(TCPProxy(redis_server.port).serve)
    store = await started(nursery, RedisStore(proxy.url, timeout_s=0.25))
    assert (await store.hit("rpm:k", 60.0, 100)).allowed  # connected, script loaded
    proxy.delay_s = 0.15
    for _ in range(3):
        assert (await store.hit("rpm:k", 60.0, 100)).allowed
    budget = StoreBudget(0.25)
    entered = budget.enter()
    try:
        assert (await store.hit("rpm:k", 60.0, 100)).allowed
        began = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.hit("rpm:k", 60.0, 100)
        assert time.monotonic() - began < 0.15
        began = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.hit("rpm:k", 60.0, 100)
        assert time.monotonic() - began < 0.05  # nothing left: it fails at once
        budget.ending()  # the request's end: a budget of its own
        assert (await store.hit("rpm:k", 60.0, 100)).allowed
    finally:
        budget.leave(entered)
