"""The embedded default: the simulated upstream and the relay as child processes, sized for N.

:func:`servers` starts both (``python -m loadtest.sim``, then ``python -m proxy`` pointed at it), waits
for each one's ``listening on URL`` line, and yields :class:`Servers`; a sampler task reads every
process tree's CPU and RSS about every 0.5 s. On exit, success or failure or Ctrl-C alike, each child
gets SIGTERM, a grace period, then SIGKILL.

Sizing (this machine: fd hard limit 20,000, two cores):

- relay workers: each relayed stream holds two fds (client and upstream sockets), so one worker holds
  at most ``(fd_soft - reserve) / 2`` streams; at least 2 from 5,000 streams on, so accepting a
  connection storm is spread over both cores;
- sim workers: one per ~10,000 streams (one fd each).
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil
import trio

from loadtest.gauge import OpenStreams
from loadtest.proctree import ProcessTree
from loadtest.record import ProcessUsage

FD_RESERVE = 256
SIM_STREAMS_PER_WORKER = 10_000
READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 5.0
SAMPLE_INTERVAL_S = 0.5
_URL = re.compile(rb"listening on (https?://\S+)")


@dataclass(frozen=True)
class SimProfile:
    """The simulated upstream's timing. The default models a slow LLM, not a ping: a first token after
    1.5 s ± 0.5 s, then 6 chunks 12 s apart — about 62 s per session, so that with the default ramp-up
    (N/200 s, at most 50 s) every one of 10,000 sessions is open at the same time.

    Why so slow a ramp: a new relayed session costs milliseconds of CPU across relay, sim and load
    generator, so on
    2 cores 10,000 sessions need tens of CPU-seconds of setup; arriving faster than that (while thousands
    of streams flow) queues them, and TTFC then measures the queue, not the relay."""

    ttft_s: float = 1.5
    ttft_jitter_s: float = 0.5
    chunks: int = 6
    interval_s: float = 12.0

    @property
    def session_s(self) -> float:
        return self.ttft_s + (self.chunks - 1) * self.interval_s

    def flags(self) -> list[str]:
        return ["--ttft", f"{self.ttft_s:g}", "--ttft-jitter", f"{self.ttft_jitter_s:g}",
                "--chunks", str(self.chunks), "--interval", f"{self.interval_s:g}"]


def relay_workers_for(n: int, fd_soft: int, reserve: int = FD_RESERVE) -> int:
    need = math.ceil(2 * n / max(1, fd_soft - reserve))
    return max(1, need, 2 if n >= 5_000 else 1)


def sim_workers_for(n: int, fd_soft: int, reserve: int = FD_RESERVE) -> int:
    return max(1, math.ceil(n / SIM_STREAMS_PER_WORKER), math.ceil(n / max(1, fd_soft - reserve)))


class EmbeddedError(RuntimeError):
    pass


@dataclass
class _Tree:
    """One child server (the relay or the sim) and its process tree."""

    role: str
    process: trio.Process
    log: IO[bytes]
    url: str = ""
    tree: ProcessTree = field(init=False)

    def __post_init__(self) -> None:
        self.tree = ProcessTree(self.process.pid)

    def usage(self) -> ProcessUsage:
        t = self.tree
        return ProcessUsage(role=self.role, pid=self.process.pid, cpu_s=t.cpu_s(), peak_rss_bytes=t.peak_rss,
                            idle_rss_bytes=t.idle_rss, per_process=t.per_process())


@dataclass
class Servers:
    sim_url: str  # ends in /v1
    relay_url: str  # ends in /v1
    relay_workers: int
    sim_workers: int
    trees: list[_Tree]
    upstream_open: OpenStreams  # the peak of streams the relay opened upstream (held by it at once)

    def mark_start(self) -> None:
        """Begin the measured window: idle RSS and the CPU baseline."""
        for t in self.trees:
            t.tree.mark()

    def sample(self) -> None:
        for t in self.trees:
            t.tree.sample()

    def usage(self) -> list[ProcessUsage]:
        self.sample()
        return [t.usage() for t in self.trees]


async def _read_url(tree: _Tree, stdout: trio.abc.ReceiveStream) -> str:
    buf = b""
    with trio.move_on_after(READY_TIMEOUT_S):
        while True:
            m = _URL.search(buf)
            if m:
                return m.group(1).decode()
            data = await stdout.receive_some(4096)
            if not data:
                break
            tree.log.write(data)
            buf += data
    tree.log.flush()
    raise EmbeddedError(f"{tree.role} did not report 'listening on URL' (exit {tree.process.poll()}); "
                        f"see {tree.log.name}")


async def _drain(tree: _Tree, stdout: trio.abc.ReceiveStream) -> None:
    # A child that writes to a pipe nobody reads blocks once the pipe is full.
    while data := await stdout.receive_some(65536):
        tree.log.write(data)


async def _stop(tree: _Tree) -> None:
    p = tree.process
    if p.returncode is None:
        try:
            p.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        with trio.move_on_after(STOP_GRACE_S):
            await p.wait()
        if p.returncode is None:
            # The tree too: the relay's workers would otherwise keep the port.
            try:
                for c in psutil.Process(p.pid).children(recursive=True):
                    c.kill()
            except psutil.Error:
                pass
            p.kill()
            await p.wait()
    tree.log.close()


def _open_log(log_dir: Path, name: str) -> IO[bytes]:
    log_dir.mkdir(parents=True, exist_ok=True)
    return open(log_dir / name, "wb")  # closed by _stop


async def _start(role: str, argv: list[str], log_dir: Path, env: dict[str, str]) -> _Tree:
    log = _open_log(log_dir, f"{role}.log")
    process = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, stderr=log, env=env)
    tree = _Tree(role=role, process=process, log=log)
    return tree


@asynccontextmanager
async def servers(
    n: int,
    *,
    log_dir: Path,
    profile: SimProfile = SimProfile(),
    relay_workers: int | None = None,
    sim_workers: int | None = None,
    fd_soft: int,
    backlog: int = 4096,
) -> AsyncIterator[Servers]:
    """Start sim and relay for ``n`` concurrent streams; stop them on exit, whatever happened."""
    relay_workers = relay_workers or relay_workers_for(n, fd_soft)
    sim_workers = sim_workers or sim_workers_for(n, fd_soft)
    env = dict(os.environ)
    env.setdefault("MOONSHOT_API_KEY", "embedded-sim-key")
    env["PYTHONUNBUFFERED"] = "1"
    trees: list[_Tree] = []
    async with trio.open_nursery() as nursery:
        try:
            sim = await _start("sim", [
                sys.executable, "-m", "loadtest.sim", "--bind", "127.0.0.1:0", *profile.flags(),
                "--workers", str(sim_workers), "--backlog", str(backlog),
            ], log_dir, env)
            trees.append(sim)
            sim.url = await _read_url(sim, sim.process.stdout)
            nursery.start_soon(_drain, sim, sim.process.stdout)
            relay = await _start("relay", [
                sys.executable, "-m", "proxy", "--bind", "127.0.0.1:0", "--upstream", sim.url,
                "--workers", str(relay_workers), "--backlog", str(backlog),
            ], log_dir, env)
            trees.append(relay)
            relay.url = await _read_url(relay, relay.process.stdout)
            nursery.start_soon(_drain, relay, relay.process.stdout)
            relay_url = relay.url.rstrip("/")
            if not relay_url.endswith("/v1"):
                relay_url += "/v1"
            s = Servers(sim_url=sim.url.rstrip("/"), relay_url=relay_url, relay_workers=relay_workers,
                        sim_workers=sim_workers, trees=trees, upstream_open=OpenStreams(sim.url))
            s.sample()
            nursery.start_soon(s.upstream_open.sample_forever)

            async def sampler() -> None:
                while True:
                    await trio.sleep(SAMPLE_INTERVAL_S)
                    s.sample()  # a few /proc reads, cheaper than a thread hop

            nursery.start_soon(sampler)
            yield s
        finally:
            with trio.CancelScope(shield=True):
                for tree in reversed(trees):  # the relay first, so it does not log upstream errors
                    await _stop(tree)
            nursery.cancel_scope.cancel()
