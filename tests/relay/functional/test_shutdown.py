"""SIGTERM: the relay as a subprocess drains in-flight streams, ends the rest with an error event, exits 0."""

import json
import os
import signal
import subprocess
import sys

import httpx
import trio

from proxy.protocol import EventSplitter, event_data
from tests.conftest import start_sim

CHAT = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "Tell me about the moon"}]}
GRACE_S = 3.0  # the short streams have ~0.3 s left at SIGTERM: the rest is margin for a loaded machine
HANG_S = 30.0  # a guard against a relay that never exits, not a measurement


async def start_relay_process(nursery, upstream: str, log_path, *flags: str):
    """``python -m proxy`` on an ephemeral port; returns (process, root URL) once it listens."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "proxy", "--bind", "127.0.0.1:0", "--upstream", upstream, *flags]
    log = open(log_path, "wb")  # noqa: SIM115, ASYNC230 - the process writes to it until it exits
    proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, stderr=log, env=env)
    nursery.start_soon(_reap, proc, log)
    seen = b""
    with trio.fail_after(20):
        while b"moonrelay listening on " not in seen or not seen.endswith(b"\n"):
            data = await proc.stdout.receive_some(4096)
            assert data, f"relay exited: {log_path.read_text()}"  # noqa: ASYNC240 - failure path only
            seen += data
    url = seen.split(b"moonrelay listening on ", 1)[1].split()[0].decode()
    return proc, url


async def _reap(proc, log) -> None:
    try:
        await proc.wait()
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            log.close()


async def _stream(client: httpx.AsyncClient, url: str, body: dict, started: trio.Event, out: dict, name: str):
    received = b""
    async with client.stream("POST", url, json=body) as resp:
        out[name + ":status"] = resp.status_code
        async for part in resp.aiter_raw():  # raises if the body is cut instead of closed cleanly
            received += part
            if b"data: " in received:
                started.set()
    out[name] = received
    out[name + ":ended"] = trio.current_time()


async def test_sigterm_drains_then_ends_long_streams_with_an_error_event(nursery, tmp_path):
    """Checked by order and by bounds that follow from the grace period itself (nothing ends before it), never by a
    window a busy machine could miss: new connections are refused while the long streams still run, the short ones
    end with [DONE] before any long one ends, the long ones end with an error event no earlier than the grace
    period, and the process exits after them."""
    sim = await start_sim(nursery, ttft=0.01, interval=0.05, chunks=6)
    proc, root = await start_relay_process(
        nursery, sim.url, tmp_path / "relay.log", "--graceful-timeout-s", str(GRACE_S)
    )
    url = root + "/v1/chat/completions"
    out: dict = {}
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(timeout=HANG_S, limits=limits) as client, trio.open_nursery() as n:
        started = []
        for i in range(4):  # short: ~0.3 s, they finish inside the grace period
            started.append(trio.Event())
            n.start_soon(_stream, client, url, {**CHAT, "stream": True}, started[-1], out, f"short{i}")
        for i in range(4):  # long: 100 s, they are still running at the deadline
            body = {**CHAT, "stream": True, "sim_interval": 5.0, "sim_chunks": 20}
            started.append(trio.Event())
            n.start_soon(_stream, client, url, body, started[-1], out, f"long{i}")
        with trio.fail_after(HANG_S):
            for ev in started:
                await ev.wait()
        waiting = {}

        async def wait_for_headers():  # still waiting for the upstream's status at the deadline
            r = await client.post(url, json={**CHAT, "stream": True, "sim_fault": "stall"})
            waiting["resp"] = r

        n.start_soon(wait_for_headers)
        with trio.fail_after(HANG_S):
            while sim.stats.snapshot()["open"] < 9:  # noqa: ASYNC110 - the stalled request reached the sim
                await trio.sleep(0.01)
        t0 = trio.current_time()
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(HANG_S):
            while True:  # new connections are refused once draining starts
                try:
                    s = await trio.open_tcp_stream("127.0.0.1", int(root.rsplit(":", 1)[1]))
                except OSError:
                    break
                await s.aclose()
                await trio.sleep(0.02)
        assert not any(f"long{i}" in out for i in range(4))  # refused while the long streams still ran
        with trio.fail_after(HANG_S):
            code = await proc.wait()
        exited = trio.current_time()
    assert code == 0
    assert exited - t0 >= GRACE_S - 0.1  # the grace period was given (its clock starts after t0)
    short_ends = [out[f"short{i}:ended"] for i in range(4)]
    long_ends = [out[f"long{i}:ended"] for i in range(4)]
    assert max(short_ends) < min(long_ends)  # drained first ...
    assert min(long_ends) - t0 >= GRACE_S - 0.1  # ... the rest cut at the deadline, not before
    for i in range(4):
        assert out[f"short{i}:status"] == 200
        assert out[f"short{i}"].endswith(b"data: [DONE]\n\n")
        events = EventSplitter().feed(out[f"long{i}"])
        assert len(events) >= 2
        last = json.loads(event_data(events[-1]))
        assert last["error"]["code"] == "shutting_down"
        assert b"[DONE]" not in out[f"long{i}"]
    assert waiting["resp"].status_code == 503 and waiting["resp"].json()["error"]["code"] == "shutting_down"
    with trio.fail_after(HANG_S):
        while sim.stats.snapshot()["open"]:  # noqa: ASYNC110 - the relay hung up the upstream requests too
            await trio.sleep(0.01)
    assert sim.stats.snapshot()["cancelled"] == 5
