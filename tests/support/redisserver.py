"""A real redis-server for the tests: started on a free port, stopped after; killed, restarted and paused at will.

redis-server has no ``--port 0``. A port is picked at random below Linux's ephemeral range (32768-60999, where the
kernel picks client ports) and redis-server itself binds it; when that port is taken it exits at once ("Address
already in use") and another is tried, so there is no bind-close-reuse race. A unix socket next to it serves the
tests' own commands. Readiness: redis-server's own "Ready to accept connections" line, then a PING. No persistence
(``--save "" --appendonly no``): a restart starts empty, as a crashed Redis without persistence does.
"""

from __future__ import annotations

import os
import random
import selectors
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

READY_LINE = b"Ready to accept connections"


def _encode(words: Sequence[str]) -> bytes:
    return f"*{len(words)}\r\n".encode() + b"".join(f"${len(w.encode())}\r\n{w}\r\n".encode() for w in words)


class RedisMissing(RuntimeError):
    pass


def redis_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise RedisMissing(
            "redis-server is not installed: the shared-state tests need Debian's redis-server "
            "(apt-get install -y redis-server; .ci/run and ./dev test install it)"
        )
    return path


class RedisServer:
    """``config``: more redis-server directives (``["--requirepass", "pw"]``); ``auth``: the AUTH arguments the
    tests' own :meth:`command` sends first (the server needs a password)."""

    def __init__(self, folder: Path, config: Sequence[str] = (), auth: Sequence[str] = ()) -> None:
        self.folder = folder
        self.socket_path = str(folder / "redis.sock")
        self.port = 0
        self.config = list(config)
        self.auth = list(auth)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        """Start (again, on the same port once it has one) and return once it answers PING."""
        for _ in range(20):
            port = self.port or random.randint(20000, 32767)
            if self._try(port, timeout_s):
                self.port = port
                return
            if self.port:  # our own port, taken since: wait for it as a restart would
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start on any port tried")

    def _try(self, port: int, timeout_s: float) -> bool:
        args = [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--unixsocket", self.socket_path,
                "--save", "", "--appendonly", "no", "--dir", str(self.folder), "--logfile", "",
                *self.config]  # fmt: skip
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert process.stdout is not None
        seen = b""
        deadline = time.monotonic() + timeout_s
        with process.stdout, selectors.DefaultSelector() as sel:
            sel.register(process.stdout, selectors.EVENT_READ)
            while READY_LINE not in seen:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    process.kill()
                    process.wait()
                    raise RuntimeError(f"redis-server not ready in {timeout_s} s: {seen[-500:]!r}")
                data = os.read(process.stdout.fileno(), 65536)
                if not data:  # it exited: a taken port, or worse
                    process.wait()
                    if b"in use" in seen or b"Address already" in seen:
                        return False
                    raise RuntimeError(f"redis-server exited ({process.returncode}): {seen[-500:]!r}")
                seen += data
        # stdout is closed now: its later log lines go nowhere rather than fill a pipe nobody reads.
        self.process = process
        assert self.command("PING") == b"+PONG\r\n"
        return True

    def command(self, *words: str) -> bytes:
        """One command over the unix socket, the raw reply (tests' own look at the server, no client library)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(self.socket_path)
            if self.auth:
                sock.sendall(_encode(["AUTH", *self.auth]))
                assert sock.recv(65536) == b"+OK\r\n"
            sock.sendall(_encode(words))
            return sock.recv(65536)

    def kill(self) -> None:
        """SIGKILL, as a crash: everything in it is lost."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def pause(self) -> None:
        """SIGSTOP: connections stay open, nothing answers (a Redis stalled by a fork, swap or a long script)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)
        self.kill()
