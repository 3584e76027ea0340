"""The response cache in a running relay, over real sockets with the sim as the upstream: a hit after a miss with the
same bytes and events (streamed, with the usage chunk cut or kept as each client asked, and not streamed), nothing
sent upstream for a hit; ``Cache-Control: no-store`` and ``no-cache``; a stream cut by the upstream never stored; a
client key's own cache, its hits counted for ``rpm`` and charged no tokens; shared in Redis between two relays, and an
entry an older relay left there ignored."""

from __future__ import annotations

import json

import httpx

from proxy.cache import cache_key, slot
from proxy.limits import RedisConnection, parse_state_url
from proxy.protocol import EventSplitter
from tests.conftest import start_relay, start_sim
from tests.support.relays import settled

CHAT = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "cache me"}], "stream": True}
KEY = "mr-team-0123456789"


def upstream(sim_url: str, **more) -> tuple[dict, ...]:
    return ({"name": "sim", "base_url": sim_url, "default": True, "cache": True, **more},)



async def started(client: httpx.AsyncClient, sim_url: str) -> int:
    return (await client.get(sim_url.removesuffix("/v1") + "/sim/stats")).json()["started"]


def events(body: bytes) -> list[bytes]:
    return EventSplitter().feed(body)


async def test_a_hit_after_a_miss_answers_the_same_bytes_and_events_without_the_upstream(nursery) -> None:
    sim = await start_sim(nursery, chunks=6)
    root = await start_relay(nursery, sim.url, upstreams=upstream(sim.url, include_usage=True))
    url = root + "/v1/chat/completions"
    asked = {**CHAT, "stream_options": {"include_usage": True}}
    async with httpx.AsyncClient(timeout=10) as client:
        miss = await client.post(url, json=CHAT)
        await settled(client, root)
        hit = await client.post(url, json=CHAT)
        with_usage = await client.post(url, json=asked)  # stream_options is not in the key: the same answer
        plain = await client.post(url, json={**CHAT, "stream": False})
        await settled(client, root)
        plain_hit = await client.post(url, json={**CHAT, "stream": False})
        upstream_calls = await started(client, sim.url)
        metrics = (await client.get(root + "/metrics")).text
    assert [r.headers["x-moonrelay-cache"] for r in (miss, hit, with_usage, plain, plain_hit)] == [
        "miss", "hit", "hit", "miss", "hit"]  # fmt: skip
    assert hit.content == miss.content and events(hit.content) == events(miss.content)
    assert not any(b'"choices":[]' in e for e in events(hit.content))  # the client did not ask for the usage chunk
    assert any(b'"choices":[]' in e for e in events(with_usage.content))  # this one did: recorded before the cut
    assert [e for e in events(with_usage.content) if b'"choices":[]' not in e] == events(miss.content)
    assert hit.headers["content-type"].startswith("text/event-stream") and "x-moonrelay-upstream" not in hit.headers
    assert plain_hit.content == plain.content and plain_hit.headers["content-type"] == "application/json"
    assert int(plain_hit.headers["age"]) >= 0
    assert upstream_calls == 2  # the miss of each shape; every hit came from the cache
    assert "moonrelay_cache_hits_total 3.0" in metrics and "moonrelay_cache_misses_total 2.0" in metrics
    assert "moonrelay_cache_stores_total 2.0" in metrics
    served = next(line for line in metrics.splitlines() if line.startswith("moonrelay_cache_served_bytes_total"))
    assert float(served.split()[1]) > len(hit.content)
    assert 'moonrelay_requests_total{route="/v1/chat/completions",status="200",upstream="cache"} 3.0' in metrics


async def test_no_store_and_no_cache_and_a_cut_stream(nursery, access_lines) -> None:
    sim = await start_sim(nursery, chunks=6)
    root = await start_relay(nursery, sim.url, upstreams=upstream(sim.url))
    url = root + "/v1/chat/completions"
    cut = {**CHAT, "sim_fault": "drop:2"}  # the upstream drops the connection after two chunks
    async with httpx.AsyncClient(timeout=10) as client:
        unstored = await client.post(url, json=CHAT, headers={"cache-control": "no-store"})
        await settled(client, root)
        first = await client.post(url, json=CHAT)  # no-store wrote nothing
        await settled(client, root)
        fresh = await client.post(url, json=CHAT, headers={"cache-control": "no-cache"})  # asked anew, stored
        await settled(client, root)
        hit = await client.post(url, json=CHAT)
        broken = [await client.post(url, json=cut) for _ in range(2)]
        await settled(client, root)
        calls = await started(client, sim.url)
    assert "x-moonrelay-cache" not in unstored.headers
    assert [r.headers["x-moonrelay-cache"] for r in (first, fresh, hit)] == ["miss", "miss", "hit"]
    assert hit.content == fresh.content
    assert all(b'"upstream_error"' in r.content and b"[DONE]" not in r.content for r in broken)
    assert [r.headers["x-moonrelay-cache"] for r in broken] == ["miss", "miss"]  # the cut stream was not kept
    assert calls == 5
    assert [line.get("cache") for line in access_lines] == [None, "miss", "miss", "hit", "miss", "miss"]


async def test_a_keys_own_cache_counts_hits_for_rpm_and_charges_them_no_tokens(nursery, tmp_path) -> None:
    sim = await start_sim(nursery, chunks=4)
    keys = tmp_path / "keys"
    # An answer's usage is 6 tokens (the sim's): the budget allows the miss and refuses after a second charge.
    keys.write_text(f"{KEY} name=team rpm=4 budget=10/1d cache=on\nmr-other-0123456789 name=other\n")
    root = await start_relay(nursery, sim.url, api_keys_file=str(keys))  # the upstream does not cache: the key does
    url = root + "/v1/chat/completions"
    body = {**CHAT, "stream": False, "max_tokens": 1}
    auth = {"authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(timeout=10) as client:
        miss = await client.post(url, json=body, headers=auth)
        other = await client.post(url, json=body, headers={"authorization": "Bearer mr-other-0123456789"})
        hits = []
        for _ in range(3):
            await settled(client, root)  # the previous call settled its charge
            hits.append(await client.post(url, json=body, headers=auth))
        over = await client.post(url, json=body, headers=auth)
        calls = await started(client, sim.url)
    assert miss.headers["x-moonrelay-cache"] == "miss" and miss.json()["usage"]["total_tokens"] == 6
    assert "x-moonrelay-cache" not in other.headers  # another key: no cache of its own, none shared
    assert [r.status_code for r in hits] == [200] * 3 and {r.headers["x-moonrelay-cache"] for r in hits} == {"hit"}
    assert over.status_code == 429 and over.json()["error"]["type"] == "requests"  # rpm: hits counted
    assert calls == 2


async def test_shared_in_redis_by_two_relays_and_an_older_entry_is_a_miss(nursery, redis_server) -> None:
    sim = await start_sim(nursery, chunks=4)
    a = await start_relay(nursery, sim.url, upstreams=upstream(sim.url), state=redis_server.url)
    b = await start_relay(nursery, sim.url, upstreams=upstream(sim.url), state=redis_server.url)
    old = {**CHAT, "messages": [{"role": "user", "content": "left by an older relay"}]}
    where = "moonrelay:cache:" + slot(cache_key(old, protocol="chat"), True)
    redis = RedisConnection(parse_state_url(redis_server.url))
    await nursery.start(redis.run)
    assert await redis.call("SET", where, b"MRC\x00" + b"\x78\x01" + b"garbage") == b"OK"  # version 0: not ours
    async with httpx.AsyncClient(timeout=10) as client:
        miss = await client.post(a + "/v1/chat/completions", json=CHAT)
        await settled(client, a)
        hit = await client.post(b + "/v1/chat/completions", json=CHAT)
        older = await client.post(b + "/v1/chat/completions", json=old)
        await settled(client, b)
        renewed = await client.post(a + "/v1/chat/completions", json=old)
        calls = await started(client, sim.url)
    assert (miss.headers["x-moonrelay-cache"], hit.headers["x-moonrelay-cache"]) == ("miss", "hit")
    assert hit.content == miss.content
    assert older.status_code == 200 and older.headers["x-moonrelay-cache"] == "miss"  # not an error
    assert renewed.headers["x-moonrelay-cache"] == "hit" and renewed.content == older.content  # stored anew
    assert calls == 2
    stored = await redis.call("GET", where)
    assert isinstance(stored, bytes) and stored[:4] == b"MRC\x01"
    assert json.loads(miss.content.split(b"data: ")[1].split(b"\n")[0])["object"] == "chat.completion.chunk"
