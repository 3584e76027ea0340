"""One run split over several machines: ``--shard i/N``, its agreed start, and what each shard leaves for the merge.

Shard ``i`` of ``N`` (0-based, so a Kubernetes Indexed Job's ``$JOB_COMPLETION_INDEX`` is ``i``) runs the lanes
``i * W .. i * W + W - 1`` of ``N * W`` (:mod:`loadtest.shapes`; every shard runs the same command but for
``--shard``): its share of the slots, of ``--requests``, of ``--rate`` and of ``--max-concurrency``, and the
run's requests numbered accordingly (:mod:`loadtest.workload`), so N shards send what one run would have sent.

The start, one of:

- ``--start-at TIME`` (ISO 8601 with a zone, or Unix seconds): each shard starts when *its own* wall clock reads
  TIME; as well aligned as the machines' clocks are (NTP: usually a millisecond or better; not measured);
- ``--coordinator HOST:PORT``: a barrier and a clock exchange (:mod:`loadtest.coordinator`); each shard starts
  when *the coordinator's* clock reads the start it handed out, and records its measured offset.

Each shard writes its ordinary result directory plus ``shard.json`` (:func:`write_shard`: the run without its
records, and :class:`ShardClock`) and always ``requests.jsonl``; ``loadtest merge DIR...``
(:mod:`loadtest.merge`) joins them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import trio

from loadtest.client import now_ns
from loadtest.record import ProcessUsage, RunData, SessionRecord
from wire import split_bind

__all__ = [
    "SHARD_FILE", "SHARD_SCHEMA", "ShardClock", "ShardStart", "StartMissed", "add_arguments", "check_arguments",
    "coordinate_main", "load_shard", "parse_shard", "parse_start_at", "write_shard",
]

SHARD_FILE = "shard.json"
SHARD_SCHEMA = 1


class StartMissed(RuntimeError):
    """The agreed start had passed before this shard was ready to start."""


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` -> ``(i, N)``, ``0 <= i < N``."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m:
        raise ValueError(f"--shard takes i/N (0-based i, e.g. 0/4), not {text!r}")
    i, n = int(m.group(1)), int(m.group(2))
    if not 0 <= i < n:
        raise ValueError(f"--shard {text}: need 0 <= i < N (shards are numbered from 0)")
    return i, n


def parse_start_at(text: str) -> int:
    """``2026-12-06T12:00:00Z`` (ISO 8601, with a zone) or Unix seconds (``1765022400``, ``@1765022400.5``) -> ns."""
    t = text.strip().removeprefix("@")
    m = re.fullmatch(r"(\d+)(?:\.(\d{0,9})\d*)?", t)
    if m:  # exactly, in integers: a float holds Unix nanoseconds to 256 ns only
        return int(m.group(1)) * 10**9 + int((m.group(2) or "").ljust(9, "0"))
    try:
        when = datetime.fromisoformat(t)
    except ValueError:
        raise ValueError(f"--start-at {text!r}: give ISO 8601 with a zone (2026-12-06T12:00:00Z) "
                         "or Unix seconds") from None
    if when.tzinfo is None:
        raise ValueError(f"--start-at {text!r}: give a zone (Z or +01:00); machines may not share one")
    since = when - datetime(1970, 1, 1, tzinfo=UTC)
    return (since.days * 86400 + since.seconds) * 10**9 + since.microseconds * 1000


@dataclass
class ShardClock:
    """How one shard started: the agreed instant, this machine's clock against the reference, its lateness."""

    shard: int
    shards: int
    method: str  # "start-at", "coordinator" or "own" (no agreed start: each shard when launched)
    start_unix_ns: int | None = None  # the agreed start (on the coordinator's clock for "coordinator")
    offset_ns: int | None = None  # reference (coordinator) clock minus this machine's, measured
    uncertainty_ns: int | None = None  # half the round trip of that measurement
    t0_ns: int = 0  # the start on this machine's monotonic clock
    wall_at_t0_ns: int = 0  # this machine's wall clock at t0
    late_ns: int = 0  # how long after t0 the start was known (> 0: the first sessions started late)
    host: str = ""

    def started(self, t0_ns: int) -> int:
        """Record the start, now known, at monotonic ``t0_ns``; return it."""
        wall, mono = time.time_ns(), now_ns()
        self.t0_ns = t0_ns
        self.wall_at_t0_ns = wall - (mono - t0_ns)
        self.late_ns = max(0, mono - t0_ns)
        self.host = socket.gethostname()
        return t0_ns

    def start_at(self) -> int:
        """The monotonic instant at which this machine's wall clock reads ``start_unix_ns``; StartMissed if past."""
        assert self.start_unix_ns is not None
        wall, mono = time.time_ns(), now_ns()
        ahead = self.start_unix_ns - wall
        if ahead < 0:
            raise StartMissed(f"--start-at passed {-ahead / 1e9:.3f} s before this shard was ready; "
                              "give a later time (every shard must be up and ready before it)")
        return mono + ahead


def _run_json(run: RunData) -> dict[str, Any]:
    d = {name: getattr(run, name) for name in RunData.__dataclass_fields__ if name != "records"}
    d["processes"] = [asdict(p) for p in run.processes]
    d["fd_limit"] = list(run.fd_limit)
    return d


def write_shard(out_dir: str | os.PathLike[str], run: RunData, clock: ShardClock, machine: dict[str, Any]) -> Path:
    """``shard.json`` next to the shard's result.json (requests.jsonl holds its records)."""
    path = Path(out_dir) / SHARD_FILE
    doc = {"schema": SHARD_SCHEMA, "shard": asdict(clock), "machine": machine, "run": _run_json(run)}
    path.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def load_shard(directory: str | os.PathLike[str]) -> tuple[ShardClock, RunData, dict[str, Any]]:
    """A shard's clock, its run with its records, and its machine facts, from its result directory."""
    d = Path(directory)
    try:
        doc = json.loads((d / SHARD_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{d}: no {SHARD_FILE} (was it run with --shard i/N?)") from None
    if doc.get("schema") != SHARD_SCHEMA:
        raise ValueError(f"{d / SHARD_FILE}: schema {doc.get('schema')!r}, this loadtest reads {SHARD_SCHEMA}")
    try:
        with open(d / "requests.jsonl", encoding="utf-8") as f:
            records = [SessionRecord.from_json(json.loads(line)) for line in f if line.strip()]
    except FileNotFoundError:
        raise ValueError(f"{d}: no requests.jsonl: a shard's records are what the merge adds up") from None
    fields = RunData.__dataclass_fields__
    r = {k: v for k, v in doc["run"].items() if k in fields}
    r["processes"] = [ProcessUsage(**p) for p in r.get("processes", [])]
    r["fd_limit"] = tuple(r.get("fd_limit", (0, 0)))
    run = RunData(records=records, **r)
    return ShardClock(**doc["shard"]), run, doc.get("machine") or {}


# --- the command line ----------------------------------------------------------------------------------


def _arg(parse):
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("several machines (docs/loadtest.md, 'Several machines'; then loadtest merge DIR...)")
    g.add_argument("--shard", type=_arg(parse_shard), metavar="I/N",
                   help="run shard I (from 0) of N: its share of the load; every shard runs the same command")
    g.add_argument("--start-at", type=_arg(parse_start_at), metavar="TIME",
                   help="start when this machine's clock reads TIME (ISO 8601 with a zone, or Unix seconds)")
    g.add_argument("--coordinator", type=_arg(split_bind), metavar="HOST:PORT",
                   help="start when every shard has joined this coordinator (loadtest coordinate), by its clock")
    g.add_argument("--coordinator-bind", type=_arg(split_bind), metavar="HOST:PORT",
                   help="be the coordinator too (one shard, e.g. index 0), listening on HOST:PORT; this shard "
                   "joins it, so every shard may be given the same --coordinator")
    g.add_argument("--coordinator-lead", type=float, default=2.0, metavar="S",
                   help="with --coordinator-bind: start this many seconds after the last shard joined (default 2)")


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors of the shard flags; sets ``args.shard_start`` (a :class:`ShardStart`, or None)."""
    args.shard_start = None
    if args.shard is None:
        for flag in ("start_at", "coordinator", "coordinator_bind"):
            if getattr(args, flag) is not None:
                parser.error(f"--{flag.replace('_', '-')} needs --shard I/N")
        return
    if args.start_at is not None and (args.coordinator or args.coordinator_bind):
        parser.error("--start-at and --coordinator exclude each other")
    if args.baseline:
        parser.error("--baseline runs two phases one after the other, which shards cannot line up: "
                     "leave it out of a sharded run")
    if args.no_save_requests:
        parser.error("a shard keeps requests.jsonl: its records are what loadtest merge adds up")
    if args.start_at is not None and args.start_at < time.time_ns():
        parser.error(f"--start-at is {(time.time_ns() - args.start_at) / 1e9:.1f} s in the past")
    i, n = args.shard
    method = "start-at" if args.start_at is not None else (
        "coordinator" if args.coordinator or args.coordinator_bind else "own")
    clock = ShardClock(shard=i, shards=n, method=method, start_unix_ns=args.start_at)
    args.shard_start = ShardStart(clock, args.coordinator, args.coordinator_bind, args.coordinator_lead)


class ShardStart:
    """A shard's start (the Runner's ``start``): by ``--start-at``, by the coordinator, or at once."""

    def __init__(self, clock: ShardClock, coordinator: tuple[str, int] | None = None,
                 bind: tuple[str, int] | None = None, lead_s: float = 2.0) -> None:
        self.clock = clock
        self.coordinator = coordinator
        self.bind = bind
        self.lead_s = lead_s

    @property
    def labels(self) -> dict[str, str]:
        """The live metrics' labels: which shard this is."""
        return {"shard": f"{self.clock.shard}/{self.clock.shards}"}

    async def serve(self, nursery: trio.Nursery) -> None:
        """``--coordinator-bind``: the coordinator in ``nursery``; this shard joins it."""
        if self.bind is None:
            return
        from loadtest.coordinator import serve_coordinator

        host, port = self.bind
        address = await nursery.start(partial(serve_coordinator, host, port, self.clock.shards,
                                              lead_s=self.lead_s, on_join=partial(_announce, self.clock.shards)))
        print(f"coordinator listening on {address}", flush=True)
        bound = int(address.rpartition(":")[2])  # this shard joins its own coordinator, whatever --coordinator says
        self.coordinator = ("127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host, bound)

    async def __call__(self) -> int:
        clock = self.clock
        if clock.method == "coordinator":
            from loadtest.coordinator import join

            assert self.coordinator is not None
            agreed = await join(*self.coordinator, clock.shard, clock.shards)
            clock.start_unix_ns, clock.offset_ns = agreed.start_unix_ns, agreed.offset_ns
            clock.uncertainty_ns = agreed.rtt_ns // 2
            return clock.started(agreed.t0_ns)
        if clock.method == "start-at":
            return clock.started(clock.start_at())
        return clock.started(now_ns())


def coordinate_main(argv: list[str]) -> int:
    """``loadtest coordinate --bind HOST:PORT --shards N``: the shards' barrier and clock reference."""
    from loadtest.coordinator import serve_coordinator

    p = argparse.ArgumentParser(prog="loadtest coordinate", description="wait for N shards (--shard i/N "
                                "--coordinator HOST:PORT), measure their clocks, give them one start; then exit")
    p.add_argument("--bind", type=_arg(split_bind), required=True, metavar="HOST:PORT")
    p.add_argument("--shards", type=int, required=True, metavar="N")
    p.add_argument("--lead", type=float, default=2.0, metavar="S", help="start S seconds after the last shard "
                   "joined (default 2)")
    args = p.parse_args(argv)
    if args.shards < 1:
        p.error("--shards must be positive")

    async def run() -> None:
        done: list[tuple[int, list]] = []

        async def serve(task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
            done.append(await serve_coordinator(*args.bind, args.shards, lead_s=args.lead,
                                                on_join=partial(_announce, args.shards), task_status=task_status))

        async with trio.open_nursery() as nursery:
            address = await nursery.start(serve)
            print(f"coordinator listening on {address}, waiting for {args.shards} shard(s)", flush=True)
        start_ns, joined = done[0]
        offsets = [j.offset_ns / 1e6 for j in joined]
        print(f"start at {datetime.fromtimestamp(start_ns / 1e9).astimezone().isoformat(timespec='milliseconds')}; "
              f"the shards' clocks disagree by up to {max(offsets) - min(offsets):.3f} ms", flush=True)

    try:
        trio.run(run)
    except KeyboardInterrupt:
        return 130
    return 0


def _announce(shards: int, j) -> None:
    print(f"shard {j.shard}/{shards} ready ({j.host}, {j.peer}): clock offset {j.offset_ns / 1e6:+.3f} ms "
          f"± {j.rtt_ns / 2e6:.3f}", flush=True)
