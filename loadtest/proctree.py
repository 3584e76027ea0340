"""CPU and RSS of a process and its descendants, sampled with psutil.

CPU is summed over the root and every descendant ever seen (the relay's, the sim's, nginx's and
uvicorn's workers are children), per pid, so a worker that exits mid-run still counts up to its last
sample. RSS is the tree's sum: idle when the measured window opens, peak over the samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psutil


@dataclass
class ProcessTree:
    """CPU and RSS of one process and its descendants."""

    pid: int
    cpu_by_pid: dict[int, float] = field(default_factory=dict)
    cpu_at_mark: dict[int, float] = field(default_factory=dict)
    idle_rss: int = 0
    peak_rss: int = 0
    peak_fds_by_pid: dict[int, int] = field(default_factory=dict)  # open fds: streams per worker, EMFILE risk
    _procs: dict[int, psutil.Process] = field(default_factory=dict)

    def sample(self) -> int:
        """Refresh CPU per pid; return the tree's RSS now."""
        try:
            root = self._procs.get(self.pid) or psutil.Process(self.pid)
            self._procs[self.pid] = root
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0
        rss = 0
        for p in procs:
            p = self._procs.setdefault(p.pid, p)  # reuse the object: psutil caches create_time
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    self.cpu_by_pid[p.pid] = t.user + t.system
                    rss += p.memory_info().rss
                    fds = p.num_fds()
                    if fds > self.peak_fds_by_pid.get(p.pid, 0):
                        self.peak_fds_by_pid[p.pid] = fds
            except psutil.Error:
                continue
        self.peak_rss = max(self.peak_rss, rss)
        return rss

    def mark(self) -> None:
        """Open the measured window: idle RSS and the CPU baseline."""
        self.idle_rss = self.sample()
        self.peak_rss = self.idle_rss
        self.cpu_at_mark = dict(self.cpu_by_pid)
        self.peak_fds_by_pid = {}

    def cpu_s(self) -> float:
        return sum(v - self.cpu_at_mark.get(pid, 0.0) for pid, v in self.cpu_by_pid.items())

    def per_process(self) -> list[dict[str, float | int]]:
        """CPU seconds and peak open fds of each process: how evenly the workers shared the load."""
        return [
            {
                "pid": pid,
                "cpu_s": round(cpu - self.cpu_at_mark.get(pid, 0.0), 3),
                "peak_fds": self.peak_fds_by_pid.get(pid, 0),
            }
            for pid, cpu in sorted(self.cpu_by_pid.items())
        ]

    def processes(self) -> list[psutil.Process]:
        """Every process seen; psutil checks create_time before a signal, so a reused pid is safe."""
        return list(self._procs.values())

    def usage(self) -> dict[str, float | int | list[int]]:
        return {
            "cpu_s": self.cpu_s(),
            "idle_rss_bytes": self.idle_rss,
            "peak_rss_bytes": self.peak_rss,
            "processes": len(self._procs),
        }
