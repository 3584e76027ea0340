"""The response cache's core (proxy/cache/), sans I/O and in memory: the key and what it leaves out, the policy and
Cache-Control, the entry's bytes (older versions and damaged bytes are misses), the recorder that keeps only clean
streams, the replayer, and the memory store's bounds with a clock the test moves (no sleeps)."""

from __future__ import annotations

import json
import zlib

import pytest
import trio

from proxy.cache import (
    ENTRY_VERSION,
    CacheControl,
    CachePolicy,
    Entry,
    MemoryCache,
    StreamRecorder,
    cache_control,
    cache_key,
    decode,
    encode,
    json_entry,
    replay,
    schedule,
    slot,
    uncacheable,
)
from proxy.protocol import Usage
from tests.relay.unit.test_store import FakeClock

REQUEST = {"model": "kimi-k2", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.3, "max_tokens": 64}
SSE = [("content-type", "text/event-stream"), ("x-request-id", "abc"), ("Content-Length", "9")]


def chunk(content: str, finish: str | None = None) -> bytes:
    body = {"id": "c1", "object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": {"content": content}, "finish_reason": finish}]}  # fmt: skip
    return b"data: " + json.dumps(body).encode() + b"\n\n"


USAGE_CHUNK = b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'
DONE = b"data: [DONE]\n\n"


# -- the key -------------------------------------------------------------------------------------------------------


def test_the_key_is_versioned_sha256_of_the_canonical_request() -> None:
    key = cache_key(REQUEST)
    assert key.startswith("v1:") and len(key) == 3 + 64 and int(key[3:], 16) >= 0
    # Pinned: a change to what the key holds must come with a new KEY_VERSION, or old entries answer new requests.
    assert key == "v1:4b086aece910d94c546a2331cba47f8be0c348af7d86357cb731d2dc7242f5c8"


@pytest.mark.parametrize(
    "same",
    [
        {"max_tokens": 64, "temperature": 0.3, "messages": [{"content": "hi", "role": "user"}], "model": "kimi-k2"},
        {**REQUEST, "stream": True, "stream_options": {"include_usage": True}},
        {**REQUEST, "user": "u-1", "metadata": {"team": "a"}, "store": True, "prompt_cache_key": "p"},
        {**REQUEST, "safety_identifier": "s", "tools": None, "seed": None},
        {**REQUEST, "max_tokens": 64.0},  # a whole-number float is the integer
    ],
)
def test_what_cannot_change_the_answer_is_not_in_the_key(same) -> None:
    assert cache_key(same) == cache_key(REQUEST)


@pytest.mark.parametrize(
    "other",
    [
        {**REQUEST, "model": "kimi-k2-turbo"},
        {**REQUEST, "messages": [{"role": "user", "content": "hi!"}]},
        {**REQUEST, "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]},
        {**REQUEST, "temperature": 0.31},
        {**REQUEST, "max_tokens": 65},
        {**REQUEST, "seed": 7},
        {**REQUEST, "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
        {**REQUEST, "tool_choice": "required"},
        {**REQUEST, "response_format": {"type": "json_object"}},
        {**REQUEST, "n": 2},
        {**REQUEST, "top_p": 0.5},
        {**REQUEST, "stop": ["END"]},
        {**REQUEST, "some_new_parameter": True},  # unknown to the relay: it may change the answer
    ],
)
def test_what_may_change_the_answer_is_in_the_key(other) -> None:
    assert cache_key(other) != cache_key(REQUEST)


def test_protocol_scope_and_vary_on_part_the_keys() -> None:
    assert cache_key(REQUEST, protocol="messages") != cache_key(REQUEST)
    assert cache_key(REQUEST, scope="key-a") != cache_key(REQUEST, scope="key-b")
    by_user = CachePolicy(vary_on=frozenset({"user"}))
    assert cache_key({**REQUEST, "user": "a"}, policy=by_user) != cache_key({**REQUEST, "user": "b"}, policy=by_user)
    assert cache_key({**REQUEST, "metadata": {"x": 1}}, policy=by_user) == cache_key(REQUEST, policy=by_user)
    assert slot("v1:ab", True) == "v1:ab:sse" and slot("v1:ab", False) == "v1:ab:json"
    weird = {**REQUEST, "messages": [{"role": "user", "content": "\ud800 lone surrogate"}]}  # json.loads allows it
    assert cache_key(weird) != cache_key(REQUEST)


def test_by_default_every_request_is_cacheable_and_the_policy_can_leave_some_out() -> None:
    assert uncacheable({**REQUEST, "temperature": 1.5, "n": 4}) is None
    cold = CachePolicy(max_temperature=0.0)
    assert uncacheable({**REQUEST, "temperature": 0}, cold) is None
    assert uncacheable({**REQUEST, "temperature": 0.2}, cold) == "temperature"
    assert uncacheable({"model": "m", "messages": []}, cold) == "temperature"  # the API's default is 1
    assert uncacheable({"model": "m", "messages": []}, CachePolicy(max_temperature=0, default_temperature=0)) is None
    one = CachePolicy(max_n=1)
    assert uncacheable({**REQUEST, "n": 1}, one) is None and uncacheable({**REQUEST, "n": 2}, one) == "n"


@pytest.mark.parametrize(
    ("header", "read", "write"),
    [
        (None, True, True),
        ("", True, True),
        ("no-store", False, False),
        ("No-Cache", False, True),
        ("max-age=0, no-cache", False, True),
        ("no-cache, no-store", False, False),
        ("private, max-age=60", True, True),
        ('no-cache="set-cookie"', False, True),
    ],
)
def test_cache_control(header, read, write) -> None:
    assert cache_control(header) == CacheControl(read, write)


# -- the entry's bytes ---------------------------------------------------------------------------------------------


def stream_entry() -> Entry:
    return Entry(200, (("content-type", "text/event-stream"),), pieces=(chunk("Hel"), chunk("lo") + chunk("", "stop"),
                 DONE), offsets_ms=(0, 30, 61), usage=Usage(3, 2, cached_tokens=1), model="kimi-k2-0905",
                 stored_at=1.5e9)  # fmt: skip


def test_an_entry_comes_back_from_its_bytes_whole() -> None:
    sse = stream_entry()
    assert decode(encode(sse), 1 << 20) == sse and sse.stream and sse.size == sum(map(len, sse.pieces)) + 29
    body = json_entry(200, SSE, b'{"id":"x","choices":[]}', usage=Usage(1, 1), model="m")
    assert body.headers == (("content-type", "text/event-stream"),)  # per-call headers are not kept
    assert decode(encode(body), 1 << 20) == body and not body.stream
    assert len(encode(Entry(200, (), pieces=(chunk("token"),) * 2000, offsets_ms=tuple(range(2000))))) < 20_000


def test_an_entry_of_another_version_or_damaged_is_a_miss_never_an_error() -> None:
    good = encode(stream_entry())
    older = b"MRC\x00" + good[4:]
    newer = b"MRC" + bytes([ENTRY_VERSION + 1]) + good[4:]
    # What a former format might have been: plain JSON with the events in it.
    legacy = json.dumps({"status": 200, "events": ["data: [DONE]\n\n"]}).encode()
    assert all(decode(raw, 1 << 20) is None for raw in (older, newer, legacy, b"", b"MRC", b"MRC\x01", b"\x00" * 64))
    for cut in range(len(good)):  # every truncation
        assert decode(good[:cut], 1 << 20) is None
    for at in range(4, len(good), 7):  # flipped bytes: zlib's check or the header's sums refuse them
        assert decode(good[:at] + bytes([good[at] ^ 0x55]) + good[at + 1 :], 1 << 20) is None
    assert decode(good, 100) is None  # more answer than the bound: not unpacked past it


@pytest.mark.parametrize(
    "header",
    [
        {"status": 200, "headers": [], "kind": "sse", "lengths": [5, 5], "offsets_ms": [0, 1]},  # lengths ≠ payload
        {"status": 200, "headers": [], "kind": "sse", "lengths": [4], "offsets_ms": [0, 1]},  # offsets ≠ pieces
        {"status": 99, "headers": [], "kind": "json", "lengths": [4], "offsets_ms": []},
        {"status": "200", "headers": [], "kind": "json", "lengths": [4], "offsets_ms": []},
        {"status": 200, "headers": [], "kind": "ndjson", "lengths": [4], "offsets_ms": []},
        {"status": 200, "headers": [["a"]], "kind": "json", "lengths": [4], "offsets_ms": []},
        {"status": 200, "headers": [], "kind": "json", "lengths": [-1, 5], "offsets_ms": []},
        {"status": 200, "headers": [], "kind": "json", "lengths": [4], "offsets_ms": [],
         "usage": {"prompt_tokens": "x"}},
        {"status": 200, "headers": [], "kind": "json"},
        [200],
    ],
)
def test_a_header_that_does_not_add_up_is_a_miss(header) -> None:
    raw = json.dumps(header).encode() + b"\n" + b"body"
    assert decode(b"MRC" + bytes([ENTRY_VERSION]) + zlib.compress(raw), 1 << 20) is None


# -- recording and replaying a stream ------------------------------------------------------------------------------


def test_a_clean_stream_is_recorded_piece_by_piece_with_its_times() -> None:
    clock = FakeClock(100.0)
    recorder = StreamRecorder(200, SSE, clock=clock)
    for piece, at in ((chunk("Hel"), 100.0), (b": ping\n\n", 100.01), (chunk("lo"), 100.03),
                      (chunk("", "stop") + USAGE_CHUNK + DONE, 100.062)):  # fmt: skip
        clock.now = at
        recorder.piece(piece)
    entry = recorder.finish(usage=Usage(3, 2), model="kimi-k2-0905")
    assert entry is not None and recorder.why is None
    assert entry.pieces == (chunk("Hel"), chunk("lo"), chunk("", "stop") + USAGE_CHUNK + DONE)  # the ping is not kept
    assert entry.offsets_ms == (0, 30, 62) and entry.headers == (("content-type", "text/event-stream"),)
    assert entry.usage == Usage(3, 2) and entry.model == "kimi-k2-0905" and entry.stored_at > 1e9


@pytest.mark.parametrize(
    ("pieces", "fail", "why"),
    [
        ([chunk("Hel"), chunk("lo")], False, "truncated"),  # the body ended before [DONE]
        ([chunk("Hel"), b'data: {"error":{"message":"upstream timed out","code":"upstream_timeout"}}\n\n'], False,
         "truncated"),  # the relay's error event: no [DONE] follows it
        ([chunk("Hel"), DONE], True, "failed"),  # the caller saw an error
        ([b": ping\n\n"], False, "empty"),
        ([chunk("x" * 700), chunk("y" * 700), DONE], False, "too_big"),
    ],
)
def test_a_stream_that_did_not_complete_cleanly_is_never_an_entry(pieces, fail, why) -> None:
    recorder = StreamRecorder(200, SSE, max_bytes=1000)
    for piece in pieces:
        recorder.piece(piece)
    if fail:
        recorder.fail()
        recorder.piece(DONE)  # whatever comes after a failure changes nothing
    assert recorder.finish() is None and recorder.why == why


def test_a_protocol_without_a_done_event_ends_wherever_the_body_ends() -> None:
    recorder = StreamRecorder(200, done=None)
    recorder.piece(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    assert recorder.finish() is not None


async def test_replay_gives_the_pieces_back_and_paces_them_by_the_recorded_gaps(autojump_clock) -> None:
    entry = Entry(200, (), pieces=(b"a\n\n", b"b\n\n", b"c\n\n", b"d\n\n"), offsets_ms=(0, 40, 5040, 5100))
    assert [wait for wait, _ in schedule(entry)] == [0, 0, 0, 0]
    assert schedule(entry, pace=True, max_gap_s=2.0) == [(0, b"a\n\n"), (0.04, b"b\n\n"), (2.0, b"c\n\n"),
                                                         (0.06, b"d\n\n")]  # fmt: skip
    began = trio.current_time()
    seen = []
    async for piece in replay(entry, pace=True, max_gap_s=2.0):
        seen.append((round(trio.current_time() - began, 3), piece))
    assert seen == [(0, b"a\n\n"), (0.04, b"b\n\n"), (2.04, b"c\n\n"), (2.1, b"d\n\n")]
    began = trio.current_time()
    assert [p async for p in replay(entry)] == list(entry.pieces) and trio.current_time() == began


async def test_replay_cuts_the_usage_chunk_for_a_client_that_did_not_ask() -> None:
    entry = Entry(200, (), pieces=(chunk("hi"), chunk("", "stop") + USAGE_CHUNK + DONE), offsets_ms=(0, 1))
    assert b"".join([p async for p in replay(entry, strip_usage=True)]) == chunk("hi") + chunk("", "stop") + DONE
    assert b"".join([p async for p in replay(entry)]) == b"".join(entry.pieces)


# -- the memory store ----------------------------------------------------------------------------------------------


def sized(n: int) -> Entry:
    return Entry(200, (), body=b"x" * n)


async def test_the_memory_store_keeps_answers_until_their_ttl() -> None:
    clock = FakeClock()
    cache = MemoryCache(ttl_s=60.0, clock=clock)
    assert await cache.get("k") is None
    assert await cache.put("k", sized(10)) and await cache.put("short", sized(5), ttl_s=1.0)
    assert await cache.get("k") == sized(10)
    clock.now += 1.0
    assert await cache.get("short") is None  # at its TTL: gone
    clock.now += 58.9
    assert await cache.get("k") == sized(10)
    clock.now += 0.1
    assert await cache.get("k") is None
    assert not await cache.put("never", sized(1), ttl_s=0)
    stats = cache.stats
    assert (stats.hits, stats.misses, stats.stores, stats.expirations, stats.entries, stats.bytes_stored) == (
        2, 3, 2, 2, 0, 0)  # fmt: skip
    assert stats.bytes_served == 20


async def test_the_memory_store_evicts_the_least_recently_used_by_count_and_by_bytes() -> None:
    clock = FakeClock()
    cache = MemoryCache(max_entries=3, max_bytes=100, max_entry_bytes=90, clock=clock)
    for key in "abc":
        assert await cache.put(key, sized(10))
    assert await cache.get("a")  # a is now the most recently used: b goes first
    assert await cache.put("d", sized(10))  # a fourth entry: over the count
    assert await cache.get("b") is None and all([await cache.get(k) for k in "acd"])
    assert await cache.put("big", sized(85))  # 30 + 85 > 100 bytes: the least recently used go until it fits
    assert [k for k in "acd" if await cache.get(k)] == ["d"] and await cache.get("big")
    assert not await cache.put("huge", sized(91))  # over the per-entry bound: refused, nothing evicted
    assert await cache.get("d") and await cache.get("big")
    assert await cache.put("d", sized(15))  # replaced: its bytes counted once
    assert (cache.stats.entries, cache.stats.bytes_stored) == (2, 100)
    assert (cache.stats.evictions, cache.stats.too_big) == (3, 1)  # b, then a and c
    clock.now += 1e6  # expired: the room made for a new entry counts what it drops as expired, not evicted
    assert await cache.put("e", sized(50)) and (cache.stats.evictions, cache.stats.expirations) == (3, 1)
