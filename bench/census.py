"""``python -m bench.census``: what each open relayed stream keeps alive in the relay (issue 16, item 3).

The relay runs in this process (``proxy.edge._server.serve``, one worker, tracemalloc on); the sim and a client that
holds N streams open (``bench.rawclient``) run as their own processes, so nothing of theirs is counted. The sim
sends one chunk at once and the next only after ``--hold-s``: every stream stays open, relayed and idle, which is
what a relay holds most of its life at 30 tokens/s. Two snapshots, after a warm-up and again once the sim's own
gauge says N streams are open, give per stream:

- Python allocations by package (tracemalloc, by the file that allocated: trio, hypercorn, h11, httpx, quart,
  moonrelay's own proxy/ and wire/, the standard library…);
- live objects by type (``gc.get_objects``, with their ``sys.getsizeof``).

RSS per stream is the bench's (``hold`` scenario): here tracemalloc's own bookkeeping would be in it.

``group``, ``diff`` and ``render`` are pure; ``main`` is the shell. Writes ``<out>/README.md`` and
``<out>/census.json``.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import gc
import json
import os
import shlex
import subprocess
import sys
import sysconfig
import tracemalloc
from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

from bench.peers import Launch
from bench.procs import serve as serve_process
from bench.run import machine_facts, raise_fd_limit

TOP = 25  # rows of each table
STDLIB = sysconfig.get_paths()["stdlib"]
PACKAGES = ("trio", "hypercorn", "h11", "httpx", "httpcore", "quart_trio", "quart", "werkzeug", "outcome",
            "sniffio", "anyio", "prometheus_client", "wsproto", "priority", "h2")  # fmt: skip


def group(filename: str) -> str:
    """Which package or layer allocated, from a traceback's file name."""
    path = filename.replace(os.sep, "/")
    if "/site-packages/" in path:
        top = path.split("/site-packages/", 1)[1].split("/", 1)[0]
        return top if top in PACKAGES else f"{top} (other)"
    for ours in ("proxy", "wire", "loadtest", "bench"):
        if f"/{ours}/" in path:
            return f"moonrelay {ours}/"
    if path.startswith(STDLIB.replace(os.sep, "/")) or path.startswith("<"):
        return "python stdlib"
    return "other"


def diff(before: Mapping[str, float], after: Mapping[str, float], streams: int) -> list[tuple[str, float]]:
    """``(name, growth per stream)``, largest first; names that shrank or stayed are left out."""
    rows = [(k, (after.get(k, 0) - before.get(k, 0)) / streams) for k in set(before) | set(after)]
    return sorted(((k, v) for k, v in rows if v > 0), key=lambda kv: (-kv[1], kv[0]))


def allocations(snapshot: tracemalloc.Snapshot) -> dict[str, int]:
    """Bytes still allocated, by ``group`` of the allocating file."""
    out: collections.Counter[str] = collections.Counter()
    for stat in snapshot.statistics("filename"):
        out[group(stat.traceback[0].filename)] += stat.size
    out.pop("moonrelay bench/", None)  # the census's own tables
    return dict(out)


def by_line(snapshot: tracemalloc.Snapshot) -> dict[str, int]:
    """Bytes still allocated, by allocating line (``package: path:line``; paths below site-packages or the repo)."""
    out: collections.Counter[str] = collections.Counter()
    for stat in snapshot.statistics("lineno"):
        frame = stat.traceback[0]
        where = group(frame.filename)
        if where == "moonrelay bench/":
            continue
        path = frame.filename.replace(os.sep, "/")
        short = path.split("/site-packages/", 1)[-1] if "/site-packages/" in path else "/".join(path.split("/")[-2:])
        out[f"{short}:{frame.lineno}"] += stat.size
    return dict(out)


def objects() -> tuple[dict[str, int], dict[str, int]]:
    """Live objects the collector tracks: count and ``sys.getsizeof`` bytes by type (module-qualified)."""
    counts: collections.Counter[str] = collections.Counter()
    sizes: collections.Counter[str] = collections.Counter()
    for obj in gc.get_objects():
        t = type(obj)
        name = f"{t.__module__}.{t.__qualname__}"
        counts[name] += 1
        sizes[name] += sys.getsizeof(obj)
    return dict(counts), dict(sizes)


def chain(coro: Any) -> str:
    """A task's await chain, outermost first: the qualified names of the coroutines and generators it is in."""
    names = []
    while coro is not None:
        code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
        if code is None:
            names.append(type(coro).__name__)
            break
        names.append(code.co_qualname)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return " → ".join(names)


def task_chains() -> dict[str, int]:
    """Every trio task of this run, counted by its await chain."""
    out: collections.Counter[str] = collections.Counter()
    todo = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        out[chain(task.coro)] += 1
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return dict(out)


def render(result: Mapping[str, Any]) -> str:
    """README.md: the totals per stream, then allocations by package and live objects by type."""
    n = result["streams"]
    lines = [
        f"# Memory census: what one open relayed stream keeps alive ({n:,} streams held)",
        "",
        f"`{result['command']}`",
        "",
        f"moonrelay {result['git']}; {result['when']}; Python {result['python']}; one relay worker in the "
        "census process (tracemalloc on), the sim and the holding client in their own processes.",
        "",
        "| per open stream | bytes |",
        "|---|---:|",
        f"| Python allocations (tracemalloc) | {result['alloc_per_stream']:,.0f} |",
        f"| live gc-tracked objects (count) | {result['objects_per_stream']:,.1f} |",
        "",
        "## Allocations by package (bytes per stream)",
        "",
        "| allocated in | bytes | share |",
        "|---|---:|---:|",
    ]
    total = result["alloc_per_stream"] or 1
    for name, value in result["by_package"][:TOP]:
        lines.append(f"| {name} | {value:,.0f} | {value / total:.0%} |")
    lines += ["", f"## Allocations by line (bytes per stream, top {TOP})", "", "| line | bytes |",
              "|---|---:|"]  # fmt: skip
    for name, value in result["by_line"][:TOP]:
        lines.append(f"| `{name}` | {value:,.0f} |")
    lines += ["", "## Tasks per stream, by await chain (each coroutine in a chain is one live frame)", "",
              "| tasks | chain |", "|---:|---|"]  # fmt: skip
    for name, value in result["tasks_by_chain"][:TOP]:
        lines.append(f"| {value:.2f} | `{name}` |")
    lines += [
        "",
        f"## Live objects by type (per stream, top {TOP} by bytes)",
        "",
        "| type | objects | bytes (getsizeof) |",
        "|---|---:|---:|",
    ]
    counts = dict(result["objects_by_type"])
    for name, value in result["bytes_by_type"][:TOP]:
        lines.append(f"| `{name}` | {counts.get(name, 0):,.2f} | {value:,.0f} |")
    lines += [
        "",
        "`getsizeof` counts each object's own size (a dict's table, a frame's slots), not what it refers "
        "to, and only objects the collector tracks: strings and bytes are in the allocations table, not here.",
        "",
    ]
    return "\n".join(lines)


async def _open_count(client: httpx.AsyncClient, sim_url: str) -> int:
    return int((await client.get(sim_url.removesuffix("/v1") + "/sim/stats")).json()["open"])


async def _census(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from proxy.config import Settings
    from proxy.edge import serve

    sim_argv = [sys.executable, "-m", "loadtest.sim", "--bind", "127.0.0.1:0", "--ttft", "0.05", "--ttft-jitter",
                "0", "--chunks", "2", "--interval", str(args.hold_s), "--interval-jitter", "0"]  # fmt: skip
    async with serve_process("sim", Launch(argv=sim_argv, url_pattern=rb"listening on (http://\S+)"),
                             out / "sim.log") as sim, trio.open_nursery() as nursery:  # fmt: skip
        settings = Settings(bind="127.0.0.1:0", upstream=sim.url, access_log="off", heartbeat_s=0)
        os.environ.setdefault(settings.upstream_key_env, "sk-census")
        relay_url = await nursery.start(partial(serve, settings))
        async with httpx.AsyncClient(timeout=30.0) as client:
            for _ in range(20):  # warm-up: the stream path once, before the baseline (the client leaves after
                # the first chunk, as the holder's streams will when it is killed)
                body = {"model": "moonshot-v1-8k", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
                async with client.stream("POST", relay_url + "/v1/chat/completions", json=body) as r:
                    r.raise_for_status()
                    async for _ in r.aiter_raw():
                        break
            gc.collect()
            snapshot = tracemalloc.take_snapshot()
            base_alloc, base_lines = allocations(snapshot), by_line(snapshot)
            base_counts, base_sizes = objects()
            base_tasks = task_chains()
            holder = await trio.lowlevel.open_process(
                [sys.executable, "-m", "bench.rawclient", "--url", relay_url + "/v1", "-c", str(args.streams)],
                stdout=subprocess.DEVNULL)  # fmt: skip
            try:
                with trio.fail_after(args.timeout_s):
                    # another process's gauge: polled, there is no event to wait on
                    while await _open_count(client, sim.url) < args.streams:  # noqa: ASYNC110
                        await trio.sleep(0.5)
                await trio.sleep(1.0)  # the last streams' first chunks relayed: every stream idle and open
                held = await _open_count(client, sim.url)
                gc.collect()
                snapshot = tracemalloc.take_snapshot()
                alloc, held_lines = allocations(snapshot), by_line(snapshot)
                counts, sizes = objects()
                tasks = task_chains()
            finally:
                holder.kill()
                await holder.wait()
        nursery.cancel_scope.cancel()
    by_package = diff(base_alloc, alloc, held)
    return {
        "streams": held,
        "alloc_per_stream": (sum(alloc.values()) - sum(base_alloc.values())) / held,
        "objects_per_stream": (sum(counts.values()) - sum(base_counts.values())) / held,
        "by_package": by_package,
        "objects_by_type": diff(base_counts, counts, held),
        "bytes_by_type": diff(base_sizes, sizes, held),
        "tasks_by_chain": diff(base_tasks, tasks, held),
        "by_line": diff(base_lines, held_lines, held),
    }


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: Iterable[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.census", description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=2000, help="streams to hold open (default 2000)")
    p.add_argument("--hold-s", type=float, default=120.0, help="seconds between the sim's two chunks")
    p.add_argument("--timeout-s", type=float, default=90.0, help="longest wait for every stream to open")
    p.add_argument("--out", type=Path, default=Path("results/memory-census"))
    args = p.parse_args(list(argv) if argv is not None else None)
    args.out.mkdir(parents=True, exist_ok=True)
    raise_fd_limit()
    tracemalloc.start(1)
    result = trio.run(_census, args, args.out)
    tracemalloc.stop()
    result |= {"command": "python -m bench.census " + shlex.join(list(argv) if argv is not None else sys.argv[1:]),
               "git": git_commit(), "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
               "python": sys.version.split()[0], "machine": machine_facts()}  # fmt: skip
    (args.out / "census.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "README.md").write_text(render(result))
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
