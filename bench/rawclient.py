"""A reference streaming client: trio + h11 and nothing else, to measure the load generator's own bias
(issue 16, item 4).

Each of N concurrent sessions opens its own connection, sends one streaming chat request and records its TTFC
twice: from the instant all N were due (``ttfc_ns``: the origin ``loadtest`` counts from, a closed loop's intended
start, so that each client's own start-up queue is counted alike) and from just before its own connect
(``ttfc_own_ns``: what this client saw of its own session, its start-up queue left out). It parses no SSE,
keeps no per-chunk data and drains the rest of the body, so whatever the project's ``loadtest`` reads later
than this client is the load generator's own cost.

``python -m bench.rawclient --url http://127.0.0.1:PORT/v1 -c 500`` prints one JSON object: every session's
TTFC in ns both ways (None: the session failed), the process's CPU seconds and the wall time.
"""

from __future__ import annotations

import argparse
import json
import time
from urllib.parse import urlsplit

import h11
import trio

BODY = json.dumps({"model": "moonshot-v1-8k", "stream": True,
                   "messages": [{"role": "user", "content": "Tell me about the far side of the moon."}]}).encode()
RECEIVE_BYTES = 65536


async def session(host: str, port: int, path: str, api_key: str | None = None) -> tuple[int, int]:
    """One streaming request; returns the ``time.monotonic_ns()`` of its start and of its first body bytes.
    Raises on any failure."""
    headers = [("Host", f"{host}:{port}"), ("Content-Type", "application/json"),
               ("Content-Length", str(len(BODY))), ("Accept", "text/event-stream")]
    if api_key:
        headers.append(("Authorization", f"Bearer {api_key}"))
    conn = h11.Connection(h11.CLIENT)
    t0 = time.monotonic_ns()
    first: int | None = None
    async with await trio.open_tcp_stream(host, port) as stream:
        await stream.send_all(conn.send(h11.Request(method="POST", target=path, headers=headers))
                              + conn.send(h11.Data(data=BODY)) + conn.send(h11.EndOfMessage()))
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(RECEIVE_BYTES))
            elif isinstance(event, h11.Response):
                if event.status_code != 200:
                    raise RuntimeError(f"status {event.status_code}")
            elif isinstance(event, h11.Data) and first is None and event.data:
                first = time.monotonic_ns()
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
    if first is None:
        raise RuntimeError("no body")
    return t0, first


async def run_sessions(url: str, n: int, api_key: str | None = None) -> tuple[list[int | None], list[int | None]]:
    """``n`` concurrent sessions; each one's TTFC in ns from the common start and from its own start (None
    where it failed)."""
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    path = u.path.rstrip("/") + "/chat/completions"
    common: list[int | None] = [None] * n
    own: list[int | None] = [None] * n
    due = time.monotonic_ns()

    async def one(i: int) -> None:
        try:
            start, first = await session(host, port, path, api_key)
        except (OSError, trio.BrokenResourceError, h11.ProtocolError, RuntimeError):
            return
        common[i], own[i] = first - due, first - start

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, i)
    return common, own


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.rawclient", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="base URL ending in /v1")
    p.add_argument("-c", "--concurrency", type=int, default=100)
    p.add_argument("--api-key")
    args = p.parse_args(argv)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    ttfc, own = trio.run(run_sessions, args.url, args.concurrency, args.api_key)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    print(json.dumps({"ttfc_ns": ttfc, "ttfc_own_ns": own, "cpu_s": cpu, "wall_s": wall}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
