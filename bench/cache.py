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

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import trio

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


def measure(work: Callable[[], None], rounds: int, per: int) -> float:
    """Median over ``rounds`` of CPU µs per unit (``per`` units a call of ``work``)."""
    work()  # warm
    runs = []
    for _ in range(rounds):
        start = time.process_time_ns()
        work()
        runs.append((time.process_time_ns() - start) / 1000 / per)
    return statistics.median(runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=300, help="chunks per stream (default 300)")
    parser.add_argument("--requests", type=int, default=200, help="requests per round (default 200)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the median is reported (default 5)")
    parser.add_argument("--out", type=Path, help="a folder to write README.md and results.json to")
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
    rows = [{"piece": name, "unit": unit, "us": round(measure(call, args.rounds, per), 3)}
            for name, unit, call, per in work]  # fmt: skip
    lines = ["| piece | CPU µs per | unit |", "|---|---:|---|"] + [
        f"| {r['piece']} | {r['us']:.3f} | {r['unit']} |" for r in rows]  # fmt: skip
    command = "python -m bench.cache " + " ".join(argv if argv is not None else sys.argv[1:])
    facts = (f"{platform.python_implementation()} {platform.python_version()}, {platform.machine()}, {n} requests "
             f"of {chunks} chunks per round ({sum(map(len, pieces))} bytes of SSE, entry {len(blob)} bytes encoded), "
             f"key over a {len(json.dumps(BODY))}-byte body, median of {args.rounds} rounds")  # fmt: skip
    table = "\n".join(lines)
    print(table)
    print(facts)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps({"command": command, "facts": facts, "rows": rows}, indent=1))
        (args.out / "README.md").write_text(f"# Response cache cost\n\n`{command.strip()}`\n\n{facts}\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
