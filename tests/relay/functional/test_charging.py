"""What a client key's tokens windows (tpm, budget) are charged, over real sockets: every route that reports usage,
whatever its size or framing (pass-through JSON of any size, streamed completions and Responses), what a stream
produced when its usage never comes (the client left, the upstream broke or stopped short), and the reserve taken
at admission that bounds how far concurrent requests can take a window past its limit (docs/reference.md, "client
keys with limits")."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import h11
import httpx
import pytest
import trio

import proxy.edge._server
from proxy.limits import LocalStore
from tests.conftest import start_relay
from tests.support.scripted import ScriptedServer, read_request

KEY = "mr-web-0123456789"
OTHER = "mr-other-012345678"
AUTH = {"authorization": f"Bearer {KEY}"}
CHAT = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "hi"}]}
EMBED = {"model": "moonshot-embed", "input": ["the moon", "the sun"]}
FAR = "10000d"  # a budget period whose window cannot end during a test (the next one ends in 2052)


@dataclass
class Answer:
    """What the scripted upstream answers: each part one chunked write; a ``trio.Event`` among them is waited for,
    and ``BREAK`` closes the connection there (the body cut off)."""

    parts: list = field(default_factory=list)
    content_type: str = "application/json"
    status: int = 200


BREAK = object()


class Upstream(ScriptedServer):
    """Answers every request with ``answer(target, body)``; keeps each request's target and body."""

    def __init__(self, answer: Callable[[bytes, bytes], Answer]) -> None:
        self.answer = answer
        self.requests: list[tuple[bytes, bytes]] = []
        self.arrived = trio.Event()  # the first request's whole body is here

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            request = await read_request(conn, stream)
            if request is None:
                return
            target, body = request[0].target, request[1]
            self.requests.append((target, body))
            self.arrived.set()
            answer = self.answer(target, body)
            headers = [("content-type", answer.content_type), ("transfer-encoding", "chunked")]
            try:
                await stream.send_all(conn.send(h11.Response(status_code=answer.status, headers=headers)))
                for part in answer.parts:
                    if part is BREAK:
                        return
                    if isinstance(part, trio.Event):
                        await part.wait()
                        continue
                    await stream.send_all(conn.send(h11.Data(data=part)))
                await stream.send_all(conn.send(h11.EndOfMessage()))
            except trio.BrokenResourceError:  # the relay closed it: its client left
                pass


@pytest.fixture
def still_clock(monkeypatch):
    """The relay's store on a clock that stands still in the middle of a minute: no tpm window ends during a test,
    whatever minute it runs at."""
    monkeypatch.setattr(proxy.edge._server, "build_store", lambda settings: LocalStore(lambda: 1_000_050.0))


def keys_file(tmp_path, text: str) -> str:
    path = tmp_path / "keys"
    path.write_text(text)
    return str(path)


def sse(*events: dict | str) -> bytes:
    return b"".join(b"data: " + (e.encode() if isinstance(e, str) else json.dumps(e).encode()) + b"\n\n"
                    for e in events)  # fmt: skip


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def settled(client: httpx.AsyncClient, root: str) -> None:
    """Until every call but the probe has ended, so its charge is in the windows (``/healthz`` counts calls until
    they are settled)."""
    with trio.fail_after(5):
        while (await client.get(root + "/healthz")).json()["in_flight"] > 1:  # noqa: ASYNC110 - another process's count
            await trio.sleep(0.01)


def used_tokens(response: httpx.Response, tpm: int) -> int:
    """The minute's tokens before this request, from its ``x-ratelimit-remaining-tokens``."""
    return tpm - int(response.headers["x-ratelimit-remaining-tokens"])


# -- every route that reports usage is charged (issue 22 item 5) -----------------------------------------------


def embeddings(size: int, total: int) -> bytes:
    """An embeddings answer of about ``size`` bytes whose usage comes last, as OpenAI and Moonshot send it."""
    vector = ",".join(f"{(i % 997) / 1000 - 0.5:.6f}" for i in range(256))
    items = [f'{{"object":"embedding","index":{i},"embedding":[{vector}]}}' for i in range(max(1, size // 2400))]
    usage = {"prompt_tokens": total, "total_tokens": total}
    return f'{{"object":"list","data":[{",".join(items)}],"model":"e","usage":{json.dumps(usage)}}}'.encode()


@pytest.mark.parametrize("size", [22_000, 431_000])
async def test_a_passthrough_json_answer_of_any_size_is_charged(nursery, tmp_path, still_clock, size):
    body = embeddings(size, 600)
    assert abs(len(body) - size) < size / 5
    upstream = await nursery.start(Upstream(lambda target, _: Answer(pieces(body, 16384))).serve)
    path = keys_file(tmp_path, f"{KEY} tpm=1000")
    root = await start_relay(nursery, upstream.url, passthrough="on", api_keys_file=path)
    async with httpx.AsyncClient(timeout=10) as client:
        statuses = []
        for _ in range(3):
            got = await client.post(root + "/v1/embeddings", json=EMBED, headers=AUTH)
            statuses.append(got.status_code)
            await settled(client, root)
        assert got.json()["error"]["type"] == "tokens"
    assert statuses == [200, 200, 429]  # 600 tokens each: the second takes the minute to 1,200
    assert len(upstream.requests) == 2


def completions(target: bytes, body: bytes) -> Answer:
    """Legacy completions streamed; the usage chunk only when asked for, as OpenAI does."""
    data = json.loads(body)
    chunks = [{"object": "text_completion", "choices": [{"index": 0, "text": w}]} for w in ("the", " moon")]
    if (data.get("stream_options") or {}).get("include_usage"):
        chunks.append({"object": "text_completion", "choices": [],
                       "usage": {"prompt_tokens": 10, "completion_tokens": 140, "total_tokens": 150}})  # fmt: skip
    return Answer([sse(*chunks, "[DONE]")], "text/event-stream")


async def test_streamed_completions_ask_for_usage_and_are_charged(nursery, tmp_path, still_clock):
    upstream = await nursery.start(Upstream(completions).serve)
    path = keys_file(tmp_path, f"{KEY} tpm=100\n{OTHER} tpm=100\n")
    root = await start_relay(nursery, upstream.url, passthrough="on", api_keys_file=path)
    url = root + "/v1/completions"
    asks = {"model": "m", "prompt": "the", "stream": True}
    async with httpx.AsyncClient(timeout=10) as client:
        first = await client.post(url, json=asks, headers=AUTH)
        await settled(client, root)
        over = await client.post(url, json=asks, headers=AUTH)
        own = await client.post(url, json={**asks, "stream_options": {"include_usage": True}},
                                headers={"authorization": f"Bearer {OTHER}"})  # fmt: skip
    assert first.status_code == 200 and first.content.endswith(b"data: [DONE]\n\n")
    assert b'"usage"' not in first.content  # the client did not ask for it: the chunk the relay asked for is cut
    assert json.loads(upstream.requests[0][1])["stream_options"] == {"include_usage": True}
    assert over.status_code == 429 and over.json()["error"]["type"] == "tokens"
    assert own.status_code == 200 and b'"total_tokens": 150' in own.content  # asked for: passed on


def responses(target: bytes, body: bytes) -> Answer:
    """The Responses API: usage only in ``response.completed``, an event that carries the whole output (here
    ~200 KB, so it spans many reads); or, not streamed, one JSON document with input and output tokens."""
    text = "moon " * 40_000
    usage = {"input_tokens": 20, "output_tokens": 130, "total_tokens": 150}
    output = [{"type": "message", "content": [{"type": "output_text", "text": text}]}]
    done = {"id": "resp_1", "object": "response", "status": "completed", "output": output, "usage": usage}
    if not json.loads(body).get("stream"):
        return Answer(pieces(json.dumps({**done, "usage": {"input_tokens": 40, "output_tokens": 110}}).encode(), 8192))
    events = sse(
        {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress", "usage": None}},
        *({"type": "response.output_text.delta", "delta": "moon "} for _ in range(3)),
        {"type": "response.completed", "response": done},
    )
    return Answer(pieces(events, 8192), "text/event-stream")


@pytest.mark.parametrize("stream", [True, False])
async def test_responses_usage_is_charged(nursery, tmp_path, still_clock, access_lines, stream):
    upstream = await nursery.start(Upstream(responses).serve)
    path = keys_file(tmp_path, f"{KEY} tpm=100")
    root = await start_relay(nursery, upstream.url, passthrough="on", api_keys_file=path)
    asks = {"model": "m", "input": "the moon", "stream": stream}
    async with httpx.AsyncClient(timeout=10) as client:
        first = await client.post(root + "/v1/responses", json=asks, headers=AUTH)
        await settled(client, root)
        over = await client.post(root + "/v1/responses", json=asks, headers=AUTH)
    assert first.status_code == 200 and len(first.content) > 200_000
    assert over.status_code == 429 and over.json()["error"]["type"] == "tokens"
    line = next(line for line in access_lines if line["status"] == 200)
    assert (line["prompt_tokens"], line["completion_tokens"]) == ((20, 130) if stream else (40, 110))


# -- what a stream produced is charged when its usage never comes (issue 22 item 7) ----------------------------


CONTENT_EVENTS = 300


def chat_stream(gate: trio.Event, ending: str) -> Callable[[bytes, bytes], Answer]:
    """A chat stream of ``CONTENT_EVENTS`` one-token events; then, after ``gate``, its usage and end (a client
    that leaves never lets it through), or the connection cut, or an end without usage."""

    def answer(target: bytes, body: bytes) -> Answer:
        if not json.loads(body).get("stream"):
            return Answer([b'{"choices":[],"usage":{"total_tokens":1}}'])
        content = sse(*({"choices": [{"index": 0, "delta": {"content": "w"}}]} for _ in range(CONTENT_EVENTS)))
        parts = pieces(content, 4096)
        if ending == "upstream_breaks":
            return Answer([*parts, BREAK], "text/event-stream")
        if ending == "ends_without_usage":
            return Answer([*parts, sse("[DONE]")], "text/event-stream")
        usage = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 5000, "total_tokens": 5005}}
        return Answer([*parts, gate, sse(usage, "[DONE]")], "text/event-stream")

    return answer


async def read_events_and_leave(root: str, body: dict, events: int, key: str = KEY) -> None:
    """A raw socket client that reads ``events`` events of its stream, then closes: one chunk before the end."""
    host, port = root.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"authorization: Bearer {key}\r\ncontent-length: {len(payload)}\r\n\r\n")  # fmt: skip
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(head.encode() + payload)
        seen = b""
        with trio.fail_after(5):
            while seen.count(b'"content"') < events:
                seen += await stream.receive_some(65536)


@pytest.mark.parametrize("ending", ["client_leaves", "upstream_breaks", "ends_without_usage"])
async def test_a_stream_without_its_usage_is_charged_what_it_produced(nursery, tmp_path, still_clock, ending):
    gate = trio.Event()  # never set: the usage chunk never comes
    upstream = await nursery.start(Upstream(chat_stream(gate, ending)).serve)
    path = keys_file(tmp_path, f"{KEY} tpm=100000\n{OTHER} budget=200/{FAR}\n")
    root = await start_relay(nursery, upstream.url, api_keys_file=path)
    url = root + "/v1/chat/completions"
    asks = {**CHAT, "stream": True}
    prompt = math.ceil(len(json.dumps(asks)) / 4) + 8  # the prompt's estimate (its body's bytes / 4), generously
    async with httpx.AsyncClient(timeout=10) as client:
        if ending == "client_leaves":
            await read_events_and_leave(root, asks, CONTENT_EVENTS)
        else:
            cut = await client.post(url, json=asks, headers=AUTH)
            assert cut.status_code == 200 and cut.content.count(b'"content"') == CONTENT_EVENTS
        await settled(client, root)
        after = await client.post(url, json=CHAT, headers=AUTH)
        other = {"authorization": f"Bearer {OTHER}"}
        if ending == "client_leaves":
            await read_events_and_leave(root, asks, CONTENT_EVENTS, OTHER)  # the budget's key, the same way
        else:
            await client.post(url, json=asks, headers=other)
        await settled(client, root)
        spent = await client.post(url, json=CHAT, headers=other)
    charged = used_tokens(after, 100000)
    assert CONTENT_EVENTS <= charged <= CONTENT_EVENTS + prompt, charged  # each event relayed counts one token
    assert spent.status_code == 429 and spent.json()["error"]["code"] == "insufficient_quota"


async def test_a_request_left_before_its_answer_is_charged_its_reserve(nursery, tmp_path, still_clock):
    """Not streamed: nothing is counted before the answer, so a client that leaves is charged what was reserved
    (the prompt's estimate and its ``max_tokens``)."""
    gate = trio.Event()  # never set: the first answer never comes
    answers = iter([Answer([gate]), Answer([b"{}"])])
    upstream = await nursery.start(Upstream(lambda target, body: next(answers)).serve)
    root = await start_relay(nursery, upstream.url, api_keys_file=keys_file(tmp_path, f"{KEY} tpm=100000"))
    asks = {**CHAT, "max_tokens": 500}
    host, port = root.removeprefix("http://").split(":")
    payload = json.dumps(asks).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"authorization: Bearer {KEY}\r\ncontent-length: {len(payload)}\r\n\r\n")  # fmt: skip
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        await stream.send_all(head.encode() + payload)
        with trio.fail_after(5):
            await upstream.arrived.wait()
    async with httpx.AsyncClient(timeout=10) as client:
        await settled(client, root)
        after = await client.post(root + "/v1/chat/completions", json=CHAT, headers=AUTH)
    assert used_tokens(after, 100000) == 500 + math.ceil(len(payload) / 4)


# -- the reserve bounds the overshoot of concurrent requests --------------------------------------------------


async def admitted_of_concurrent(roots: list[str], n: int, asks: dict, gate: trio.Event) -> list[int]:
    """``n`` streaming requests at once, spread over ``roots``; every admitted stream is held open (``gate``) until
    all have their status, so none is settled before the others are checked."""
    statuses: list[int] = []
    async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=n)) as client:

        async def one(i: int, done: trio.Event) -> None:
            url = roots[i % len(roots)] + "/v1/chat/completions"
            async with client.stream("POST", url, json=asks, headers=AUTH) as got:
                statuses.append(got.status_code)
                done.set()
                await got.aread()

        with trio.fail_after(10):
            async with trio.open_nursery() as requests:
                dones = [trio.Event() for _ in range(n)]
                for i, done in enumerate(dones):
                    requests.start_soon(one, i, done)
                for done in dones:
                    await done.wait()
                gate.set()
    return statuses


@pytest.mark.parametrize("shared", [False, True])
async def test_concurrent_requests_overshoot_a_window_by_one_reserve_at_most(nursery, tmp_path, redis_server, shared):
    """Ten requests at once, each reserving 300 + its prompt's estimate, against 1,000 tokens: a request is admitted
    while the window is under its limit, its reserve counted at once, so at most 4 get through (docs/reference.md:
    at most one reserve past the limit); with one Redis behind two relays as with one relay alone."""
    gate = trio.Event()
    held = Upstream(lambda target, body: Answer([gate, sse("[DONE]")], "text/event-stream"))
    upstream = await nursery.start(held.serve)
    path = keys_file(tmp_path, f"{KEY} budget=1000/{FAR}")
    state = {"state": redis_server.url} if shared else {}
    roots = [await start_relay(nursery, upstream.url, api_keys_file=path, **state) for _ in range(2 if shared else 1)]
    asks = {**CHAT, "stream": True, "max_tokens": 300}
    reserve = 300 + math.ceil(len(json.dumps(asks, separators=(",", ":"))) / 4)  # httpx's compact body
    statuses = await admitted_of_concurrent(roots, 10, asks, gate)
    admitted = statuses.count(200)
    assert sorted(set(statuses)) == [200, 429]
    assert 1 <= admitted <= math.ceil(1000 / reserve), statuses  # today: all ten
