"""Child processes for tests that need a real ``python -m proxy`` or sim: start one and read the URL it prints,
stop it whatever happened."""

from __future__ import annotations

import signal
import subprocess
import threading

from tests.support import ROOT


def start_child(
    args: list[str], marker: str, env: dict, stderr, within_s: float = 15.0
) -> tuple[subprocess.Popen, str]:
    """A child process and the URL it prints after ``marker`` (killed after ``within_s`` if it never does)."""
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
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
