"""Cancellation at scale: 1,000 raw-socket clients leave; the upstream hears of each, and nothing leaks.

The harness (sim and relay as subprocesses, raw clients tagged by ``user``, each close paired with the
cancel of its own request) is bench/cancel.py's; this test asserts the behaviour. How fast the cancels
come is a figure of the machine: ``python -m bench.cancel`` measures it (results/cancel-latency-*/).
"""

import httpx
import psutil
import pytest
import trio

from bench.cancel import latencies_ms, leave_staggered, open_all, start_sim_and_relay, until

N = 1000


@pytest.mark.slow
async def test_a_thousand_clients_leave_and_the_upstream_hears_each(nursery, tmp_path):
    relay, root, sim_root = await start_sim_and_relay(nursery, tmp_path)
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
            clients = await open_all(clients_nursery, host, int(port), N)
            assert (await sim_get("/sim/stats"))["open"] == N
            for client in clients:
                client.leave.set()

        async def all_cancelled() -> bool:
            return (await sim_get("/sim/stats"))["cancelled"] >= N

        await until(all_cancelled, 5, f"{N} upstream cancellations")  # a hang detector, not a latency figure
        await until(back_to_baseline, 10, "relay fds and tasks back to baseline")

        # Round 2: staggered, one every 5 ms; each client's close is paired with the cancel of its own request.
        clients, cancel_ns = await leave_staggered(nursery, host, int(port), sim_root, http, N, 0.005)
        latencies = latencies_ms(clients, cancel_ns)
        assert latencies[0] >= 0, "a cancel stamped before its client closed: the pairing is wrong"
        await until(back_to_baseline, 10, "relay fds and tasks back to baseline")
