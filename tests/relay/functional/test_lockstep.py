"""No buffering, proven: each chunk must reach the client before the upstream sends the next."""

import json
from functools import partial

import httpx
import trio

from proxy.config import Settings
from proxy.edge import serve
from tests.support.lockstep import LockstepUpstream, chunk_event

N = 5


async def _start(nursery):
    upstream = await nursery.start(LockstepUpstream([chunk_event(k) for k in range(N)]).serve)
    root = await nursery.start(partial(serve, Settings(bind="127.0.0.1:0", upstream=upstream.url)))
    return upstream, root


async def test_sse_lockstep(nursery):
    upstream, root = await _start(nursery)
    body = {"model": "m", "messages": [], "stream": True}
    received = b""
    with trio.fail_after(10):
        async with httpx.AsyncClient() as client:
            async with client.stream("POST", root + "/v1/chat/completions", json=body) as resp:
                assert resp.status_code == 200
                assert resp.headers["content-type"].startswith("text/event-stream")
                k = 0
                async for data in resp.aiter_raw():
                    received += data
                    while k < N and received.endswith(upstream.chunk_bytes(k)):
                        upstream.release[k].set()
                        k += 1
    expected = b"".join(upstream.chunk_bytes(k) for k in range(N)) + b"data: [DONE]\n\n"
    assert received == expected


async def test_ndjson_lockstep(nursery):
    upstream, root = await _start(nursery)
    lines = []
    with trio.fail_after(10):
        async with httpx.AsyncClient() as client:
            async with client.stream("GET", root + "/chat/completions", params={"content": "hi"}) as resp:
                assert resp.status_code == 200
                assert resp.headers["content-type"].startswith("application/x-ndjson")
                async for line in resp.aiter_lines():
                    lines.append(json.loads(line))
                    upstream.release[len(lines) - 1].set()
    assert [obj["choices"][0]["delta"]["content"] for obj in lines] == [f"t{k}" for k in range(N)]
    request, sent = upstream.requests[0]
    assert json.loads(sent) == {
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "model": "moonshot-v1-8k",
    }
