"""Upstream 429s over real sockets: only a 429 about the account (its body's type or code, a ``Retry-After``, an
``x-ratelimit-remaining-*: 0``) rests a key or a deployment, one request rests at most one of them, and a 429
about the request itself (OpenAI's "Request too large … tokens per min") goes back to its client and nowhere else,
so one client's oversized request cannot take a model away from everyone.

The upstreams are scripted (tests/support/recorder.py): each request is recorded as it arrived (its key
included) and answered with the bytes the test chooses."""

import json

import httpx
import trio

from tests.conftest import start_relay, start_sim
from tests.relay.functional.test_deployments import AlwaysRateLimited
from tests.support.recorder import Recorded, serve_recorder

MODEL = "kimi-k2"
BIG, SMALL = "sk-client-big", "sk-client-small"
KEYS = {"KEY_A1": "sk-a1", "KEY_A2": "sk-a2", "KEY_B": "sk-b"}
TOO_LARGE = {  # OpenAI's answer to a request larger than the account's tokens-per-minute limit
    "error": {
        "message": "Request too large for gpt-4o in organization org-x on tokens per min (TPM): Limit 30000, "
        "Requested 36278. The input or output tokens must be reduced in order to run successfully.",
        "type": "tokens",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}
COMPLETION = {"id": "c", "object": "chat.completion", "model": MODEL, "choices": [{"index": 0, "finish_reason": "stop",
              "message": {"role": "assistant", "content": "hi"}}]}  # fmt: skip


def answer(status: int, body: bytes, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return (f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n{head}"
            "\r\n").encode() + body  # fmt: skip


def tokens_per_minute(request: Recorded) -> bytes:
    """A provider with a 30,000 tokens-per-minute account: a request larger than that is refused, others served."""
    if b"HUGE" in request.body:
        return answer(429, json.dumps(TOO_LARGE).encode(), "x-ratelimit-limit-tokens: 30000",
                      "x-ratelimit-remaining-tokens: 30000", "x-ratelimit-remaining-requests: 499")  # fmt: skip
    return answer(200, json.dumps(COMPLETION).encode(), "x-ratelimit-remaining-tokens: 29990")


def keys_of(requests: list[Recorded]) -> list[bytes]:
    return [dict(r.headers)[b"authorization"].removeprefix(b"Bearer ") for r in requests]


async def relay_for(nursery, monkeypatch, *tables: dict, **settings) -> str:
    for name, key in KEYS.items():
        monkeypatch.setenv(name, key)
    return await start_relay(nursery, "http://flat-upstream.invalid/v1", upstreams=list(tables),
                             api_keys=f"{BIG},{SMALL}", **settings)  # fmt: skip


def deployment(name: str, url: str, **extra) -> dict:
    return {"name": name, "base_url": url, "models": [MODEL], **extra}


async def chat(client: httpx.AsyncClient, root: str, client_key: str, content: str = "hi") -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}]}
    with trio.fail_after(5):
        return await client.post(root + "/v1/chat/completions", json=body,
                                 headers={"authorization": f"Bearer {client_key}"})  # fmt: skip


async def resting(client: httpx.AsyncClient, root: str) -> dict[str, float]:
    return {name: s["resting_s"] for name, s in (await client.get(root + "/readyz")).json()["upstreams"].items()}


async def test_an_oversized_request_gets_its_429_and_takes_nothing_from_other_clients(nursery, monkeypatch):
    provider = await nursery.start(serve_recorder)
    url = provider.url + "/v1"
    root = await relay_for(nursery, monkeypatch, deployment("a", url, key_envs=["KEY_A1", "KEY_A2"]),
                           deployment("b", url, key_env="KEY_B"), retries=0)  # fmt: skip
    provider.reply = tokens_per_minute
    async with httpx.AsyncClient(timeout=10) as client:
        big = await chat(client, root, BIG, "HUGE " * 10)
        assert big.status_code == 429 and big.json() == TOO_LARGE  # the provider's answer, as it came
        assert len(provider.requests) == 1  # the same request fails the same way anywhere: sent once
        answers = [await chat(client, root, SMALL) for _ in range(8)]
        rests = await resting(client, root)
    assert [a.status_code for a in answers] == [200] * 8
    assert len(provider.requests) == 9  # every one of them reached the upstream
    assert set(keys_of(provider.requests[1:])) == {b"sk-a1", b"sk-a2", b"sk-b"}  # no key and no deployment rests
    assert rests == {"a": 0.0, "b": 0.0}


async def test_one_request_rests_at_most_one_key_or_deployment(nursery, monkeypatch):
    limited = await nursery.start(AlwaysRateLimited().serve)  # Moonshot's rate_limit_reached_error, Retry-After: 30
    root = await relay_for(nursery, monkeypatch, deployment("a", limited.url, key_env="KEY_A1", weight=100),
                           deployment("b", limited.url, key_env="KEY_B"), retries=0)  # fmt: skip
    async with httpx.AsyncClient(timeout=10) as client:
        first = await chat(client, root, SMALL)
        assert first.status_code == 429 and limited.requests == 2  # a, then b: each answered for the account
        after_first = await resting(client, root)
        second = await chat(client, root, SMALL)  # b still takes requests: this one rests it
        assert second.status_code == 429 and limited.requests == 3
        third = await chat(client, root, SMALL)  # now both rest: refused without calling
        rests = await resting(client, root)
    assert after_first["b"] == 0.0 and 25 < after_first["a"] <= 30
    assert all(25 < r <= 30 for r in rests.values())
    assert third.status_code == 429 and third.json()["error"]["code"] == "upstream_rate_limited"
    assert limited.requests == 3


async def test_a_429_that_says_nothing_about_the_account_rests_nothing(nursery, monkeypatch):
    bare = await nursery.start(serve_recorder)
    bare.reply = lambda _: b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 17\r\n\r\nToo Many Requests"
    backup = await start_sim(nursery)
    root = await relay_for(nursery, monkeypatch, deployment("bare", bare.url + "/v1", key_env="KEY_A1", weight=100),
                           deployment("backup", backup.url), retries=0)  # fmt: skip
    async with httpx.AsyncClient(timeout=10) as client:
        served = [(await chat(client, root, SMALL)).headers["x-moonrelay-upstream"] for _ in range(2)]
        rests = await resting(client, root)
    assert served == ["backup", "backup"]  # moved on: the 429 said the request was not processed there
    assert len(bare.requests) == 2 and rests["bare"] == 0.0  # but nothing rests on its word


async def test_an_oversized_request_is_not_sent_to_every_key_of_a_pool(nursery, monkeypatch):
    provider = await nursery.start(serve_recorder)
    provider.reply = tokens_per_minute
    root = await relay_for(nursery, monkeypatch, {"name": "pool", "base_url": provider.url + "/v1", "default": True,
                           "key_envs": ["KEY_A1", "KEY_A2"]})  # fmt: skip
    async with httpx.AsyncClient(timeout=10) as client:
        big = await chat(client, root, BIG, "HUGE")
        small = [await chat(client, root, SMALL) for _ in range(2)]
    assert big.status_code == 429 and [s.status_code for s in small] == [200, 200]
    assert keys_of(provider.requests) == [b"sk-a1", b"sk-a2", b"sk-a1"]  # round robin, nobody resting
