"""Load shapes: closed loop (``--concurrency``) and open loop (``--rate``), in one or many processes.

One nursery per process owns every session. :class:`WorkerLoad` runs one process's share of one phase;
:class:`Runner` runs the phases (``direct`` for ``--baseline``, then ``relay``), in-process for one
worker or as ``--workers W`` child processes (``python -m loadtest.runner``), and returns the
:class:`~loadtest.record.RunData` the report is built from. ``Runner.interrupt()`` (SIGINT/SIGTERM)
stops the load at once and still returns every record made so far, with ``interrupted=True``.

Worker protocol (child processes): the parent writes one JSON line ``{"spec": path, "out": path,
"worker": i, "workers": W}`` on stdin; the child answers ``ready``, then reads the common start time
``t0_ns`` (CLOCK_MONOTONIC, shared by all processes on the host) as the next line, runs, prints
progress deltas as JSON lines, and pickles its :class:`WorkerResult` to ``out``.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

from loadtest.client import Endpoint, now_ns
from loadtest.fdlimit import raise_nofile_limit
from loadtest.progress import LiveStats
from loadtest.record import ProcessUsage, RunData, SessionRecord
from loadtest.session import ConnectionSlot, RequestSpec, RetryCounter, build_request, run_session

SATURATION = 0.85  # CPU seconds per wall second of one process: above this it measures its own queueing
FD_RESERVE = 64  # fds a load process needs besides its sockets (stdio, pipes, trio's wakeup fds, files)
PROGRESS_INTERVAL_S = 0.5


@dataclass
class LoadConfig:
    """What to send and how: everything a worker process needs (pickled to it)."""

    url: str
    concurrency: int = 1
    requests: int | None = None
    duration_s: float | None = None
    rate: float | None = None
    max_concurrency: int | None = None
    ramp_up_s: float = 0.0
    warmup_s: float = 0.0
    keepalive: bool = True
    timeout_s: float = 120.0
    stream: bool = True
    ndjson: bool = False
    model: str = "moonshot-v1-8k"
    prompts: list[list[dict[str, Any]]] = field(default_factory=lambda: [[{"role": "user", "content": "Hello"}]])
    max_tokens: int | None = None
    seed: int = 0
    api_key: str | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)
    baseline_url: str | None = None  # --baseline: the same load against this URL first, as target "direct"

    def describe(self) -> dict[str, Any]:
        """The config as recorded in result.json (the dataset summarised, not copied)."""
        d = asdict(self)
        d["prompts"] = len(self.prompts)
        d["api_key"] = "set" if self.api_key else None
        d["mode"] = "open" if self.rate else "closed"
        return d

    def share(self, total: int | None, worker: int, workers: int) -> int | None:
        if total is None:
            return None
        return total // workers + (1 if worker < total % workers else 0)


@dataclass
class WorkerResult:
    records: list[SessionRecord]
    connect_retries: int
    interrupted: bool
    cpu_s: float
    wall_s: float
    peak_rss_bytes: int
    pid: int
    fd_limit: tuple[int, int]


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class WorkerLoad:
    """One process's share of one phase: slots ``worker, worker + W, ...`` of the closed loop, or
    rate ``R / W`` of the open loop (a sum of independent Poisson processes is Poisson with rate R)."""

    def __init__(
        self, cfg: LoadConfig, *, target: str, url: str, worker: int = 0, workers: int = 1,
        live: LiveStats | None = None,
    ) -> None:
        self.cfg = cfg
        self.target = target
        self.endpoint = Endpoint.from_url(url)
        self.worker = worker
        self.workers = workers
        self.live = live if live is not None else LiveStats()
        self.records: list[SessionRecord] = []
        self.retries = RetryCounter()
        self.interrupted = False
        self._scope: trio.CancelScope | None = None
        self._specs: dict[int, RequestSpec] = {}
        self._rng = random.Random(f"{cfg.seed}/{worker}/{target}")
        self._tickets = cfg.share(cfg.requests, worker, workers)

    def interrupt(self) -> None:
        self.interrupted = True
        if self._scope is not None:
            self._scope.cancel()

    # -- request choice ----------------------------------------------------------------------------

    def _spec(self) -> RequestSpec:
        cfg = self.cfg
        i = self._rng.randrange(len(cfg.prompts)) if len(cfg.prompts) > 1 else 0
        spec = self._specs.get(i)
        if spec is None:
            spec = self._specs[i] = build_request(
                self.endpoint, model=cfg.model, messages=cfg.prompts[i], max_tokens=cfg.max_tokens,
                stream=cfg.stream, ndjson=cfg.ndjson, api_key=cfg.api_key, extra=cfg.extra_body,
            )
        return spec

    # -- clock -------------------------------------------------------------------------------------

    def _clock(self, t0_ns: int) -> None:
        # trio's clock and CLOCK_MONOTONIC tick together; one offset converts between them.
        self._offset = trio.current_time() - time.monotonic_ns() / 1e9
        self._t0_ns = t0_ns
        self._warmup_end_ns = t0_ns + int(self.cfg.warmup_s * 1e9)
        self._end_ns = None if self.cfg.duration_s is None else self._warmup_end_ns + int(self.cfg.duration_s * 1e9)

    def _trio_time(self, ns: int) -> float:
        return ns / 1e9 + self._offset

    # -- sessions ----------------------------------------------------------------------------------

    async def _one(self, rec: SessionRecord, slot: ConnectionSlot) -> None:
        self.records.append(rec)
        live = self.live
        live.started()
        try:
            await run_session(
                self.endpoint, self._spec(), rec, slot,
                timeout_s=self.cfg.timeout_s, keepalive=self.cfg.keepalive, retries=self.retries,
            )
        finally:
            live.finished(rec.error_kind is None, rec.ttfc_ms, rec.unverified)

    def _ticket(self, first: bool) -> bool:
        """May a closed-loop slot start another session now?"""
        if self._tickets is not None:
            if self._tickets <= 0:
                return False
            self._tickets -= 1
            return True
        if self._end_ns is not None:
            return now_ns() < self._end_ns
        return first

    async def _slot(self, index: int, start_ns: int) -> None:
        await trio.sleep_until(self._trio_time(start_ns))
        slot = ConnectionSlot()
        intended = start_ns
        seq = 0
        try:
            while self._ticket(seq == 0):
                rec = SessionRecord(
                    worker=self.worker, slot=index, seq=seq, target=self.target, intended_ns=intended,
                    warmup=intended < self._warmup_end_ns,
                )
                await self._one(rec, slot)
                intended = rec.end_ns  # the slot is free again: the next session is due now
                seq += 1
        finally:
            with trio.CancelScope(shield=True):
                await slot.aclose()

    async def _closed_loop(self, nursery: trio.Nursery) -> None:
        n = self.cfg.concurrency
        ramp_ns = int(self.cfg.ramp_up_s * 1e9)
        for index in range(self.worker, n, self.workers):
            start = self._t0_ns + (ramp_ns * index // n if n > 1 else 0)
            nursery.start_soon(self._slot, index, start)

    async def _arrival(self, seq: int, intended_ns: int, cap: trio.Semaphore, pool: list[ConnectionSlot]) -> None:
        async with cap:
            slot = pool.pop() if pool else ConnectionSlot()
            rec = SessionRecord(
                worker=self.worker, slot=-1, seq=seq, target=self.target, intended_ns=intended_ns,
                warmup=intended_ns < self._warmup_end_ns,
            )
            try:
                await self._one(rec, slot)
            finally:
                if slot.conn is not None:
                    pool.append(slot)

    async def _open_loop(self, nursery: trio.Nursery, pool: list[ConnectionSlot]) -> None:
        cfg = self.cfg
        assert cfg.rate
        rate = cfg.rate / self.workers
        cap_total = cfg.max_concurrency or cfg.concurrency
        cap = trio.Semaphore(max(1, self.cfg.share(cap_total, self.worker, self.workers) or 1))
        arrivals = self._rng_arrivals = random.Random(f"{cfg.seed}/{self.worker}/arrivals")
        t = self._t0_ns
        seq = 0
        while True:
            if self._tickets is not None:
                if self._tickets <= 0:
                    break
            elif self._end_ns is None:
                break
            t += int(arrivals.expovariate(rate) * 1e9)
            if self._end_ns is not None and t >= self._end_ns:
                break
            if self._tickets is not None:
                self._tickets -= 1
            await trio.sleep_until(self._trio_time(t))
            nursery.start_soon(self._arrival, seq, t, cap, pool)
            seq += 1

    async def run(self, t0_ns: int) -> None:
        """Run this share of the load from ``t0_ns``; returns when every session ended or on interrupt."""
        self._clock(t0_ns)
        pool: list[ConnectionSlot] = []
        with trio.CancelScope() as self._scope:
            try:
                async with trio.open_nursery() as nursery:
                    if self.cfg.rate:
                        await self._open_loop(nursery, pool)
                    else:
                        await self._closed_loop(nursery)
            finally:
                with trio.CancelScope(shield=True):
                    for slot in pool:
                        await slot.aclose()


# --- worker processes --------------------------------------------------------------------------------


class _ReportingStats(LiveStats):
    """A child's LiveStats that also remembers what changed since the last progress message."""

    __slots__ = ("_sent", "_new_ttfc")

    def __init__(self) -> None:
        super().__init__()
        self._sent = (0, 0, 0, 0)
        self._new_ttfc: list[float] = []

    def add_ttfc(self, ttfc_ms: float) -> None:
        self._new_ttfc.append(ttfc_ms)

    def delta(self) -> dict[str, Any]:
        now = (self.open, self.completed, self.unverified, self.failed)
        keys = ("open", "completed", "unverified", "failed")
        d = {k: a - b for k, a, b in zip(keys, now, self._sent, strict=True)}
        d["ttfc"] = [round(t, 1) for t in self._new_ttfc]
        self._sent = now
        self._new_ttfc = []
        return d


async def _worker_async(cfg: LoadConfig, target: str, url: str, worker: int, workers: int, t0_ns: int,
                        report: bool) -> WorkerResult:
    live = _ReportingStats()
    load = WorkerLoad(cfg, target=target, url=url, worker=worker, workers=workers, live=live)
    cpu0, wall0 = _cpu_s(), time.monotonic()

    async def progress() -> None:
        while True:
            await trio.sleep(PROGRESS_INTERVAL_S)
            print(json.dumps(live.delta()), flush=True)

    async with trio.open_nursery() as nursery:
        if report:
            nursery.start_soon(progress)

        async def on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    load.interrupt()

        nursery.start_soon(on_signal)
        await load.run(t0_ns)
        nursery.cancel_scope.cancel()
    if report:
        print(json.dumps(live.delta()), flush=True)
    return WorkerResult(
        records=load.records, connect_retries=load.retries.n, interrupted=load.interrupted,
        cpu_s=_cpu_s() - cpu0, wall_s=time.monotonic() - wall0, peak_rss_bytes=_peak_rss(), pid=os.getpid(),
        fd_limit=resource.getrlimit(resource.RLIMIT_NOFILE),
    )


def worker_main() -> int:
    """Entry of a ``--workers`` child process (see the module docstring for the protocol)."""
    job = json.loads(sys.stdin.readline())
    with open(job["spec"], "rb") as f:
        cfg, target, url = pickle.load(f)
    raise_nofile_limit()
    print("ready", flush=True)
    line = sys.stdin.readline()
    if not line.strip():
        return 1  # the parent gave up before the start
    result = trio.run(_worker_async, cfg, target, url, job["worker"], job["workers"], int(line), True)
    tmp = job["out"] + ".tmp"
    with open(tmp, "wb") as f:
        pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, job["out"])
    return 0


# --- the run -----------------------------------------------------------------------------------------


class Runner:
    """All phases of one run, in this process or in ``workers`` children; see the module docstring."""

    def __init__(self, cfg: LoadConfig, *, workers: int = 1, live: LiveStats | None = None,
                 command: list[str] | None = None, slo: dict[str, float] | None = None) -> None:
        self.cfg = cfg
        self.workers = max(1, workers)
        self.live = live if live is not None else LiveStats()
        self.command = command if command is not None else [sys.executable, "-m", "loadtest"]
        self.slo = slo
        self.interrupted = False
        self.warnings: list[str] = []
        self._current: WorkerLoad | None = None
        self._children: list[trio.Process] = []

    def interrupt(self) -> None:
        """Stop now (from a signal handler task or a test); :meth:`run` still returns the partial RunData."""
        self.interrupted = True
        if self._current is not None:
            self._current.interrupt()
        for p in self._children:
            if p.returncode is None:
                try:
                    p.send_signal(signal.SIGINT)
                except ProcessLookupError:
                    pass

    def phases(self) -> list[tuple[str, str]]:
        out = []
        if self.cfg.baseline_url:
            out.append(("direct", self.cfg.baseline_url))
        out.append(("relay", self.cfg.url))
        return out

    def planned_sessions(self) -> int | None:
        cfg = self.cfg
        if cfg.requests is not None:
            return cfg.requests
        if cfg.duration_s is None and not cfg.rate:
            return cfg.concurrency
        return None

    def _check_fds(self, fd_limit: tuple[int, int]) -> None:
        per_process = math.ceil(self._open_cap() / self.workers)
        if fd_limit[0] - FD_RESERVE < per_process:
            self.warnings.append(
                f"fd soft limit {fd_limit[0]} (hard {fd_limit[1]}) is too low for {per_process} concurrent "
                f"sessions per load process: connects will fail with EMFILE; use --workers "
                f"{math.ceil(self._open_cap() / max(1, fd_limit[0] - FD_RESERVE))} or more"
            )

    def _open_cap(self) -> int:
        cfg = self.cfg
        return (cfg.max_concurrency or cfg.concurrency) if cfg.rate else cfg.concurrency

    async def run(self) -> RunData:
        """Run every phase; never raises for a failed session; returns on interrupt too."""
        fd_limit = raise_nofile_limit()
        self._check_fds(fd_limit)
        started_unix = time.time()
        t0 = now_ns()
        records: list[SessionRecord] = []
        processes: list[ProcessUsage] = []
        retries = 0
        self.live.planned = self.planned_sessions()
        for target, url in self.phases():
            if self.interrupted:
                break
            self.live.phase = target if len(self.phases()) > 1 else ""
            if self.workers == 1:
                results = [await self._run_here(target, url)]
                role = "loadtest"
            else:
                results = await self._run_children(target, url)
                role = "loadtest-worker"
            for r in results:
                records.extend(r.records)
                retries += r.connect_retries
                processes.append(ProcessUsage(role=role, pid=r.pid, cpu_s=r.cpu_s, peak_rss_bytes=r.peak_rss_bytes))
                if r.wall_s > 1 and r.cpu_s / r.wall_s >= SATURATION:
                    self.warnings.append(
                        f"load generator near saturation: process {r.pid} ({target}) used "
                        f"{r.cpu_s / r.wall_s:.0%} of a core; latencies include its own scheduling delay "
                        f"— add --workers or lower the load"
                    )
                if r.interrupted:
                    self.interrupted = True
        t_end = now_ns()
        processes = _merge_usage(processes)
        if retries:
            # The same words as loadtest.report's derived warning, so result.json lists it once.
            self.warnings.append(f"{retries} connect retries")
        failed = sum(1 for r in records if r.error_kind is not None and not r.warmup)
        if failed:
            measured = sum(1 for r in records if not r.warmup)
            self.warnings.append(f"{failed} of {measured} sessions failed (see errors by kind)")
        return RunData(
            command=list(self.command), config=self.cfg.describe() | {"workers": self.workers},
            started_unix=started_unix, t0_ns=t0, t_end_ns=t_end, records=records, processes=processes,
            warnings=list(self.warnings), interrupted=self.interrupted, slo=self.slo, fd_limit=fd_limit,
            connect_retries=retries,
        )

    async def _run_here(self, target: str, url: str) -> WorkerResult:
        load = self._current = WorkerLoad(self.cfg, target=target, url=url, live=self.live)
        if self.interrupted:
            load.interrupt()
        cpu0, wall0 = _cpu_s(), time.monotonic()
        try:
            await load.run(now_ns())
        finally:
            self._current = None
        return WorkerResult(
            records=load.records, connect_retries=load.retries.n, interrupted=load.interrupted,
            cpu_s=_cpu_s() - cpu0, wall_s=time.monotonic() - wall0, peak_rss_bytes=_peak_rss(),
            pid=os.getpid(), fd_limit=resource.getrlimit(resource.RLIMIT_NOFILE),
        )

    async def _run_children(self, target: str, url: str) -> list[WorkerResult]:
        with tempfile.TemporaryDirectory(prefix="loadtest-") as tmp:
            spec = Path(tmp) / "spec.pickle"
            spec.write_bytes(pickle.dumps((self.cfg, target, url)))
            outs = [Path(tmp) / f"worker-{i}.pickle" for i in range(self.workers)]
            async with trio.open_nursery() as nursery:
                procs = []
                try:
                    for _ in range(self.workers):
                        p = await trio.lowlevel.open_process(
                            [sys.executable, "-m", "loadtest.runner"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                        )
                        procs.append(p)
                        self._children.append(p)
                    readers = [_LineReader(p.stdout) for p in procs]
                    for i, p in enumerate(procs):
                        job = {"spec": str(spec), "out": str(outs[i]), "worker": i, "workers": self.workers}
                        await p.stdin.send_all((json.dumps(job) + "\n").encode())
                    for r in readers:
                        if await r.readline() != b"ready":
                            raise RuntimeError("a load worker failed to start")
                    if self.interrupted:
                        raise _Stopped
                    # Everyone starts at the same instant, a little ahead so the line reaches them all.
                    t0 = now_ns() + 50_000_000
                    for p in procs:
                        await p.stdin.send_all(f"{t0}\n".encode())
                    for r in readers:
                        nursery.start_soon(self._pump, r)
                    for p in procs:
                        await p.wait()
                except _Stopped:
                    pass
                finally:
                    with trio.CancelScope(shield=True):
                        for p in procs:
                            if p.stdin is not None:
                                await p.stdin.aclose()
                        for p in procs:
                            with trio.move_on_after(10):
                                await p.wait()
                            if p.returncode is None:
                                p.kill()
                                await p.wait()
                    self._children = []
            results = []
            for i, out in enumerate(outs):
                if out.exists():
                    results.append(pickle.loads(out.read_bytes()))
                else:
                    self.warnings.append(f"load worker {i} returned no records (exit {procs[i].returncode})")
                    self.interrupted = True
            return results

    async def _pump(self, reader: _LineReader) -> None:
        while True:
            line = await reader.readline()
            if line is None:
                return
            try:
                self.live.merge_delta(json.loads(line))
            except ValueError:
                continue


class _Stopped(Exception):
    pass


class _LineReader:
    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buf = b""

    async def readline(self) -> bytes | None:
        while b"\n" not in self._buf:
            data = await self._stream.receive_some(65536)
            if not data:
                if self._buf:
                    line, self._buf = self._buf, b""
                    return line.strip()
                return None
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        return line.strip()


def _merge_usage(processes: list[ProcessUsage]) -> list[ProcessUsage]:
    """One entry per process: the in-process runner measures each phase separately."""
    merged: dict[tuple[str, int], ProcessUsage] = {}
    for p in processes:
        key = (p.role, p.pid)
        if key in merged:
            m = merged[key]
            m.cpu_s += p.cpu_s
            m.peak_rss_bytes = max(m.peak_rss_bytes, p.peak_rss_bytes)
        else:
            merged[key] = ProcessUsage(p.role, p.pid, p.cpu_s, p.peak_rss_bytes, p.idle_rss_bytes)
    return list(merged.values())


async def run_with_signals(runner: Runner, *, show_progress: bool = False) -> RunData:
    """``runner.run()`` with SIGINT/SIGTERM turned into ``runner.interrupt()`` and optional live progress."""
    result: list[RunData] = []
    async with trio.open_nursery() as nursery:

        async def on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    runner.interrupt()

        nursery.start_soon(on_signal)
        if show_progress:
            from loadtest.progress import show

            nursery.start_soon(show, runner.live)
        result.append(await runner.run())
        nursery.cancel_scope.cancel()
    return result[0]


if __name__ == "__main__":
    # Run the copy imported as loadtest.runner, so the pickled WorkerResult names that module, not __main__.
    from loadtest.runner import worker_main as _worker_main

    sys.exit(_worker_main())
