"""A reference streaming client: trio + h11 and nothing else, to measure the load generator's own bias
(issue 16, item 4).

Each of N concurrent sessions opens its own connection, sends one streaming chat request and records its TTFC:
``time.perf_counter_ns()`` from just before the connect to the first response body bytes. It parses no SSE,
keeps no per-chunk data and drains the rest of the body, so whatever the project's ``loadtest`` reads later
than this client is the load generator's own cost.

``python -m bench.rawclient --url http://127.0.0.1:PORT/v1 -c 500`` prints one JSON object: every session's
TTFC in ns (None: the session failed), the process's CPU seconds and the wall time.
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


async def session(host: str, port: int, path: str, api_key: str | None = None) -> int:
    """One streaming request; returns its TTFC in ns. Raises on any failure."""
    headers = [("Host", f"{host}:{port}"), ("Content-Type", "application/json"),
               ("Content-Length", str(len(BODY))), ("Accept", "text/event-stream")]
    if api_key:
        headers.append(("Authorization", f"Bearer {api_key}"))
    conn = h11.Connection(h11.CLIENT)
    t0 = time.perf_counter_ns()
    ttfc: int | None = None
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
            elif isinstance(event, h11.Data) and ttfc is None and event.data:
                ttfc = time.perf_counter_ns() - t0
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
    if ttfc is None:
        raise RuntimeError("no body")
    return ttfc


async def run_sessions(url: str, n: int, api_key: str | None = None) -> list[int | None]:
    """``n`` concurrent sessions; each one's TTFC in ns, or None where it failed."""
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    path = u.path.rstrip("/") + "/chat/completions"
    out: list[int | None] = [None] * n

    async def one(i: int) -> None:
        try:
            out[i] = await session(host, port, path, api_key)
        except (OSError, trio.BrokenResourceError, h11.ProtocolError, RuntimeError):
            out[i] = None

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, i)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.rawclient", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="base URL ending in /v1")
    p.add_argument("-c", "--concurrency", type=int, default=100)
    p.add_argument("--api-key")
    args = p.parse_args(argv)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    ttfc = trio.run(run_sessions, args.url, args.concurrency, args.api_key)
    print(json.dumps({"ttfc_ns": ttfc, "cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - wall0}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
