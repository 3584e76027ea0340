"""Relays as the shared-state tests run them: ``python -m proxy`` child processes, the config file of one capped
upstream, and what the relay's /metrics says of its state backend."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import trio

from tests.support.children import start_child


def write_config(folder: Path, sim_url: str, cap: int) -> str:
    """A config file: the sim as the one upstream, ``sim``, with a ``max_concurrent`` of ``cap``."""
    path = folder / "relay.toml"
    path.write_text(f'[[upstreams]]\nname = "sim"\nbase_url = "{sim_url}"\ndefault = true\nmax_concurrent = {cap}\n')
    return str(path)


def start_relay_process(args: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    """``python -m proxy ARGS`` on an ephemeral port, its stderr into ``log``; its root URL (killed after 30 s if it
    never listens)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "a") as err:
        argv = [sys.executable, "-m", "proxy", "--bind", "127.0.0.1:0", "--access-log", "off", *args]
        try:
            return start_child(argv, "moonrelay listening on ", env, err, within_s=30)
        except AssertionError:
            raise AssertionError(f"the relay did not start: {log.read_text()[-2000:]}") from None


def scrape(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


async def wait_backend(client: httpx.AsyncClient, root: str, up: float, within_s: float) -> None:
    """Until the relay's /metrics says the state backend is ``up`` (1) or down (0)."""
    deadline = time.monotonic() + within_s
    while scrape((await client.get(root + "/metrics")).text, "moonrelay_state_backend_up") != up:
        assert time.monotonic() < deadline, f"moonrelay_state_backend_up never became {up}"
        await trio.sleep(0.05)  # noqa: ASYNC110 - polling another process's metrics
