"""include_usage: the request rewrite and the usage-chunk filter (pure, over every way a stream can be
cut into reads), then the relay asking the sim for usage and cutting it out for clients that did not."""

import json

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtest import simcontent
from proxy.protocol import EventSplitter, UsageStripper, asked_for_usage, event_data, usage_only, with_usage
from tests.conftest import start_relay, start_sim, wait_lines

CHAT = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "Tell me about the moon"}]}


def sim_stream(include_usage: bool, sep: bytes = b"\n\n") -> tuple[bytes, bytes]:
    """A deterministic stream as the sim sends it, and its usage event's data (b"" without include_usage)."""
    events = simcontent.stream_events(
        completion_id="chatcmpl-1", created=1, model="m", words=simcontent.tokens(b"x", 3), chunks=3,
        tokens_per_chunk=1, prompt=7, include_usage=include_usage,
    )  # fmt: skip
    rendered = [e.render(k) for k, e in enumerate(events)] + [simcontent.DONE_EVENT]
    usage = event_data(rendered[-2].rstrip(b"\n")) if include_usage else b""
    return b"".join(r.replace(b"\n\n", sep) for r in rendered), usage


def strip_all(pieces: list[bytes]) -> tuple[bytes, UsageStripper]:
    stripper = UsageStripper()
    out = b"".join(stripper.feed(p) for p in pieces) + stripper.end()
    return out, stripper


# -- pure ---------------------------------------------------------------------------------------------


def test_request_rewrite_keeps_other_stream_options():
    assert not asked_for_usage({"stream": True}) and not asked_for_usage({"stream_options": {"include_usage": False}})
    assert asked_for_usage({"stream_options": {"include_usage": True}})
    body = json.loads(with_usage({"model": "m", "stream": True, "stream_options": {"other": 1}}))
    assert body == {"model": "m", "stream": True, "stream_options": {"other": 1, "include_usage": True}}
    assert json.loads(with_usage({"model": "月"}))["stream_options"] == {"include_usage": True}
    assert "月".encode() in with_usage({"model": "月"})  # not \\u-escaped: the same bytes a client would send


def test_usage_only_is_the_openai_usage_chunk_and_nothing_else():
    assert usage_only(b'{"id":"x","choices":[],"usage":{"prompt_tokens":1}}')
    assert not usage_only(b'{"choices":[{"index":0,"usage":{"prompt_tokens":1}}]}')  # Moonshot's final chunk
    assert not usage_only(b'{"choices":[],"usage":null}') and not usage_only(b'{"choices":[]}')
    assert not usage_only(b'{"usage": {not json')


@pytest.mark.parametrize("sep", [b"\n\n", b"\r\n\r\n"])
def test_the_usage_chunk_is_cut_wherever_the_reads_split_the_stream(sep):
    with_chunk, usage = sim_stream(include_usage=True, sep=sep)
    event = b"data: " + usage + sep
    expected = with_chunk.replace(event, b"")
    assert expected != with_chunk and expected.endswith(b"data: [DONE]" + sep)
    for cut in range(len(with_chunk) + 1):
        out, stripper = strip_all([with_chunk[:cut], with_chunk[cut:]])
        assert out == expected, cut
        assert json.loads(stripper.usage)["usage"]["completion_tokens"] == 3


@given(st.lists(st.integers(min_value=0, max_value=2000), max_size=12))
def test_any_number_of_reads_gives_the_same_bytes(cuts):
    with_chunk, usage = sim_stream(include_usage=True)
    points = sorted({min(c, len(with_chunk)) for c in cuts})
    pieces = [with_chunk[a:b] for a, b in zip([0, *points], [*points, len(with_chunk)], strict=True)]
    out, _ = strip_all(pieces)
    assert out == with_chunk.replace(b"data: " + usage + b"\n\n", b"")


def test_a_stream_without_the_chunk_passes_unchanged_and_partial_events_are_held():
    plain, _ = sim_stream(include_usage=False)
    stripper = UsageStripper()
    half = plain.index(b"\n\n") + 5
    assert stripper.feed(plain[:half]) == plain[: half - 3]  # the next event's first bytes wait for its end
    assert stripper.feed(plain[half:]) + stripper.end() == plain[half - 3 :]
    assert stripper.usage is None
    tail = b'data: {"id":"x","choices":[{"delta":{}}]}'  # the body ends without the blank line: passed on as sent
    assert strip_all([plain + tail])[0] == plain + tail
    usage_tail = b'data: {"choices":[],"usage":{"total_tokens":3}}'
    out, stripper = strip_all([plain, usage_tail])
    assert out == plain and stripper.usage == usage_tail[6:]


def test_a_malformed_event_stops_the_filter_after_what_came_before():
    plain, _ = sim_stream(include_usage=False)
    first = plain.index(b"\n\n") + 2
    out, stripper = strip_all([plain[:first] + b"data: {not json\n\n" + plain[first:]])
    assert stripper.malformed and out == plain[:first]


# -- the relay ----------------------------------------------------------------------------------------


async def relay_asking_usage(nursery, include_usage: bool = True):
    sim = await start_sim(nursery)
    table = {"name": "moon", "base_url": sim.url, "default": True, "include_usage": include_usage}
    return sim, await start_relay(nursery, sim.url, upstreams=(table,))


async def test_usage_is_asked_for_and_cut_out_for_a_client_that_did_not_ask(nursery, access_lines):
    sim, root = await relay_asking_usage(nursery)
    body = {**CHAT, "stream": True, "sim_deterministic": True}
    async with httpx.AsyncClient(timeout=10) as client:
        asked = {**body, "stream_options": {"include_usage": True}}
        direct = await client.post(sim.url + "/chat/completions", json=asked)
        relayed = await client.post(root + "/v1/chat/completions", json=body)
    assert sim.recent[-1]["body"]["stream_options"] == {"include_usage": True}
    events = EventSplitter().feed(direct.content)
    usage_event = next(e for e in events if usage_only(event_data(e)))
    assert relayed.status_code == 200 and relayed.content == direct.content.replace(usage_event + b"\n\n", b"")
    assert b'"usage"' not in relayed.content
    usage = json.loads(event_data(usage_event))["usage"]
    (line,) = await wait_lines(access_lines, 1)  # the log knows the usage the client was not sent
    assert (line["prompt_tokens"], line["completion_tokens"]) == (usage["prompt_tokens"], usage["completion_tokens"])


async def test_a_client_that_asked_gets_the_stream_untouched(nursery):
    sim, root = await relay_asking_usage(nursery)
    body = {**CHAT, "stream": True, "sim_deterministic": True, "stream_options": {"include_usage": True}}
    async with httpx.AsyncClient(timeout=10) as client:
        direct = await client.post(sim.url + "/chat/completions", json=body)
        relayed = await client.post(root + "/v1/chat/completions", json=body)
        plain = await client.post(root + "/v1/chat/completions", json={**CHAT, "sim_deterministic": True})
    assert relayed.content == direct.content and b'"choices":[],"usage"' in relayed.content
    assert plain.json()["usage"]["completion_tokens"] == 5  # not streamed: nothing asked, nothing cut
    assert "stream_options" not in sim.recent[-1]["body"]


async def test_ndjson_lines_lose_the_usage_chunk_too(nursery, access_lines):
    sim, root = await relay_asking_usage(nursery)
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.get(root + "/chat/completions", params={"content": "hi"})
    objs = [json.loads(x) for x in resp.text.splitlines()]
    assert resp.status_code == 200 and len(objs) == 6 and all(o["choices"] for o in objs)
    assert objs[-1]["choices"][0]["finish_reason"] == "stop"
    assert sim.recent[-1]["body"]["stream_options"] == {"include_usage": True}
    (line,) = await wait_lines(access_lines, 1)
    assert line["completion_tokens"] == 5 and line["prompt_tokens"] > 0


async def test_without_include_usage_the_request_is_forwarded_as_sent(nursery, access_lines):
    sim, root = await relay_asking_usage(nursery, include_usage=False)
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.post(root + "/v1/chat/completions", json={**CHAT, "stream": True})
    assert resp.status_code == 200 and "stream_options" not in sim.recent[-1]["body"]
    (line,) = await wait_lines(access_lines, 1)
    assert line["completion_tokens"] == 5  # Moonshot's usage inside the final choice
