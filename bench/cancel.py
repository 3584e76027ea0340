"""How fast the upstream hears that a client left: 1,000 raw-socket clients close, one every 5 ms.

    python -m bench.cancel                                  # 1,000 clients, 3 repeats → results/cancel-latency-<date>/
    python -m bench.cancel --clients 200 --repeat 1 --out /tmp/cancel

Sim and relay run as subprocesses (as in production, and so the clients' own work does not delay their
detection). A client's latency is the sim's ``time.monotonic_ns()`` stamp of the disconnect it detected
minus the client's stamp just before it closed: one clock on one host, each pair matched by the request's
``user`` field, which the sim records with its cancel. tests/bench/test_reliability_scale.py runs the same
harness and asserts the behaviour (each request cancelled once, nothing leaks); the distribution is a
figure of this machine and lives here, not in a timed test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import trio

CHAT = {"model": "moonshot-v1-8k", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


async def start_process(nursery: trio.Nursery, argv: list[str], marker: bytes, log_path: Path) -> tuple[Any, str]:
    """Start ``argv``, stopped (SIGTERM, then SIGKILL) when ``nursery`` is cancelled; returns it and the word
    after ``marker`` in its output (the URL it listens on)."""
    log = open(log_path, "wb")  # noqa: SIM115, ASYNC230 - the process writes to it until it exits
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, stderr=log, env=env)

    async def reap() -> None:
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                proc.terminate()
                with trio.move_on_after(10):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
                log.close()

    nursery.start_soon(reap)
    seen = b""
    with trio.fail_after(20):
        while marker not in seen or not seen.endswith(b"\n"):
            data = await proc.stdout.receive_some(4096)
            if not data:
                raise RuntimeError(f"{argv[2]} exited early (log: {log_path})")
            seen += data
    return proc, seen.split(marker, 1)[1].split()[0].decode()


async def start_sim_and_relay(nursery: trio.Nursery, workdir: Path) -> tuple[Any, str, str]:
    """The sim (a stream that never ends on its own) and a one-worker relay in front of it: (relay process,
    relay root URL, sim root URL)."""
    _, sim_url = await start_process(
        nursery,
        [sys.executable, "-m", "loadtest.sim", "--bind", "127.0.0.1:0", "--ttft", "0.01", "--interval", "60"],
        b"sim listening on ",
        workdir / "sim.log",
    )
    relay, root = await start_process(
        nursery,
        [sys.executable, "-m", "proxy", "--bind", "127.0.0.1:0", "--upstream", sim_url, "--heartbeat-s", "0"],
        b"moonrelay listening on ",
        workdir / "relay.log",
    )
    return relay, root, sim_url.removesuffix("/v1")


class Client:
    """One raw HTTP/1.1 streaming request tagged with its own ``user``; ``opened`` once the first SSE event arrived."""

    def __init__(self, host: str, port: int, user: str) -> None:
        self.host, self.port, self.user = host, port, user
        self.opened = trio.Event()
        self.leave = trio.Event()
        self.closed_ns = 0

    async def run(self) -> None:
        body = json.dumps({**CHAT, "user": self.user})
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nhost: {self.host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n{body}"
        ).encode()
        stream = await trio.open_tcp_stream(self.host, self.port)
        try:
            await stream.send_all(head)
            seen = b""
            while b"data: " not in seen:
                data = await stream.receive_some(65536)
                if not data:
                    raise RuntimeError(f"{self.user}: the relay closed before the first event: {seen[:200]!r}")
                seen += data
            self.opened.set()
            await self.leave.wait()
        finally:
            self.closed_ns = time.monotonic_ns()
            await trio.aclose_forcefully(stream)


async def open_all(nursery: trio.Nursery, host: str, port: int, n: int) -> list[Client]:
    """``n`` clients, each with its stream open (connected in waves of 100: a 1,000-SYN burst measures the backlog)."""
    clients = [Client(host, port, f"client-{i}") for i in range(n)]
    limiter = trio.CapacityLimiter(100)

    async def one(client: Client) -> None:
        async with limiter:
            nursery.start_soon(client.run)
            await client.opened.wait()

    with trio.fail_after(60):
        async with trio.open_nursery() as opener:
            for client in clients:
                opener.start_soon(one, client)
    return clients


async def until(predicate: Any, timeout_s: float, what: str) -> None:
    """Poll ``predicate`` (another process, over HTTP) until it holds; AssertionError after ``timeout_s``."""
    with trio.move_on_after(timeout_s):
        while not await predicate():  # noqa: ASYNC110 - polling another process over HTTP
            await trio.sleep(0.05)
        return
    raise AssertionError(f"not within {timeout_s} s: {what}")


async def leave_staggered(
    nursery: trio.Nursery, host: str, port: int, sim_root: str, http: httpx.AsyncClient, n: int, stagger_s: float
) -> tuple[list[Client], dict[str, int]]:
    """Open ``n`` streams, close them one every ``stagger_s``; the clients and each ``user``'s cancel stamp."""
    await http.post(sim_root + "/sim/reset")
    async with trio.open_nursery() as clients_nursery:
        clients = await open_all(clients_nursery, host, port, n)
        for client in clients:
            client.leave.set()
            await trio.sleep(stagger_s)

    async def all_stamped() -> bool:
        return len((await http.get(sim_root + "/sim/cancels")).json()["cancel_ns"]) >= n

    await until(all_stamped, 5, f"{n} cancel stamps")
    cancels = (await http.get(sim_root + "/sim/cancels")).json()
    if sorted(cancels["user"]) != sorted(c.user for c in clients):
        raise AssertionError("a request was cancelled twice, or one was never cancelled")
    return clients, dict(zip(cancels["user"], cancels["cancel_ns"], strict=True))


def latencies_ms(clients: list[Client], cancel_ns: dict[str, int]) -> list[float]:
    """Each client's close → the cancel of its own request, sorted."""
    return sorted((cancel_ns[c.user] - c.closed_ns) / 1e6 for c in clients)


def summary(values: list[float]) -> dict[str, float]:
    n = len(values)
    return {"n": n, "p50_ms": values[n // 2], "p99_ms": values[max(0, int(0.99 * n) - 1)], "max_ms": values[-1]}


async def measure(clients: int, repeat: int, stagger_s: float, workdir: Path) -> list[dict[str, float]]:
    out = []
    async with trio.open_nursery() as nursery:
        _, root, sim_root = await start_sim_and_relay(nursery, workdir)
        host, port = root.removeprefix("http://").split(":")
        async with httpx.AsyncClient(timeout=10) as http:
            for i in range(repeat):
                done, stamps = await leave_staggered(nursery, host, int(port), sim_root, http, clients, stagger_s)
                out.append(summary(latencies_ms(done, stamps)))
                print(f"[cancel] repeat {i + 1}: {out[-1]}", flush=True)
        nursery.cancel_scope.cancel()
    return out


def render(runs: list[dict[str, float]], command: str, facts: dict[str, Any]) -> str:
    lines = [
        "# Cancel latency: a client leaves → the upstream hears of it",
        "",
        f"```\n{command}\n```",
        "",
        __doc__.split("\n\n", 2)[2].strip(),
        "",
        "| repeat | clients | p50 ms | p99 ms | max ms |",
        "|---:|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(runs, 1):
        lines.append(f"| {i} | {r['n']:,} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.2f} |")
    lines += ["", "## Machine", ""] + [f"- {k}: {v}" for k, v in facts.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import tempfile

    from bench.peers import Moonrelay
    from bench.run import machine_facts, raise_fd_limit

    parser = argparse.ArgumentParser(prog="python -m bench.cancel", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stagger-s", type=float, default=0.005)
    parser.add_argument("--out", default=f"results/cancel-latency-{dt.date.today().isoformat()}")
    args = parser.parse_args(argv)
    raise_fd_limit()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-cancel-") as logs:  # the relay's access log: 1 line a client
        runs = trio.run(measure, args.clients, args.repeat, args.stagger_s, Path(logs))
    command = " ".join(["python -m bench.cancel", *(sys.argv[1:] if argv is None else argv)])
    facts = {"moonrelay": Moonrelay().ensure(), **machine_facts()}
    (out / "cancel.json").write_text(json.dumps({"command": command, "runs": runs, "machine": facts}, indent=2))
    (out / "README.md").write_text(render(runs, command, facts))
    print(f"[cancel] wrote {out}/README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
