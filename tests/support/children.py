"""Child processes for tests that need a real ``python -m proxy`` or sim: start one and read the URL it prints,
read the lines it writes as they come, stop it whatever happened."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
from pathlib import Path
from typing import IO

from tests.support import ROOT


def start_child(
    args: list[str], marker: str, env: dict, stderr, within_s: float = 15.0, cwd: Path = ROOT
) -> tuple[subprocess.Popen, str]:
    """A child process and the URL it prints after ``marker`` (killed after ``within_s`` if it never does)."""
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    killer = threading.Timer(within_s, proc.kill)
    killer.start()
    try:
        for line in proc.stdout:
            if marker in line:
                return proc, line.split(marker, 1)[1].split()[0]
    finally:
        killer.cancel()
    proc.kill()
    proc.wait()
    proc.stdout.close()
    raise AssertionError(f"{' '.join(args[:3])} did not start")


def stop_child(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    proc.stdout.close()


class LineReader:
    """The lines a child writes to a pipe, read by a thread of its own as they come (the pipe never fills)."""

    def __init__(self, pipe: IO[str]) -> None:
        self.seen: list[str] = []
        self._pipe = pipe
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Once the child has ended: the rest of the pipe read into ``seen``, the pipe closed."""
        self._thread.join(10)
        self._pipe.close()
        while not self._lines.empty():
            line = self._lines.get()
            if line is not None:
                self.seen.append(line)

    def _read(self, pipe: IO[str]) -> None:
        for line in pipe:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def wait_for(self, says: str, count: int = 1, within_s: float = 15.0) -> list[str]:
        """The next ``count`` lines that contain ``says``; AssertionError if the pipe ends or time runs out first."""
        found: list[str] = []
        while len(found) < count:
            try:
                line = self._lines.get(timeout=within_s)
            except queue.Empty:
                raise AssertionError(f"no {says!r} line within {within_s} s: {self.seen}") from None
            if line is None:
                raise AssertionError(f"the pipe ended before {count} {says!r} line(s): {self.seen}")
            self.seen.append(line)
            if says in line:
                found.append(line)
        return found


def assert_one_line_errors(cases: list[tuple[list[str], str]], cwd: Path = ROOT, starts: str = "") -> None:
    """Run every ``(argv, says)`` command at once (each is a whole interpreter start) and check that each exits 2
    with nothing on stdout and exactly one line on stderr, which starts with ``starts`` and contains ``says``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for argv, _ in cases]  # fmt: skip
    done = [proc.communicate(timeout=60) for proc in procs]
    for (argv, says), proc, (out, err) in zip(cases, procs, done, strict=True):
        lines = err.splitlines()
        assert (proc.returncode, out) == (2, ""), (argv, err)
        assert len(lines) == 1 and lines[0].startswith(starts) and says in lines[0], (argv, err)
