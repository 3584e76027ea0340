"""The relay's CPU per chunk on each route a stream may take: chat completions relayed, OpenAI Responses and
Anthropic Messages each translated onto a chat upstream and relayed natively; the same sim, the same answers, at
token rate.

    python -m bench.protocols                         # 3 rounds of 300 streams x 100 chunks per path, 50 ms apart
    python -m bench.protocols --streams 100 --rounds 1 --out results/protocols-<date>

Each round starts a fresh one-worker relay per path (``--upstream-api chat`` or ``responses``) in front of one sim
(a subprocess each, as in production), sends a few warm-up streams, then ``--streams`` streams, ``--concurrency``
at a time, each read whole by a client in this process; the relay's process CPU (user + system, psutil) over the
streams divided by the chunks the sim sent is its CPU per chunk (per upstream event). The paths run in turn in each
round, so a busy machine weighs on all of them alike; the median of the rounds is reported, and the ratio to chat.
The translator alone is measured by ``bench.translation``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import psutil
import trio

from bench.cancel import start_process
from bench.micro import arguments, python, report

CHAT = {"messages": [{"role": "user", "content": "Tell me about the moon"}]}
ASK = {"input": "Tell me about the moon"}
MESSAGE = {"max_tokens": 0, "messages": [{"role": "user", "content": "Tell me about the moon"}]}
PATHS = {  # name: (the relay's --upstream-api, the route, the body, what a whole stream ends with)
    "chat": ("chat", "/v1/chat/completions", CHAT, b"data: [DONE]\n\n"),
    "responses translated": ("chat", "/v1/responses", ASK, b"response.completed"),
    "responses native": ("responses", "/v1/responses", ASK, b"response.completed"),
    "messages translated": ("chat", "/v1/messages", MESSAGE, b"message_stop"),
    "messages native": ("anthropic", "/v1/messages", MESSAGE, b"message_stop"),
}


async def _streams(root: str, route: str, body: dict, end: bytes, count: int, concurrency: int) -> None:
    """``count`` streams, ``concurrency`` at a time, each read whole (checked: its last event is ``end``'s)."""
    limit = trio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=concurrency)) as client:

        async def one() -> None:
            async with limit, client.stream("POST", root + route, json={**body, "stream": True}) as resp:
                assert resp.status_code == 200, resp.status_code
                tail = b""
                async for data in resp.aiter_raw():
                    tail = (tail + data)[-4096:]
                assert end in tail[tail.rstrip(b"\n").rfind(b"\n\n") :], tail[-300:]

        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(one)


async def _path(sim_url: str, api: str, route: str, body: dict, end: bytes, args: Any, workdir: Path) -> float:
    """One relay for one path: its CPU µs per chunk over ``args.streams`` streams."""
    async with trio.open_nursery() as nursery:
        # the sim serves Messages at /anthropic/v1/messages, below an Anthropic base URL (as Moonshot does)
        upstream = sim_url.removesuffix("/v1") + "/anthropic" if api == "anthropic" else sim_url
        argv = [sys.executable, "-m", "proxy", "--bind", "127.0.0.1:0", "--upstream", upstream, "--upstream-api", api,
                "--access-log", "off"]  # fmt: skip
        relay, root = await start_process(nursery, argv, b"moonrelay listening on ", workdir / f"relay-{api}.log")
        body = {"model": "moonshot-v1-8k", **body}
        if "max_tokens" in body:  # Messages requires it, and the sim answers that many tokens: the same as --chunks
            body["max_tokens"] = args.chunks
        await _streams(root, route, body, end, 10, 10)  # warm: imports, pools, caches
        proc = psutil.Process(relay.pid)
        before = proc.cpu_times()
        await _streams(root, route, body, end, args.streams, args.concurrency)
        after = proc.cpu_times()
        nursery.cancel_scope.cancel()
    cpu_s = (after.user - before.user) + (after.system - before.system)
    return cpu_s * 1e6 / (args.streams * args.chunks)


async def measure(args: Any) -> dict[str, list[float]]:
    runs: dict[str, list[float]] = {name: [] for name in PATHS}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        async with trio.open_nursery() as nursery:
            sim_argv = [sys.executable, "-m", "loadtest.sim", "--bind", "127.0.0.1:0", "--ttft", "0.05",
                        "--interval", str(args.interval), "--chunks", str(args.chunks)]  # fmt: skip
            _, sim_url = await start_process(nursery, sim_argv, b"sim listening on ", workdir / "sim.log")
            for _ in range(args.rounds):
                for name, (api, route, body, end) in PATHS.items():
                    runs[name].append(await _path(sim_url, api, route, body, end, args, workdir))
            nursery.cancel_scope.cancel()
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__ or "")
    parser.set_defaults(rounds=3)
    parser.add_argument("--streams", type=int, default=300, help="streams per path and round (default 300)")
    parser.add_argument("--concurrency", type=int, default=100, help="streams open at once (default 100)")
    parser.add_argument("--chunks", type=int, default=100, help="content chunks per stream (default 100)")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between chunks (default 0.05)")
    args = parser.parse_args(argv)
    runs = trio.run(measure, args)
    chat = statistics.median(runs["chat"])
    table = ["| path | relay CPU µs per chunk (median) | vs chat | rounds |", "|---|---:|---:|---|"]
    rows = []
    for name, values in runs.items():
        median = statistics.median(values)
        rounds = ", ".join(f"{v:.1f}" for v in values)
        ratio = f"{median / chat:.2f}×" if chat > 0 else "–"  # a tiny run can read 0 CPU (psutil's 10 ms ticks)
        table.append(f"| {name} | {median:.1f} | {ratio} | {rounds} |")
        rows.append({"path": name, "cpu_us_per_chunk": median, "rounds": values})
    facts = (f"{python()}; {psutil.cpu_count()} CPUs; {args.streams} streams x {args.chunks} chunks per path and "
             f"round, {args.concurrency} at a time, {args.interval * 1000:.0f} ms apart; other jobs may share the "
             "machine: compare the ratios of one run.")  # fmt: skip
    report("The relay's CPU per chunk by route", "bench.protocols", argv, facts, table, rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
