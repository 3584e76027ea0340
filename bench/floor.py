"""What one streaming request costs each layer moonrelay stands on, next to moonrelay and nginx.

    python -m bench.floor                      # 3 repeats, 3,000 requests each, ~3 min
    python -m bench.floor --requests 1000 --repeat 1 --out /tmp/floor

Issue 5 asks for a relay within 3x nginx's CPU per relayed chunk while staying on quart-trio and
hypercorn. This measures how much of that budget the frameworks spend before a relay does anything:
the same client sends the same ``POST /v1/chat/completions`` to

- ``h11``, ``hypercorn``, ``quart-trio``: servers that answer it themselves with one SSE event
  (:mod:`bench.floor_servers`): trio + h11, a bare ASGI app under hypercorn, a one-route QuartTrio app.
  hypercorn and quart-trio run stock, without the changes moonrelay makes to them (its connection read
  loop and writes in place of hypercorn's ``TCPServer``, chunks written straight to the socket,
  quart-trio's request handled without its extra tasks, its GC policy): this is the unmodified
  frameworks' floor, not a floor under moonrelay's own stack;
- ``moonrelay`` (one worker) and ``nginx`` (one worker, the bench's config), each relaying the
  simulated upstream's shortest answer (one content event, the usage event, ``[DONE]``).

20 clients; keep-alive (one connection each) and a new connection per request. Figure: the server's
CPU (user + system, psutil, its whole process tree) per request; medians over the repeats.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import trio

from bench.peers import PEERS, Launch, PeerUnavailable, free_port
from bench.procs import serve
from bench.run import machine_facts, raise_fd_limit

FLOOR_KINDS = ("h11", "hypercorn", "quart-trio")
TARGETS = (*FLOOR_KINDS, "moonrelay", "nginx")
MODES = ("keep-alive", "new connection")
CLIENTS = 20
BODY = json.dumps(
    {"model": "moonshot-v1-8k", "stream": True, "messages": [{"role": "user", "content": "Tell me about the moon"}]}
).encode()


def request_bytes(host: str) -> bytes:
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer sk-floor\r\ncontent-length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY


def response_complete(buf: bytes) -> bool:
    """A chunked response read to its terminator (every server here answers chunked)."""
    return buf.endswith(b"\r\n0\r\n\r\n") and b"\r\n\r\n" in buf


async def _exchange(stream: trio.SocketStream, request: bytes) -> None:
    await stream.send_all(request)
    buf = b""
    while not response_complete(buf):
        data = await stream.receive_some(65536)
        if not data:
            raise RuntimeError(f"the server closed the connection mid-response: {buf[:200]!r}")
        buf += data
    if not buf.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"not a 200: {buf[:300]!r}")


async def drive(port: int, requests: int, keep_alive: bool) -> None:
    """``requests`` requests from ``CLIENTS`` concurrent clients."""
    request = request_bytes(f"127.0.0.1:{port}")
    left = requests

    async def client() -> None:
        nonlocal left
        stream = await trio.open_tcp_stream("127.0.0.1", port) if keep_alive else None
        try:
            while left > 0:
                left -= 1
                if stream is not None:
                    await _exchange(stream, request)
                else:
                    async with await trio.open_tcp_stream("127.0.0.1", port) as fresh:
                        await _exchange(fresh, request)
        finally:
            if stream is not None:
                await stream.aclose()

    async with trio.open_nursery() as nursery:
        for _ in range(CLIENTS):
            nursery.start_soon(client)


def _launch(target: str, sim_url: str | None, workdir: Path) -> Launch:
    if target in FLOOR_KINDS:
        port = free_port()
        return Launch(argv=[sys.executable, "-m", "bench.floor_servers", target, str(port)],
                      url=f"http://127.0.0.1:{port}/v1")
    assert sim_url is not None
    return PEERS[target].launch(sim_url, workdir, 1, CLIENTS)


async def measure(target: str, requests: int, rundir: Path) -> dict[str, float]:
    """CPU µs per request of ``target`` in each mode (one repeat)."""
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix=f"floor-{target}-") as tmp:
        async with AsyncExitStack() as stack:
            sim_url = None
            if target not in FLOOR_KINDS:
                sim = await stack.enter_async_context(serve("sim", Launch(
                    argv=[sys.executable, "-m", "loadtest.sim", "--bind", "127.0.0.1:0", "--ttft", "0",
                          "--chunks", "1", "--interval", "0"],
                    url_pattern=rb"listening on (http://\S+)"), rundir / "sim.log"))
                sim_url = sim.url
            server = await stack.enter_async_context(serve(target, _launch(target, sim_url, Path(tmp)),
                                                           rundir / f"{target}.log"))
            port = int(server.url.rsplit(":", 1)[1].split("/")[0])
            await drive(port, 200, keep_alive=True)  # warm up: imports, pools, caches
            for mode in MODES:
                server.tree.mark()
                await drive(port, requests, keep_alive=mode == "keep-alive")
                server.tree.sample()
                out[mode] = 1e6 * server.tree.cpu_s() / requests
    return out


def render(results: dict[str, dict[str, list[float]]], command: str, facts: dict[str, Any],
           versions: dict[str, str]) -> str:
    def med(target: str, mode: str) -> float | None:
        values = results.get(target, {}).get(mode)
        return statistics.median(values) if values else None

    lines = [
        "# Framework floor: CPU per streaming request, layer by layer", "", "```", command, "```", "",
        __doc__.split("\n\n", 2)[2].strip(), "",  # after the title and the usage lines
        "| server | " + " | ".join(f"{m}: CPU µs / request (× nginx)" for m in MODES) + " |",
        "|---|" + "---:|" * len(MODES),
    ]
    for target in TARGETS:
        if target not in results:
            continue
        cells = []
        for mode in MODES:
            value, nginx = med(target, mode), med("nginx", mode)
            cells.append("—" if value is None else f"{value:,.0f}" + (f" ({value / nginx:.1f}×)" if nginx else ""))
        lines.append(f"| {target} | " + " | ".join(cells) + " |")
    lines += ["", "Every repeat (µs per request):", ""]
    for target, by_mode in results.items():
        for mode, values in by_mode.items():
            lines.append(f"- {target}, {mode}: " + ", ".join(f"{v:,.0f}" for v in values))
    lines += ["", "## Machine and versions", ""]
    lines += [f"- {k}: {v}" for k, v in {**facts, **versions}.items()]
    return "\n".join(lines) + "\n"


def versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {name: version(name) for name in ("trio", "h11", "hypercorn", "quart", "quart-trio")}
    for target in ("moonrelay", "nginx"):
        try:
            out[target] = PEERS[target].ensure()
        except PeerUnavailable as exc:
            out[target] = f"unavailable: {exc}"
    return out


async def run_all(args: argparse.Namespace, targets: list[str]) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {}
    for repeat in range(1, args.repeat + 1):
        for target in targets:
            rundir = args.out / "runs" / target / f"r{repeat}"
            try:
                figures = await measure(target, args.requests, rundir)
            except Exception as exc:  # noqa: BLE001 - one failed target must not end the run
                print(f"[floor] {target} repeat {repeat}: {type(exc).__name__}: {exc}", flush=True)
                continue
            print(f"[floor] {target} repeat {repeat}: " + ", ".join(f"{m} {v:,.0f} µs" for m, v in figures.items()),
                  flush=True)
            for mode, value in figures.items():
                results.setdefault(target, {}).setdefault(mode, []).append(value)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="per mode and repeat (default 3000)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown targets {unknown}; known: {', '.join(TARGETS)}")
    args.out = args.out or Path("results") / f"framework-floor-{dt.datetime.now(dt.UTC):%Y-%m-%d}"
    raise_fd_limit()
    command = "python -m bench.floor " + " ".join(argv if argv is not None else sys.argv[1:])
    facts, vers = machine_facts(), versions()
    started = time.monotonic()
    results = trio.run(run_all, args, targets)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "floor.json").write_text(json.dumps({"command": command, "results": results, "facts": facts,
                                                     "versions": vers}, indent=2))
    (args.out / "README.md").write_text(render(results, command.strip(), facts, vers))
    print(f"[floor] wrote {args.out}/README.md in {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
