"""What the response cache's pieces cost: per request, the key of a chat request and the memory store's put and get;
per chunk of a token-rate stream (300 chunks), recording it as it goes out, encoding and decoding its entry for
Redis, and replaying it. Each in one process, hot, on the same bytes.

    python -m bench.cache                         # 200 requests per round, median of 5 rounds
    python -m bench.cache --requests 50 --rounds 3 --out results/cache-<date>

A microbenchmark of the cache's own work: a miss pays the key (and, when the answer is stored, the recording and
the put); a hit pays the key, the get and the replay instead of the upstream exchange. The relay's whole per-chunk
cost is the token-rate runs' (results/PERF-LOG.md).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import trio

from bench.micro import arguments, cpu_us, python, report
from bench.translation import chat_stream
from proxy.cache import MemoryCache, StreamRecorder, cache_key, decode, encode, replay
from proxy.protocol import Usage

PROMPT = "Summarise the following text in three sentences. " * 40  # ~2 KB, a modest prompt
BODY = {"model": "kimi-k2", "stream": True, "temperature": 0.3, "max_tokens": 1024,
        "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": PROMPT}]}  # fmt: skip
HEADERS = [("content-type", "text/event-stream")]


def record(pieces: list[bytes]) -> None:
    recorder = StreamRecorder(200, HEADERS)
    for piece in pieces:
        recorder.piece(piece)
    assert recorder.finish(usage=Usage(12, len(pieces))) is not None


def repeat(call: Callable[[], object], n: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(n):
            call()

    return run


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__ or "")
    parser.add_argument("--chunks", type=int, default=300, help="chunks per stream (default 300)")
    parser.add_argument("--requests", type=int, default=200, help="requests per round (default 200)")
    args = parser.parse_args(argv)
    n, chunks = args.requests, args.chunks
    pieces = chat_stream(chunks, "text")
    recorder = StreamRecorder(200, HEADERS)
    for piece in pieces:
        recorder.piece(piece)
    entry = recorder.finish(usage=Usage(12, chunks))
    assert entry is not None
    blob = encode(entry)
    cache = MemoryCache(max_entries=n)
    keys = [f"v1:{i}" for i in range(n)]

    async def replay_all() -> None:
        for _ in range(n):
            async for _piece in replay(entry):
                pass

    def put_get(key: str) -> None:
        assert cache.put_now(key, entry) and cache.get_now(key) is entry

    work: list[tuple[str, str, Callable[[], None], int]] = [
        ("key", "request", repeat(lambda: cache_key(BODY), n), n),
        ("memory put + get", "request", lambda: [put_get(key) for key in keys] and None, n),
        ("record", "chunk", repeat(lambda: record(pieces), n), n * chunks),
        ("encode (Redis)", "chunk", repeat(lambda: encode(entry), n), n * chunks),
        ("decode (Redis)", "chunk", repeat(lambda: decode(blob, 1 << 22), n), n * chunks),
        ("replay", "chunk", lambda: trio.run(replay_all), n * chunks),
    ]
    rows = [{"piece": name, "unit": unit, "us": round(cpu_us(call, args.rounds, per), 3)}
            for name, unit, call, per in work]  # fmt: skip
    lines = ["| piece | CPU µs per | unit |", "|---|---:|---|"] + [
        f"| {r['piece']} | {r['us']:.3f} | {r['unit']} |" for r in rows]  # fmt: skip
    facts = (f"{python()}, {n} requests of {chunks} chunks per round ({sum(map(len, pieces))} bytes of SSE, entry "
             f"{len(blob)} bytes encoded), key over a {len(json.dumps(BODY))}-byte body, median of {args.rounds} "
             "rounds")  # fmt: skip
    report("Response cache cost", "bench.cache", argv, facts, lines, rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
