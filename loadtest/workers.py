"""Load worker processes: ``--workers W`` children that each run one share of a phase, started together.

Protocol: the parent (:class:`WorkerProcesses`) starts ``python -m loadtest.workers`` W times and writes one
JSON line ``{"spec": path, "out": path, "worker": i, "workers": W}`` to each child's stdin; the child loads
the pickled ``(LoadConfig, target, url)`` from ``spec`` and answers ``ready``, then reads the common start
time ``t0_ns`` (CLOCK_MONOTONIC, shared by all processes on the host) as the next line, runs its
:class:`~loadtest.shapes.WorkerLoad`, prints progress deltas as JSON lines, and pickles its
:class:`WorkerResult` to ``out``. SIGINT stops a child's load at once; it still writes what it recorded.
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from loadtest.client import now_ns
from loadtest.progress import LiveStats
from loadtest.record import SessionRecord
from loadtest.shapes import LoadConfig, WorkerLoad
from wire import STOP_SIGNALS, raise_nofile_limit

__all__ = ["WorkerResult", "WorkerProcesses", "cpu_s", "result_of", "worker_main"]

PROGRESS_INTERVAL_S = 0.5


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
    loop_lag_ms: list[float] | None = None  # the process's event-loop lateness samples (loadtest.looplag)


def cpu_s() -> float:
    """This process's user + system CPU seconds so far."""
    t = os.times()
    return t.user + t.system


def result_of(load: WorkerLoad, cpu0: float, wall0: float) -> WorkerResult:
    """What ``load`` recorded and what this process spent on it since ``cpu0`` / ``wall0``."""
    return WorkerResult(
        records=load.records, connect_retries=load.retries.n, interrupted=load.interrupted,
        cpu_s=cpu_s() - cpu0, wall_s=time.monotonic() - wall0,
        peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, pid=os.getpid(),
        fd_limit=resource.getrlimit(resource.RLIMIT_NOFILE), loop_lag_ms=load.lag.samples_ms,
    )


# --- the child ---------------------------------------------------------------------------------------


class _ReportingStats(LiveStats):
    """A child's LiveStats that also remembers what changed since the last progress message."""

    __slots__ = ("_sent", "_new_ttfc", "_sent_errors", "_sent_gaps")

    def __init__(self) -> None:
        super().__init__()
        self._sent = (0, 0, 0, 0)
        self._new_ttfc: list[float] = []
        self._sent_errors: dict[str, int] = {}
        self._sent_gaps = ([0] * len(self.gap_hist.counts), 0.0)

    def add_ttfc(self, ttfc_ms: float) -> None:
        self._new_ttfc.append(ttfc_ms)

    def delta(self) -> dict[str, Any]:
        now = (self.open, self.completed, self.unverified, self.failed)
        keys = ("open", "completed", "unverified", "failed")
        d: dict[str, Any] = {k: a - b for k, a, b in zip(keys, now, self._sent, strict=True)}
        d["ttfc"] = [round(t, 1) for t in self._new_ttfc]
        self._sent = now
        self._new_ttfc = []
        errors = {k: n - self._sent_errors.get(k, 0) for k, n in self.errors.items() if n != self._sent_errors.get(k)}
        if errors:
            d["errors"] = errors
            self._sent_errors = dict(self.errors)
        counts, total = self.gap_hist.counts, self.gap_hist.sum
        if counts != self._sent_gaps[0]:
            d["gaps"] = [a - b for a, b in zip(counts, self._sent_gaps[0], strict=True)]
            d["gap_sum"] = total - self._sent_gaps[1]
            self._sent_gaps = (list(counts), total)
        return d


async def _worker_async(cfg: LoadConfig, target: str, url: str, worker: int, workers: int, t0_ns: int,
                        report: bool) -> WorkerResult:
    live = _ReportingStats()
    load = WorkerLoad(cfg, target=target, url=url, worker=worker, workers=workers, live=live)
    cpu0, wall0 = cpu_s(), time.monotonic()

    async def progress() -> None:
        while True:
            await trio.sleep(PROGRESS_INTERVAL_S)
            print(json.dumps(live.delta()), flush=True)

    async with trio.open_nursery() as nursery:
        if report:
            nursery.start_soon(progress)

        async def on_signal() -> None:
            with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
                async for _ in signals:
                    load.interrupt()

        nursery.start_soon(on_signal)
        await load.run(t0_ns)
        nursery.cancel_scope.cancel()
    if report:
        print(json.dumps(live.delta()), flush=True)
    return result_of(load, cpu0, wall0)


def worker_main() -> int:
    """Entry of a ``--workers`` child process (see the module docstring for the protocol)."""
    job = json.loads(sys.stdin.readline())
    with open(job["spec"], "rb") as f:
        cfg, target, url = pickle.load(f)
    raise_nofile_limit()
    print("ready", flush=True)
    try:
        line = sys.stdin.readline()  # the start: a shard's may be long in coming
    except KeyboardInterrupt:
        return 130  # stopped before the start: nothing was recorded
    if not line.strip():
        return 1  # the parent gave up before the start
    result = trio.run(_worker_async, cfg, target, url, job["worker"], job["workers"], int(line), True)
    tmp = job["out"] + ".tmp"
    with open(tmp, "wb") as f:
        pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, job["out"])
    return 0


# --- the parent --------------------------------------------------------------------------------------


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


class WorkerProcesses:
    """``workers`` children running one phase each time :meth:`run` is called; progress merged into ``live``.

    ``lost`` lists, in words, the children that returned no records (the run is then incomplete).
    """

    def __init__(self, cfg: LoadConfig, workers: int, live: LiveStats) -> None:
        self.cfg = cfg
        self.workers = workers
        self.live = live
        self.interrupted = False
        self.lost: list[str] = []
        self._children: list[trio.Process] = []

    def interrupt(self) -> None:
        """Stop every child now (SIGINT); each still writes what it recorded."""
        self.interrupted = True
        for p in self._children:
            if p.returncode is None:
                try:
                    p.send_signal(signal.SIGINT)
                except ProcessLookupError:
                    pass

    async def run(self, target: str, url: str, *, start=None) -> list[WorkerResult]:
        """One phase in every child; ``start()`` (awaited once all are ready) gives the common start, else now."""
        with tempfile.TemporaryDirectory(prefix="loadtest-") as tmp:
            spec = Path(tmp) / "spec.pickle"
            spec.write_bytes(pickle.dumps((self.cfg, target, url)))
            outs = [Path(tmp) / f"worker-{i}.pickle" for i in range(self.workers)]
            started = False  # the start went out: from then on a child without records is a loss
            async with trio.open_nursery() as nursery:
                procs = []
                try:
                    for _ in range(self.workers):
                        p = await trio.lowlevel.open_process(
                            [sys.executable, "-m", "loadtest.workers"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
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
                    t0 = await start() if start is not None else now_ns() + 50_000_000
                    if self.interrupted:
                        raise _Stopped
                    started = True
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
                elif started:
                    self.lost.append(f"load worker {i} returned no records (exit {procs[i].returncode})")
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


if __name__ == "__main__":
    # Run the copy imported as loadtest.workers, so the pickled WorkerResult names that module, not __main__.
    from loadtest.workers import worker_main as _worker_main

    sys.exit(_worker_main())
