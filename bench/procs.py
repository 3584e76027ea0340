"""Start a server, know when it serves, measure its process tree, stop it whatever happened.

The tree's CPU and RSS are sampled every ``SAMPLE_INTERVAL_S`` with ``loadtest.proctree`` (shared
with the load generator's embedded mode).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import trio

from bench.peers import API_KEY, Launch, as_v1
from loadtest.proctree import ProcessTree as Tree

READY_TIMEOUT_S = 240.0  # LiteLLM imports for 30-60 s on two busy cores, and once took over 120 s
STOP_GRACE_S = 10.0
SAMPLE_INTERVAL_S = 0.5


class StartError(RuntimeError):
    pass


@dataclass
class Server:
    role: str
    url: str  # ends in /v1
    process: trio.Process
    tree: Tree
    log: Path


async def _url_from_log(log: Path, pattern: bytes, process: trio.Process) -> str:
    # The log file is the child's stdout: no pipe to drain, and the whole output stays for the report.
    rx = re.compile(pattern)
    with trio.move_on_after(READY_TIMEOUT_S):
        while process.poll() is None:
            m = rx.search(await trio.Path(log).read_bytes())
            if m:
                return m.group(1).decode()
            await trio.sleep(0.05)
    raise StartError(f"no {pattern.decode()!r} in its output (exit {process.poll()}):\n{_tail(log)}")


def _tail(log: Path, n: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


async def wait_http(url: str, process: trio.Process | None, log: Path | None) -> None:
    """Until ``GET {url}/models`` answers at all: the only readiness signal third-party servers share."""
    # With the key: LiteLLM answers an unauthenticated request with a 500 and a traceback (no prisma).
    async with httpx.AsyncClient(timeout=5.0, headers={"Authorization": f"Bearer {API_KEY}"}) as client:
        with trio.move_on_after(READY_TIMEOUT_S):
            while process is None or process.poll() is None:
                try:
                    await client.get(url + "/models")
                    return
                except httpx.TransportError:
                    await trio.sleep(0.2)
    exit_code = process.poll() if process else None
    raise StartError(f"{url} never answered GET /models (exit {exit_code}):\n{_tail(log) if log else ''}")


async def _stop(server: Server) -> None:
    p = server.process
    server.tree.sample()  # learn the workers even if it never became ready: none may outlive the run
    if p.returncode is None:
        p.send_signal(signal.SIGTERM)
        with trio.move_on_after(STOP_GRACE_S):
            await p.wait()
    # Whatever is left of the tree (a worker that ignored its parent's exit), by pid.
    for proc in server.tree.processes():
        try:
            proc.kill()
        except psutil.Error:
            pass
    if p.returncode is None:
        p.kill()
    await p.wait()


@asynccontextmanager
async def serve(role: str, launch: Launch, log: Path) -> AsyncIterator[Server]:
    """Start ``launch``, wait until it answers HTTP, yield it; SIGTERM, then SIGKILL the tree on exit."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **launch.env}
    with log.open("wb") as out:
        process = await trio.lowlevel.open_process(launch.argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                                   cwd=launch.cwd)
    server = Server(role=role, url="", process=process, tree=Tree(process.pid), log=log)
    try:
        with trio.fail_after(READY_TIMEOUT_S + 5):
            if launch.url_pattern is not None:
                server.url = as_v1(await _url_from_log(log, launch.url_pattern, process))
            else:
                server.url = as_v1(launch.url or "")
            await wait_http(server.url, process, log)
        server.tree.sample()
        yield server
    finally:
        with trio.CancelScope(shield=True):
            await _stop(server)


async def sample_forever(trees: list[Tree]) -> None:
    """Peak RSS and last-known CPU per pid, every half second (a few /proc reads: ~1 ms)."""
    while True:
        for t in trees:
            t.sample()
        await trio.sleep(SAMPLE_INTERVAL_S)
