"""The response cache on a real redis-server (proxy/cache/_redis.py): shared between stores (workers, instances),
the prefix, the time to live Redis keeps, entries too big to write, an entry an older relay left (a miss), and a
Redis that is down, stalled or back: misses, never errors."""

from __future__ import annotations

import logging
import random

import pytest
import trio

from proxy.cache import Entry, RedisCache, encode
from proxy.limits import MAX_BULK, RedisConnection, parse_state_url
from proxy.protocol import Usage
from tests.relay.unit.test_cache import DONE, chunk

STREAM = Entry(200, (("content-type", "text/event-stream"),), pieces=(chunk("Hel"), chunk("lo", "stop") + DONE),
               offsets_ms=(0, 25), usage=Usage(3, 2), model="kimi-k2-0905", stored_at=1.7e9)  # fmt: skip
JSON = Entry(200, (("content-type", "application/json"),), body=b'{"id":"c1","choices":[]}', usage=Usage(3, 2))


async def started(nursery, cache: RedisCache) -> RedisCache:
    await nursery.start(cache.run)
    return cache


async def raw_client(nursery, url: str) -> RedisConnection:
    """The relay's own RESP client, to look at and write what the store keeps."""
    client = RedisConnection(parse_state_url(url))
    await nursery.start(client.run)
    return client


async def test_what_one_store_puts_another_gets(redis_server, nursery) -> None:
    a = await started(nursery, RedisCache(redis_server.url))
    b = await started(nursery, RedisCache(redis_server.url))
    other = await started(nursery, RedisCache(redis_server.url, prefix="other:"))
    assert await a.get("v1:k:sse") is None
    assert await a.put("v1:k:sse", STREAM) and await a.put("v1:k:json", JSON)
    assert await b.get("v1:k:sse") == STREAM and await b.get("v1:k:json") == JSON
    assert await other.get("v1:k:sse") is None  # another fleet's prefix
    assert (a.stats.stores, a.stats.misses, b.stats.hits, b.stats.bytes_served) == (2, 1, 2, STREAM.size + JSON.size)
    assert a.stats.bytes_stored == len(encode(STREAM)) + len(encode(JSON)) and a.stats.errors == 0
    client = await raw_client(nursery, redis_server.url)
    assert await client.call("EXISTS", "moonrelay:cache:v1:k:sse") == 1


async def test_redis_keeps_each_entry_for_its_ttl(redis_server, nursery) -> None:
    cache = await started(nursery, RedisCache(redis_server.url, ttl_s=30.0))
    assert await cache.put("long", JSON) and await cache.put("short", JSON, ttl_s=0.25)
    client = await raw_client(nursery, redis_server.url)
    assert 29_000 < await client.call("PTTL", "moonrelay:cache:long") <= 30_000  # Redis's clock, not a sleep
    assert 0 < await client.call("PTTL", "moonrelay:cache:short") <= 250
    assert not await cache.put("never", JSON, ttl_s=0)
    assert await client.call("EXISTS", "moonrelay:cache:never") == 0


async def test_an_entry_left_by_an_older_relay_is_a_miss(redis_server, nursery) -> None:
    cache = await started(nursery, RedisCache(redis_server.url))
    client = await raw_client(nursery, redis_server.url)
    older = b"MRC\x00" + encode(STREAM)[4:]
    await client.call("SET", "moonrelay:cache:old", older)
    await client.call("SET", "moonrelay:cache:json", b'{"status":200,"body":"hi"}')  # a format before versions
    await client.call("HSET", "moonrelay:cache:hash", "a", "b")  # not even a string: Redis answers an error
    assert await cache.get("old") is None and await cache.get("json") is None and await cache.get("hash") is None
    assert cache.stats.misses == 3 and cache.stats.hits == 0
    assert await cache.put("old", STREAM) and await cache.get("old") == STREAM  # the next answer replaces it


async def test_an_entry_too_big_to_keep_is_not_written(redis_server, nursery) -> None:
    small = await started(nursery, RedisCache(redis_server.url, max_entry_bytes=100))
    assert not await small.put("k", STREAM) and small.stats.too_big == 1
    incompressible = Entry(200, (), body=random.Random(0).randbytes(MAX_BULK + 1))
    big = await started(nursery, RedisCache(redis_server.url, max_entry_bytes=4 * MAX_BULK))
    assert not await big.put("k", incompressible) and big.stats.too_big == 1  # more than the client can read back
    assert await big.get("k") is None and big.stats.errors == 0


async def test_a_redis_that_is_down_or_stalled_is_a_miss_and_one_log_line(redis_server, nursery, caplog) -> None:
    caplog.set_level(logging.INFO, logger="moonrelay")
    idle = RedisCache(redis_server.url)
    assert await idle.get("k") is None and not await idle.put("k", JSON)  # not running yet: misses
    cache = await started(nursery, RedisCache(redis_server.url, timeout_s=0.2))
    assert await cache.put("k", JSON)
    redis_server.pause()  # connections stay open, nothing answers
    try:
        with trio.fail_after(2):
            assert await cache.get("k") is None and not await cache.put("k", JSON)
    finally:
        redis_server.resume()
    redis_server.kill()
    assert await cache.get("k") is None and await cache.get("k") is None
    assert cache.stats.errors == 4 and cache.stats.misses == 3
    redis_server.start()
    with trio.fail_after(5):
        while not await cache.put("k", JSON):  # noqa: ASYNC110 - the client reconnects at the next call
            await trio.sleep(0.05)
    assert await cache.get("k") == JSON
    lines = [r.getMessage() for r in caplog.records if r.name == "moonrelay"]
    assert len(lines) == 2 and "failed" in lines[0] and "answers again" in lines[1]


@pytest.mark.parametrize("bad", ["rediss://h:6379/0", "http://h"])
def test_a_bad_state_url_is_refused_when_the_store_is_made(bad) -> None:
    with pytest.raises(ValueError, match="state"):
        RedisCache(bad)
