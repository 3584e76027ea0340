"""``python -m bench.retention``: what the relay keeps of each request it served, and what it leaves to the collector.

The relay runs in this process (``proxy.edge.serve``, one worker, its defaults, tracemalloc on); the sim and the
client (``bench.soakload --kind K --requests N``) in their own processes, so nothing of theirs is counted. For each
kind of request:

1. *kept*: a warm-up, a collection and a snapshot, N more requests, a collection and a snapshot; what is still
   allocated, per request, by the traceback that allocated it (tracemalloc's ``compare_to(..., "traceback")``).
   Before each snapshot the relay's clock jumps past the short deadlines trio keeps ended scopes for (``_settled``);
2. *left to the collector*: the collector off during N more requests, then one collection that saves what it found
   (``gc.DEBUG_SAVEALL``): the objects only it could free, per request, by type. A cycle that holds a request's
   objects keeps them until a collection of the generation they reached: for a long stream, the oldest.

``--relay-from DIR`` measures the relay of another checkout (its ``proxy`` package imported first): the code before
a fix. Writes ``<out>/README.md`` and ``<out>/retention.json``.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import shlex
import sys
import tracemalloc
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

import trio
import trio.testing

from bench.census import git_commit
from bench.peers import Launch
from bench.procs import serve as serve_process
from bench.run import machine_facts
from bench.soakload import MIX

FRAMES = 12  # of each allocation's traceback
JUMP_S = 100.0  # the clock jumps this far before each snapshot (see _settled)
TOP = 6  # tracebacks shown per kind
SHOWN = 4  # innermost frames shown per traceback


def _short(filename: str) -> str:
    path = filename.replace(os.sep, "/")
    for marker in ("/site-packages/", "/proxy/", "/wire/"):
        if marker in path:
            return marker.strip("/") + "/" + path.split(marker, 1)[1] if marker != "/site-packages/" else \
                path.split(marker, 1)[1]  # fmt: skip
    return "/".join(path.split("/")[-2:])


def kept(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, n: int) -> dict[str, Any]:
    """Bytes and blocks still allocated per request, and the tracebacks that hold most."""
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)]
    stats = after.filter_traces(ignore).compare_to(before.filter_traces(ignore), "traceback")
    top = []
    for stat in stats[:TOP]:
        if stat.size_diff <= 0:
            break
        frames = [f"{_short(f.filename)}:{f.lineno}" for f in list(stat.traceback)[::-1][:SHOWN]]
        top.append({"bytes_per_request": stat.size_diff / n, "blocks": stat.count_diff, "where": frames})
    return {"bytes_per_request": sum(s.size_diff for s in stats) / n,
            "blocks_per_request": sum(s.count_diff for s in stats) / n, "top": top}  # fmt: skip


def garbage(n: int) -> dict[str, Any]:
    """One collection that saves what it found: per request, in all and by type."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        types = collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    total = sum(types.values())
    return {"objects_per_request": total / n,
            "by_type": [(name, count / n) for name, count in types.most_common(12)]}  # fmt: skip


async def _client(url: str, kind: str, n: int, connections: int) -> None:
    argv = [sys.executable, "-m", "bench.soakload", "--url", url, "--kind", kind, "--requests", str(n),
            "--connections", str(connections), "--duration", "3600"]  # fmt: skip
    done = await trio.run_process(argv, capture_stdout=True, check=False)
    summary = json.loads(done.stdout)
    bad = {k: v for k, v in summary["by_kind"].get(kind, {}).items() if k != "ok"}
    if bad:
        raise RuntimeError(f"{kind}: {bad}")


async def _settled(clock: trio.testing.MockClock) -> None:
    """Once the relay has handled what was sent, the clock jumps past the short deadlines a request leaves in trio's
    own heap (Quart's body timeout, 60 s; the keep-alive): trio keeps an ended scope there until its deadline passes
    (pruned at twice the live ones plus a thousand), which is trio's bound, not a request the relay keeps. Not past
    the relay's own first-byte timeout (300 s)."""
    await trio.testing.wait_all_tasks_blocked()
    clock.jump(JUMP_S)
    await trio.testing.wait_all_tasks_blocked()


async def _measure(args: argparse.Namespace, out: Path, clock: trio.testing.MockClock) -> dict[str, Any]:
    from proxy.config import Settings

    try:
        from proxy.edge import serve
    except ImportError:  # --relay-from a checkout from before proxy/ was split by layer
        from proxy.server import serve  # type: ignore[no-redef]

    sim_argv = [sys.executable, "-m", "loadtest.sim", "--bind", "127.0.0.1:0", "--ttft", "0", "--ttft-jitter", "0",
                "--chunks", "5", "--interval", "0", "--interval-jitter", "0"]  # fmt: skip
    results: dict[str, Any] = {}
    async with serve_process("sim", Launch(argv=sim_argv, url_pattern=rb"listening on (http://\S+)"),
                             out / "sim.log") as sim, trio.open_nursery() as nursery:  # fmt: skip
        settings = Settings(bind="127.0.0.1:0", upstream=sim.url)
        os.environ.setdefault(settings.upstream_key_env, "sk-retention")
        root = await nursery.start(partial(serve, settings))
        for kind in args.kinds:
            await _client(root, kind, args.warmup, args.connections)
            await _settled(clock)
            gc.collect()
            before = tracemalloc.take_snapshot()
            await _client(root, kind, args.requests, args.connections)
            await _settled(clock)
            gc.collect()
            row = {"kept": kept(before, tracemalloc.take_snapshot(), args.requests)}
            del before
            gc.collect()
            gc.disable()
            try:
                await _client(root, kind, args.requests, args.connections)
                await trio.testing.wait_all_tasks_blocked()
                row["garbage"] = garbage(args.requests)
            finally:
                gc.enable()
            results[kind] = row
            print(f"{kind}: kept {row['kept']['bytes_per_request']:,.1f} B per request, "
                  f"{row['garbage']['objects_per_request']:,.1f} objects per request left to the collector",
                  file=sys.__stdout__, flush=True)  # fmt: skip
        nursery.cancel_scope.cancel()
    return results


def render(result: dict[str, Any]) -> str:
    """README.md: per kind, what is kept (and where it was allocated) and what is left to the collector."""
    lines = [f"# Retention per request: {result['title']}", "", f"`{result['command']}`", "",
             f"moonrelay {result['git']}, relay from `{result['relay_from']}`; {result['machine']['date (UTC)']} "
             f"UTC; Python {result['machine']['python']}; {result['requests']:,} requests of each kind after "
             f"{result['warmup']:,} to warm up; the relay in the measuring process, the sim and the client apart.",
             "", "| kind | kept, bytes per request | blocks per request | left to the collector, objects per request |",
             "|---|---:|---:|---:|"]  # fmt: skip
    for kind, row in result["kinds"].items():
        lines.append(f"| {kind} | {row['kept']['bytes_per_request']:,.1f} | {row['kept']['blocks_per_request']:,.2f} "
                     f"| {row['garbage']['objects_per_request']:,.1f} |")  # fmt: skip
    for kind, row in result["kinds"].items():
        lines += ["", f"## {kind}", "", "Kept (innermost frames first):", ""]
        for top in row["kept"]["top"]:
            lines.append(f"- {top['bytes_per_request']:,.1f} B per request ({top['blocks']:+,d} blocks): "
                         + " ← ".join(f"`{w}`" for w in top["where"]))  # fmt: skip
        shown = ", ".join(f"`{name}` {per:.2f}" for name, per in row["garbage"]["by_type"])
        lines += ["", f"Left to the collector, per request: {shown}"]
    lines.append("")
    return "\n".join(lines)


def main(argv: Iterable[str] | None = None) -> int:
    names = [k.name for k in dict.fromkeys(MIX)]
    p = argparse.ArgumentParser(prog="python -m bench.retention", description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=2000, help="requests of each kind measured (default 2,000)")
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--connections", type=int, default=10)
    p.add_argument("--kinds", type=lambda s: s.split(","), default=names, help=f"of {', '.join(names)}")
    p.add_argument("--relay-from", type=Path, help="import the relay (proxy/, wire/) from this checkout")
    p.add_argument("--title", default="the relay of this checkout")
    p.add_argument("--out", type=Path, default=Path("results/retention"))
    args = p.parse_args(list(argv) if argv is not None else None)
    if args.relay_from is not None:
        sys.path.insert(0, str(args.relay_from.resolve()))
        for name in [m for m in sys.modules if m.split(".")[0] in ("proxy", "wire")]:
            del sys.modules[name]
    args.out.mkdir(parents=True, exist_ok=True)
    machine = machine_facts()
    sys.stderr = open(os.devnull, "w")  # the relay's access log  # noqa: SIM115
    tracemalloc.start(FRAMES)
    clock = trio.testing.MockClock(rate=1.0)  # real time, and the jumps of _settled
    kinds = trio.run(_measure, args, args.out, clock, clock=clock)
    tracemalloc.stop()
    result = {"title": args.title, "command": "python -m bench.retention " + shlex.join(list(argv) if argv is not None
                                                                                          else sys.argv[1:]),
              "git": git_commit(), "relay_from": str(args.relay_from or "."), "machine": machine,
              "requests": args.requests, "warmup": args.warmup, "kinds": kinds}  # fmt: skip
    (args.out / "retention.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "README.md").write_text(render(result))
    (args.out / "sim.log").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
