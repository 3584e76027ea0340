"""One load run: its phases (``direct`` for ``--baseline``, then ``relay``), in this process or in worker processes.

:class:`Runner` runs each phase as one :class:`~loadtest.shapes.WorkerLoad` here (``workers=1``) or as
``--workers W`` child processes (:mod:`loadtest.workers`), and returns the :class:`~loadtest.record.RunData`
the report is built from. ``Runner.interrupt()`` (SIGINT/SIGTERM) stops the load at once and still returns
every record made so far, with ``interrupted=True``. The load shapes themselves (closed and open loop) are
:mod:`loadtest.shapes`. ``start`` (a shard's agreed start, :mod:`loadtest.shards`) is awaited once everything
is ready to send, and gives the first phase's start on the monotonic clock; without it a phase starts at once.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Awaitable, Callable

import trio

from loadtest.client import now_ns
from loadtest.progress import LiveStats
from loadtest.record import ProcessUsage, RunData, SessionRecord
from loadtest.shapes import LoadConfig, WorkerLoad
from loadtest.workers import WorkerProcesses, WorkerResult, cpu_s, result_of
from wire import STOP_SIGNALS, raise_nofile_limit

__all__ = ["LoadConfig", "Runner", "run_with_signals"]

SATURATION = 0.85  # CPU seconds per wall second of one process: above this it measures its own queueing
FD_RESERVE = 64  # fds a load process needs besides its sockets (stdio, pipes, trio's wakeup fds, files)


class Runner:
    """All phases of one run, in this process or in ``workers`` children; see the module docstring."""

    def __init__(self, cfg: LoadConfig, *, workers: int = 1, live: LiveStats | None = None,
                 command: list[str] | None = None, slo: dict[str, float] | None = None,
                 start: Callable[[], Awaitable[int]] | None = None) -> None:
        self.cfg = cfg
        self.workers = max(1, workers)
        self.live = live if live is not None else LiveStats()
        self.command = command if command is not None else [sys.executable, "-m", "loadtest"]
        self.slo = slo
        self.interrupted = False
        self.warnings: list[str] = []
        self._current: WorkerLoad | None = None
        self._procs: WorkerProcesses | None = None
        self._start = start
        self._waiting = trio.CancelScope()  # the wait for ``start``: an interrupt ends it
        self.t0_ns: int | None = None  # the agreed start, once ``start`` gave it

    async def _agreed_start(self) -> int:
        with self._waiting:
            self.t0_ns = await self._start()  # type: ignore[misc]
            return self.t0_ns
        return now_ns()  # interrupted while waiting: the load stops at once

    def interrupt(self) -> None:
        """Stop now (from a signal handler task or a test); :meth:`run` still returns the partial RunData."""
        self.interrupted = True
        self._waiting.cancel()
        if self._current is not None:
            self._current.interrupt()
        if self._procs is not None:
            self._procs.interrupt()

    def phases(self) -> list[tuple[str, str]]:
        out = []
        if self.cfg.baseline_url:
            out.append(("direct", self.cfg.baseline_url))
        out.append(("relay", self.cfg.url))
        return out

    def planned_sessions(self) -> int | None:
        cfg = self.cfg
        total = cfg.requests if cfg.requests is not None else (
            cfg.concurrency if cfg.duration_s is None and not cfg.rate else None)
        if total is None or cfg.shards == 1:
            return total
        lanes = cfg.shards * self.workers  # this shard's lanes (loadtest.shapes)
        return sum(cfg.share(total, cfg.shard * self.workers + w, lanes) or 0 for w in range(self.workers))

    def _check_fds(self, fd_limit: tuple[int, int]) -> None:
        per_process = math.ceil(self._open_cap() / (self.workers * self.cfg.shards))
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
        lag: list[float] = []
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
                lag.extend(r.loop_lag_ms or ())
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
        if self.t0_ns is not None:  # a shard's run is measured from the agreed start, not from its launch
            started_unix += (self.t0_ns - t0) / 1e9
            t0 = self.t0_ns
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
            connect_retries=retries, cores=os.cpu_count(), loop_lag_ms=lag,
        )

    async def _run_here(self, target: str, url: str) -> WorkerResult:
        load = self._current = WorkerLoad(self.cfg, target=target, url=url, live=self.live)
        if self.interrupted:
            load.interrupt()
        cpu0, wall0 = cpu_s(), time.monotonic()
        try:
            await load.run(await self._agreed_start() if self._start and self.t0_ns is None else now_ns())
        finally:
            self._current = None
        return result_of(load, cpu0, wall0)

    async def _run_children(self, target: str, url: str) -> list[WorkerResult]:
        procs = self._procs = WorkerProcesses(self.cfg, self.workers, self.live)
        if self.interrupted:
            procs.interrupt()
        try:
            results = await procs.run(target, url, start=self._agreed_start if self._start and self.t0_ns is None
                                      else None)
        finally:
            self._procs = None
        for lost in procs.lost:
            self.warnings.append(lost)
            self.interrupted = True
        return results


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
            with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
                async for _ in signals:
                    runner.interrupt()

        nursery.start_soon(on_signal)
        if show_progress:
            from loadtest.progress import show

            nursery.start_soon(show, runner.live)
        result.append(await runner.run())
        nursery.cancel_scope.cancel()
    return result[0]
