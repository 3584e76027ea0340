"""Cancellation at scale: 1,000 raw-socket clients leave; the upstream hears of each, and nothing leaks.

Sim and relay run as subprocesses (as in production, and so the clients' own work here does not
delay their detection); cancel latency is the sim's ``time.monotonic_ns()`` stamp of each detected
disconnect minus the client's stamp just before it closed, one clock on one host; each pair is matched by the
request's ``user`` field, which the sim records with its cancel.
"""

import json
import os
import subprocess
import sys
import time

import httpx
import psutil
import pytest
import trio

N = 1000
CHAT = {"model": "moonshot-v1-8k", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


async def _start(nursery, argv: list[str], marker: bytes, log_path) -> tuple[trio.Process, str]:
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
            assert data, f"{argv[2]} exited early"
            seen += data
    return proc, seen.split(marker, 1)[1].split()[0].decode()


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
                assert data, seen
                seen += data
            self.opened.set()
            await self.leave.wait()
        finally:
            self.closed_ns = time.monotonic_ns()
            await trio.aclose_forcefully(stream)


async def _open_all(nursery, host: str, port: int, n: int) -> list[Client]:
    clients = [Client(host, port, f"client-{i}") for i in range(n)]
    limiter = trio.CapacityLimiter(100)  # connect in waves: a 1,000-SYN burst only measures the backlog

    async def one(client: Client) -> None:
        async with limiter:
            nursery.start_soon(client.run)
            await client.opened.wait()

    with trio.fail_after(60):
        async with trio.open_nursery() as opener:
            for client in clients:
                opener.start_soon(one, client)
    return clients


async def _until(predicate, timeout_s: float, what: str) -> None:
    with trio.move_on_after(timeout_s):
        while not await predicate():  # noqa: ASYNC110 - polling another process over HTTP
            await trio.sleep(0.05)
        return
    raise AssertionError(f"not within {timeout_s} s: {what}")


@pytest.mark.slow
async def test_a_thousand_clients_leave_and_the_upstream_hears_each(nursery, tmp_path):
    _, sim_url = await _start(
        nursery,
        [sys.executable, "-m", "loadtest.sim", "--bind", "127.0.0.1:0", "--ttft", "0.01", "--interval", "60"],
        b"sim listening on ",
        tmp_path / "sim.log",
    )
    relay, root = await _start(
        nursery,
        [sys.executable, "-m", "proxy", "--bind", "127.0.0.1:0", "--upstream", sim_url, "--heartbeat-s", "0"],
        b"moonrelay listening on ",
        tmp_path / "relay.log",
    )
    sim_root = sim_url.removesuffix("/v1")
    host, port = root.removeprefix("http://").split(":")
    usage = psutil.Process(relay.pid)
    limits = httpx.Limits(max_keepalive_connections=0)  # no idle client connection counted in the relay's fds
    async with httpx.AsyncClient(timeout=10, limits=limits) as http:

        async def health() -> dict:
            return (await http.get(root + "/healthz")).json()

        async def sim_get(path: str) -> dict:
            return (await http.get(sim_root + path)).json()

        base_health = await health()
        base_fds = usage.num_fds()

        async def back_to_baseline() -> bool:
            h = await health()
            return h["in_flight"] == 1 and h["tasks"] <= base_health["tasks"] and usage.num_fds() <= base_fds

        # Round 1: all leave at once.
        async with trio.open_nursery() as clients_nursery:
            clients = await _open_all(clients_nursery, host, int(port), N)
            assert (await sim_get("/sim/stats"))["open"] == N
            t0 = trio.current_time()
            for client in clients:
                client.leave.set()

        async def all_cancelled() -> bool:
            return (await sim_get("/sim/stats"))["cancelled"] >= N

        await _until(all_cancelled, 5, f"{N} upstream cancellations")
        assert trio.current_time() - t0 < 5
        await _until(back_to_baseline, 10, "relay fds and tasks back to baseline")

        # Round 2: staggered, one every 5 ms; each client's close is paired with the cancel of its own request.
        await http.post(sim_root + "/sim/reset")
        async with trio.open_nursery() as clients_nursery:
            clients = await _open_all(clients_nursery, host, int(port), N)
            for client in clients:
                client.leave.set()
                await trio.sleep(0.005)

        async def all_stamped() -> bool:
            return len((await sim_get("/sim/cancels"))["cancel_ns"]) >= N

        await _until(all_stamped, 5, f"{N} cancel stamps")
        cancels = await sim_get("/sim/cancels")
        assert sorted(cancels["user"]) == sorted(c.user for c in clients)  # each request cancelled once
        cancel_ns = dict(zip(cancels["user"], cancels["cancel_ns"], strict=True))
        latencies_ms = sorted((cancel_ns[c.user] - c.closed_ns) / 1e6 for c in clients)
        p99 = latencies_ms[int(0.99 * N) - 1]
        assert latencies_ms[0] >= 0
        assert p99 < 100, f"p50 {latencies_ms[N // 2]:.1f} ms, p99 {p99:.1f} ms, max {latencies_ms[-1]:.1f} ms"
        await _until(back_to_baseline, 10, "relay fds and tasks back to baseline")
