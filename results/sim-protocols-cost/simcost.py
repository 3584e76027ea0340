"""The simulated upstream's own CPU per streamed chunk, route by route: chat completions, Anthropic Messages and
OpenAI Responses (text, and tool calls), against one sim process, the variants alternating within each round.

    flock /tmp/moonrelay-measure.lock .venv/bin/python results/sim-protocols-cost/simcost.py \
        [--concurrency 200] [--requests 1000] [--chunks 50] [--rounds 3] [--variants chat,messages,...] [--pure]
        [--base-root DIR]

``--base-root DIR``: a second sim from another checkout (``git archive main loadtest wire | tar -x -C DIR``)
serves the variants named ``NAME@base`` (e.g. ``chat@base``), alternating with this checkout's, so a change to the
sim is measured against the code before it in the same run.

``--pure``: no sockets; the protocol's own work alone, in this process: building the answer from the request
(``route.reply``: plan, content, every event's bytes) and rendering every timed send as the send loop does
(``bytes.join`` around a stamp), per chunk, best of ``--rounds`` (``time.process_time``). What the sockets, the
timer and the HTTP framing add is the same for every route; the end-to-end run shows it.

CPU per chunk = the sim process's user+system seconds while one variant's requests run / (requests x chunks): a
"chunk" is one timed send (one token's event, or one piece of a tool call's arguments), so the routes compare at
the same token rate; per-request work (parsing, building the answer, the extra events a protocol sends around
the content) is included. The client is a bare trio socket reader (no HTTP parser, no SSE parsing): it writes the
request, reads until the chunked terminator and closes, so it costs the sim nothing a real client would not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

import psutil
import trio

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MESSAGES = [{"role": "user", "content": "Tell me about the far side of the moon, briefly."}]
TOOL = {"name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                       "required": ["city", "days"]}}


def variants(chunks: int) -> dict[str, tuple[str, dict]]:
    """name -> (path, body). Tool variants stream their arguments in ``chunks`` pieces (``sim_tool_pieces``)."""
    chat = {"model": "moonshot-v1-8k", "messages": MESSAGES, "stream": True, "sim_chunks": chunks}
    messages = {"model": "kimi-k2", "max_tokens": 4096, "messages": MESSAGES, "stream": True, "sim_chunks": chunks}
    responses = {"model": "gpt-sim", "input": MESSAGES[0]["content"], "stream": True, "sim_chunks": chunks}
    forced = {"sim_tool_pieces": chunks}
    return {
        "chat": ("/v1/chat/completions", chat),
        "messages": ("/v1/messages", messages),
        "responses": ("/v1/responses", responses),
        "chat-tool": ("/v1/chat/completions", {**chat, **forced, "tools": [{"type": "function", "function": TOOL}],
                                               "tool_choice": "required"}),
        "messages-tool": ("/v1/messages", {**messages, **forced, "tools": [
            {"name": TOOL["name"], "description": TOOL["description"], "input_schema": TOOL["parameters"]}],
            "tool_choice": {"type": "any"}}),
        "responses-tool": ("/v1/responses", {**responses, **forced, "tools": [{"type": "function", **TOOL}],
                                             "tool_choice": "required"}),
    }


async def one(host: str, port: int, request: bytes) -> int:
    """One streaming request; returns the body bytes read (roughly: everything after the head)."""
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(request)
        tail = b""
        total = 0
        while True:
            data = await stream.receive_some(65536)
            if not data:
                raise RuntimeError("connection closed before the end of the stream")
            total += len(data)
            tail = (tail + data)[-7:]
            if tail.endswith(b"\r\n0\r\n\r\n"[-7:]):
                return total


async def load(host: str, port: int, request: bytes, concurrency: int, requests: int) -> int:
    left = requests
    total = 0

    async def worker() -> None:
        nonlocal left, total
        while left > 0:
            left -= 1
            size = await one(host, port, request)
            total += size

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return total


def pure(table: dict, names: list[str], chunks: int, rounds: int, requests: int) -> None:
    """Per chunk: ``route.reply`` + every send's render, best of ``rounds`` runs of ``requests`` requests."""
    import random
    import time

    from loadtest.sim import SimConfig, make_plan
    from loadtest.sim._server import ROUTES
    from loadtest.sim._stream import batches

    class Sim:
        rng = random.Random(1)

    config = SimConfig(chunks=chunks)
    print(f"| variant | µs/chunk, best of {rounds} | vs {names[0]} | events per response |")
    print("|---|---:|---:|---:|")
    base = None
    for name in names:
        path, body = table[name]
        route = ROUTES[path]
        best = float("inf")
        for _ in range(rounds):
            t0 = time.process_time()
            for _ in range(requests):
                plan = make_plan(config, body, {}, route.LENGTH_KEYS)
                reply = route.reply(Sim, body, plan)
                for parts in batches(reply):
                    (b"%d" % time.monotonic_ns()).join(parts)
            best = min(best, (time.process_time() - t0) / (requests * chunks) * 1e6)
        base = base or best
        print(f"| {name} | {best:.2f} | {best / base:.2f} | {len(reply.events)} |", flush=True)


# The same work for chat as the sim before the protocol routes did it per request (plan, content, every chunk's
# bytes built with json.dumps, each rendered around its stamp), run in the other checkout by --pure --base-root.
BASE_PURE = """
import json, sys, time
from loadtest import simcontent as sc
from loadtest.sim import SimConfig, make_plan
body, chunks, rounds, requests = json.loads(sys.argv[1])
config = SimConfig(chunks=chunks)
best = float("inf")
for _ in range(rounds):
    t0 = time.process_time()
    for _ in range(requests):
        plan = make_plan(config, body, {})
        digest = sc.request_hash(body["model"], body["messages"])
        words = sc.tokens(digest, plan.chunks * plan.tokens_per_chunk)
        events = sc.stream_events(completion_id="chatcmpl-x", created=1, model=body["model"], words=words,
                                  chunks=plan.chunks, tokens_per_chunk=plan.tokens_per_chunk,
                                  prompt=sc.prompt_tokens(body["messages"]), include_usage=False)
        for event in events:
            event.render(time.monotonic_ns())
    best = min(best, (time.process_time() - t0) / (requests * chunks) * 1e6)
print(best)
"""


def pure_base(root: str, body: dict, chunks: int, rounds: int, requests: int) -> float:
    args = [sys.executable, "-c", BASE_PURE, json.dumps([body, chunks, rounds, requests])]
    return float(subprocess.run(args, cwd=root, check=True, capture_output=True, text=True).stdout)


def start_sim(chunks: int, root: str = ROOT) -> tuple[subprocess.Popen, str, int]:
    args = [sys.executable, "-m", "loadtest.sim", "--bind", "127.0.0.1:0", "--ttft", "0.05",
            "--interval", "0.01", "--chunks", str(chunks)]
    proc = subprocess.Popen(args, cwd=root, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if "sim listening on " in line:
            url = line.split("sim listening on ", 1)[1].split()[0]
            host, port = url.removeprefix("http://").removesuffix("/v1").rsplit(":", 1)
            return proc, host, int(port)
    raise SystemExit("the sim did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--chunks", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default=",".join(variants(1)))
    parser.add_argument("--pure", action="store_true", help="the protocol's own work alone, no sockets")
    parser.add_argument("--base-root", help="a checkout whose sim serves the NAME@base variants")
    args = parser.parse_args()
    table = variants(args.chunks)
    names = args.variants.split(",")
    if args.pure:
        if args.base_root:
            best = pure_base(args.base_root, table["chat"][1], args.chunks, args.rounds, args.requests)
            print(f"chat@base (the sim before, {args.base_root}): {best:.2f} µs/chunk, best of {args.rounds}\n")
        return pure(table, [n for n in names if "@" not in n], args.chunks, args.rounds, args.requests)
    sims = {"": start_sim(args.chunks)}
    if args.base_root:
        sims["@base"] = start_sim(args.chunks, args.base_root)
    results: dict[str, list[float]] = {name: [] for name in names}
    sizes: dict[str, int] = {}
    try:
        for _ in range(args.rounds):
            for name in names:
                variant, _, which = name.partition("@")
                sim, host, port = sims["@" + which if which else ""]
                proc = psutil.Process(sim.pid)
                path, body = table[variant]
                payload = json.dumps(body).encode()
                request = (f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
                           f"x-api-key: k\r\ncontent-length: {len(payload)}\r\n\r\n").encode() + payload
                before = proc.cpu_times()
                total = trio.run(load, host, port, request, args.concurrency, args.requests)
                after = proc.cpu_times()
                cpu = (after.user + after.system) - (before.user + before.system)
                per_chunk_us = cpu / (args.requests * args.chunks) * 1e6
                results[name].append(per_chunk_us)
                sizes[name] = total // args.requests
                print(f"{name}: {per_chunk_us:.2f} us/chunk ({sizes[name]} bytes per response)", flush=True)
    finally:
        for sim, _, _ in sims.values():
            sim.terminate()
            sim.wait()
    base = statistics.median(results[names[0]])
    print(f"\npython {platform.python_version()}, {os.cpu_count()} cores; concurrency {args.concurrency}, "
          f"{args.requests} requests x {args.chunks} chunks per variant, {args.rounds} rounds")
    print(f"| variant | µs/chunk per round | median | vs {names[0]} | bytes per response |")
    print("|---|---|---:|---:|---:|")
    for name in names:
        values = results[name]
        median = statistics.median(values)
        rounds = ", ".join(f"{v:.2f}" for v in values)
        print(f"| {name} | {rounds} | {median:.2f} | {median / base:.2f} | {sizes[name]} |")


if __name__ == "__main__":
    main()
