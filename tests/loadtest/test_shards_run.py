"""Shards end to end: ``loadtest --shard i/N`` processes against a relay, then ``loadtest merge``; the merged
result holds the same sessions, chunks, tokens and errors as one run of the whole load.

Twice: on this machine's own network (always), and with each shard in a network namespace of its own, joined
to the relay's namespace by veth pairs, as on separate machines (needs root and iproute2; skipped otherwise).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import trio

from loadtest import merge, stats
from loadtest.runner import LoadConfig, Runner
from loadtest.workload import Workload, parse_distribution
from tests.conftest import start_relay, start_sim

pytestmark = pytest.mark.slow  # processes start, run and write their plots: ten seconds or more each

LOAD = ["-c", "12", "--requests", "36", "--input-tokens", "uniform:5,80", "--output-tokens", "uniform:2,6",
        "--seed", "9", "--quiet"]
COUNTS = ("sessions", "completed", "unverified", "failed", "chunks", "tokens", "errors_by_kind", "peak_concurrency")


class Child:
    """A child process whose output is read as it comes (no pipe fills up), and searched for lines."""

    def __init__(self, proc: trio.Process, argv: list[str]) -> None:
        self.proc, self.argv = proc, argv
        self.out = b""
        self.eof = False
        self._more = trio.Event()

    async def pump(self) -> None:
        while data := await self.proc.stdout.receive_some(65536):
            self.out += data
            self._more.set()
            self._more = trio.Event()
        self.eof = True
        self._more.set()

    async def wait_for(self, pattern: bytes) -> re.Match:
        while True:
            m = re.search(pattern, self.out)
            if m:
                return m
            assert not self.eof, f"{self.argv} ended without {pattern!r}:\n{self.out.decode(errors='replace')}"
            await self._more.wait()

    async def finish(self) -> int:
        code = await self.proc.wait()
        while not self.eof:
            await self._more.wait()
        return code


class Children:
    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.all: list[Child] = []

    async def spawn(self, argv: list[str], env: dict | None = None) -> Child:
        proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        child = Child(proc, argv)
        self.all.append(child)
        self.nursery.start_soon(child.pump)
        return child

    async def stop(self) -> None:
        for c in self.all:
            if c.proc.returncode is None:
                c.proc.send_signal(signal.SIGTERM)
        for c in self.all:
            with trio.move_on_after(10):
                await c.proc.wait()
            if c.proc.returncode is None:
                c.proc.kill()
                await c.proc.wait()


def loadtest(*args: str, prefix: tuple[str, ...] = ()) -> list[str]:
    return [*prefix, sys.executable, "-m", "loadtest", *args]


def check_merge(dirs: list[Path], out: Path, single: dict) -> dict:
    assert merge.main([*map(str, dirs), "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    got = result["summary"]
    assert {k: got[k] for k in COUNTS} == {k: single[k] for k in COUNTS}
    assert got["completed"] == 36 and got["tokens"]["completion"] > 0
    block = result["shards"]
    assert (block["shards"], block["merged"], block["missing"]) == (2, 2, [])
    assert [r["sessions"] for r in block["per_shard"]] == [18, 18]
    assert all(r["offset_ms"] is not None for r in block["per_shard"]) and block["method"] == "coordinator"
    assert "## Shards" in (out / "report.md").read_text()
    return result


async def test_two_shards_merge_to_one_runs_counts(nursery, tmp_path):
    sim = await start_sim(nursery, ttft=0.3, chunks=4, interval=0.02)
    url = (await start_relay(nursery, sim.url)).rstrip("/") + "/v1"
    children = Children(nursery)
    try:
        with trio.fail_after(60):
            # Shard 0 is the coordinator as well (port 0: it says which); shard 1 joins it.
            s0 = await children.spawn(loadtest("--url", url, *LOAD, "--shard", "0/2", "--out", str(tmp_path / "s0"),
                                               "--coordinator-bind", "127.0.0.1:0", "--coordinator-lead", "0.5"))
            address = (await s0.wait_for(rb"coordinator listening on (\S+)")).group(1).decode()
            s1 = await children.spawn(loadtest("--url", url, *LOAD, "--shard", "1/2", "--coordinator", address,
                                               "--out", str(tmp_path / "s1")))
            for child in (s0, s1):
                assert await child.finish() == 0, child.out.decode(errors="replace")
    finally:
        await children.stop()
    workload = Workload(input_tokens=parse_distribution("uniform:5,80"),
                        output_tokens=parse_distribution("uniform:2,6"), seed=9)
    with trio.fail_after(30):
        single = await Runner(LoadConfig(url=url, concurrency=12, requests=36, workload=workload)).run()
    check_merge([tmp_path / "s0", tmp_path / "s1"], tmp_path / "merged", stats.summarize(single))


# --- separate network namespaces ---------------------------------------------------------------------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def namespaces():
    """Three network namespaces: ``srv`` (relay, sim, coordinator) and ``a``, ``b`` (one shard each), each shard's
    joined to ``srv`` by a veth pair: a on 10.231.1.0/30, b on 10.231.2.0/30 (addresses live only inside them)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces (ip netns add)")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2's ip to create network namespaces")
    tag = "lt" + uuid.uuid4().hex[:6]
    names = {k: f"{tag}{k}" for k in ("srv", "a", "b")}
    made = []
    try:
        for name in names.values():
            try:
                _ip("netns", "add", name)
            except subprocess.CalledProcessError as exc:
                pytest.skip(f"cannot create a network namespace here: {exc.stderr.strip()}")
            made.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
        for side, net in (("a", 1), ("b", 2)):
            here, there = f"{tag}s{side}", f"{tag}{side}s"
            _ip("link", "add", here, "type", "veth", "peer", "name", there)
            _ip("link", "set", here, "netns", names["srv"])
            _ip("link", "set", there, "netns", names[side])
            _ip("-n", names["srv"], "addr", "add", f"10.231.{net}.1/30", "dev", here)
            _ip("-n", names[side], "addr", "add", f"10.231.{net}.2/30", "dev", there)
            _ip("-n", names["srv"], "link", "set", here, "up")
            _ip("-n", names[side], "link", "set", there, "up")
        yield names
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


async def test_shards_in_separate_network_namespaces(nursery, namespaces, tmp_path):
    def inside(ns: str) -> tuple[str, ...]:
        return ("ip", "netns", "exec", namespaces[ns])

    env = dict(os.environ, MOONSHOT_API_KEY="netns-test-key", PYTHONUNBUFFERED="1")
    children = Children(nursery)
    try:
        with trio.fail_after(90):
            sim = await children.spawn([*inside("srv"), sys.executable, "-m", "loadtest.sim", "--bind", "127.0.0.1:0",
                                        "--ttft", "0.3", "--chunks", "4", "--interval", "0.02"], env)
            sim_url = (await sim.wait_for(rb"listening on (http://\S+)")).group(1).decode()
            relay = await children.spawn([*inside("srv"), sys.executable, "-m", "proxy", "--bind", "0.0.0.0:0",
                                          "--upstream", sim_url], env)
            port = (await relay.wait_for(rb"listening on http://\S+?:(\d+)")).group(1).decode()
            coord = await children.spawn(loadtest("coordinate", "--bind", "0.0.0.0:0", "--shards", "2", "--lead",
                                                  "0.5", prefix=inside("srv")), env)
            cport = (await coord.wait_for(rb"coordinator listening on \S+:(\d+)")).group(1).decode()
            shards = []
            for i, (side, net) in enumerate((("a", 1), ("b", 2))):
                relay_url = f"http://10.231.{net}.1:{port}/v1"
                shards.append(await children.spawn(loadtest(
                    "--url", relay_url, *LOAD, "--shard", f"{i}/2", "--coordinator", f"10.231.{net}.1:{cport}",
                    "--out", str(tmp_path / f"s{i}"), prefix=inside(side)), env))
            for child in (*shards, coord):
                assert await child.finish() == 0, child.out.decode(errors="replace")
            single = await children.spawn(loadtest("--url", f"http://10.231.1.1:{port}/v1", *LOAD, "--out",
                                                   str(tmp_path / "single"), prefix=inside("a")), env)
            assert await single.finish() == 0, single.out.decode(errors="replace")
    finally:
        await children.stop()
    one = json.loads((tmp_path / "single" / "result.json").read_text())["summary"]
    result = check_merge([tmp_path / "s0", tmp_path / "s1"], tmp_path / "merged", one)
    assert {r["shard"]: r["source"] for r in result["shards"]["per_shard"]} == {
        0: str(tmp_path / "s0"), 1: str(tmp_path / "s1")}
    assert {json.loads((tmp_path / f"s{i}" / "result.json").read_text())["config"]["url"] for i in (0, 1)} == {
        f"http://10.231.{net}.1:{port}/v1" for net in (1, 2)}
