"""A reference streaming client: trio + h11 and nothing else, to measure the load generator's own bias
(issue 16, item 4).

Each of N concurrent sessions opens its own connection, sends one streaming chat request and records its TTFC
twice: from the instant all N were due (``ttfc_ns``: the origin ``loadtest`` counts from, a closed loop's intended
start, so that each client's own start-up queue is counted alike) and from just before its own connect
(``ttfc_own_ns``: what this client saw of its own session, its start-up queue left out). It parses no SSE,
keeps no per-chunk data and drains the rest of the body, so whatever the project's ``loadtest`` reads later
than this client is the load generator's own cost.

To tell that cost from the upstream's, each session also stamps when its request was written and when the
response headers arrived (``sent_ns``, ``headers_ns``, from the common start), and keeps the bytes of its first
body read: the sim's send stamp of the first chunk is read from them after the run, never on the timed path,
giving the first-chunk read lag (``read_lag_ns``: the client's first-chunk stamp minus the sim's send stamp).

``--start-at UNIX_SECONDS`` starts all N at that instant of the wall clock instead of at once, so that another
client on the same host (``loadtest --shard 0/1 --start-at``) can start with it.

``python -m bench.rawclient --url http://127.0.0.1:PORT/v1 -c 500`` prints one JSON object: every session's
TTFC in ns both ways, its phase stamps and read lag (None: the session failed, or no stamp), the process's CPU
seconds and the wall time.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable
from typing import NamedTuple
from urllib.parse import urlsplit

import h11
import trio

BODY = json.dumps({"model": "moonshot-v1-8k", "stream": True,
                   "messages": [{"role": "user", "content": "Tell me about the far side of the moon."}]}).encode()
RECEIVE_BYTES = 65536
_SIM_NS = re.compile(rb'"sim":\{"ns":(\d+)')


class Phases(NamedTuple):
    """One session's ``time.monotonic_ns()`` stamps, and the bytes of its first body data."""

    start: int
    sent: int
    headers: int
    first: int
    first_data: bytes


def sim_send_ns(data: bytes) -> int | None:
    """The sim's send stamp (``"sim": {"ns": ...}``) of the first event in ``data``, None when there is none."""
    m = _SIM_NS.search(data)
    return int(m.group(1)) if m else None


async def session(host: str, port: int, path: str, api_key: str | None = None) -> Phases:
    """One streaming request and its phase stamps. Raises on any failure."""
    headers = [("Host", f"{host}:{port}"), ("Content-Type", "application/json"),
               ("Content-Length", str(len(BODY))), ("Accept", "text/event-stream")]
    if api_key:
        headers.append(("Authorization", f"Bearer {api_key}"))
    conn = h11.Connection(h11.CLIENT)
    t0 = time.monotonic_ns()
    sent = got_headers = 0
    first: int | None = None
    first_data = b""
    async with await trio.open_tcp_stream(host, port) as stream:
        await stream.send_all(conn.send(h11.Request(method="POST", target=path, headers=headers))
                              + conn.send(h11.Data(data=BODY)) + conn.send(h11.EndOfMessage()))
        sent = time.monotonic_ns()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(RECEIVE_BYTES))
            elif isinstance(event, h11.Response):
                got_headers = time.monotonic_ns()
                if event.status_code != 200:
                    raise RuntimeError(f"status {event.status_code}")
            elif isinstance(event, h11.Data) and first is None and event.data:
                first = time.monotonic_ns()
                first_data = bytes(event.data)
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
    if first is None:
        raise RuntimeError("no body")
    return Phases(t0, sent, got_headers, first, first_data)


async def run_phased(url: str, n: int, api_key: str | None = None,
                     start_ns: int | None = None) -> tuple[int, list[Phases | None]]:
    """``n`` concurrent sessions, due at once at ``start_ns`` (``time.monotonic_ns()``; None: now); the
    instant all were due and each one's phases (None where it failed)."""
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    path = u.path.rstrip("/") + "/chat/completions"
    out: list[Phases | None] = [None] * n
    if start_ns is not None:
        await trio.sleep((start_ns - time.monotonic_ns()) / 1e9)
    due = time.monotonic_ns() if start_ns is None else start_ns

    async def one(i: int) -> None:
        try:
            out[i] = await session(host, port, path, api_key)
        except (OSError, trio.BrokenResourceError, h11.ProtocolError, RuntimeError):
            return

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, i)
    return due, out


async def run_sessions(url: str, n: int, api_key: str | None = None) -> tuple[list[int | None], list[int | None]]:
    """``n`` concurrent sessions; each one's TTFC in ns from the common start and from its own start (None
    where it failed)."""
    due, phases = await run_phased(url, n, api_key)
    return ([None if p is None else p.first - due for p in phases],
            [None if p is None else p.first - p.start for p in phases])


def describe(due: int, phases: list[Phases | None]) -> dict[str, list[int | None]]:
    """The JSON lists: TTFC both ways, the phase stamps from the common start and the first-chunk read lag."""
    def col(f: Callable[[Phases], int | None]) -> list[int | None]:
        return [None if p is None else f(p) for p in phases]

    def lag(p: Phases) -> int | None:
        ns = sim_send_ns(p.first_data)
        return None if ns is None else p.first - ns

    return {"ttfc_ns": col(lambda p: p.first - due), "ttfc_own_ns": col(lambda p: p.first - p.start),
            "sent_ns": col(lambda p: p.sent - due), "headers_ns": col(lambda p: p.headers - due),
            "read_lag_ns": col(lag)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.rawclient", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="base URL ending in /v1")
    p.add_argument("-c", "--concurrency", type=int, default=100)
    p.add_argument("--api-key")
    p.add_argument("--start-at", type=float, metavar="UNIX_SECONDS",
                   help="start when the wall clock reads this (another client on this host started alike)")
    args = p.parse_args(argv)
    start_ns = None
    if args.start_at is not None:
        start_ns = time.monotonic_ns() + round(args.start_at * 1e9) - time.time_ns()
    cpu0 = time.process_time()
    due, phases = trio.run(run_phased, args.url, args.concurrency, args.api_key, start_ns)
    cpu, wall = time.process_time() - cpu0, (time.monotonic_ns() - due) / 1e9  # the wall time from the start
    print(json.dumps({**describe(due, phases), "cpu_s": cpu, "wall_s": wall}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
