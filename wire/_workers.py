"""Forked workers on one port: each child serves its own SO_REUSEPORT listening socket; the parent supervises.

One listening socket per process lets the kernel spread new connections across the workers by hash; one shared
listening socket lets whichever worker wakes first take a whole storm of accepts. The parent binds each child's
socket just before forking it (the first picks the port when asked for port 0) and closes its copy at once, so
each child holds only its own socket and a bind error (``BindError``) is raised in the parent, before anything
serves. The first socket is bound under ``claim_port``: a port something else listens on already fails, where
SO_REUSEPORT alone would let the workers join, say, another relay's group and take half its connections.

The parent is plain blocking code (no trio loop to fork from): it waits on the children's readiness pipes, their
exit sentinels and a wakeup socket that SIGINT/SIGTERM write to (``signal.set_wakeup_fd``), and prints nothing:
callers print their own lines from ``on_ready`` and ``on_exit``. A parent killed outright takes its children with
it (the kernel's parent-death signal), so no worker serves on with nobody to stop it.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

from ._signals import STOP_SIGNALS
from ._sockets import claim_port, listen_socket

__all__ = ["Ready", "exit_status", "run_workers"]

Ready = Callable[[str], None]
"""What a child calls once it serves, with its URL; the parent hands worker 0's to ``on_ready``."""


def exit_status(exitcode: int) -> int:
    """A child's ``Process.exitcode`` as a shell writes the status: killed by signal N (-N) is 128 + N."""
    return 128 - exitcode if exitcode < 0 else exitcode


def run_workers(
    count: int,
    target: Callable[..., None],
    args: tuple[Any, ...] = (),
    *,
    host: str,
    port: int,
    backlog: int,
    grace_s: float,
    on_bound: Callable[[], None] | None = None,
    on_ready: Callable[[str], None] | None = None,
    on_exit: Callable[[int, int], None] | None = None,
    forwarded: tuple[int, ...] = (),
) -> int:
    """Fork ``count`` processes that each run ``target(sock, index, ready, *args)`` on their own listening socket,
    all bound to ``host:port``; return once they have all stopped. Call it from the main thread while no other
    thread runs (fork copies only the calling thread).

    ``on_bound`` is called once the port is had (the first socket bound: a :class:`BindError` comes before it).
    A child calls ``ready(url)`` once it serves; when every child has, the parent calls ``on_ready`` with worker
    0's URL. SIGINT or SIGTERM in the parent is forwarded to the children; a child that exits on its own (before or
    after it was ready) gets ``on_exit(index, status)`` and the others get SIGTERM. Either way the children have
    ``grace_s`` to exit, then are killed. Children start with SIGINT and SIGTERM at their defaults: a child that
    must stop cleanly opens its own trio signal receiver before it calls ``ready``.

    ``forwarded``: signals the parent passes on to every running child as they are (a reload: SIGHUP), not a stop;
    children start with them ignored, so one that comes before a child opened its own receiver is lost, not fatal.

    Returns the status of the child that exited on its own (1 if that was 0); after a stop signal, the first
    non-zero status among the children (dying of the forwarded signal counts as 0; killed after the grace, 137);
    else 0. Statuses are as a shell writes them (:func:`exit_status`).
    """
    ctx = multiprocessing.get_context("fork")
    parent = os.getpid()
    stopped: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopped.append(signum)

    procs: list[multiprocessing.process.BaseProcess] = []

    def forward(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.pid is not None and proc.exitcode is None:
                try:
                    os.kill(proc.pid, signum)
                except ProcessLookupError:
                    pass

    previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}  # ValueError off the main thread
    previous.update({sig: signal.signal(sig, forward) for sig in forwarded})
    wake, wake_writer = socket.socketpair()
    for s in (wake, wake_writer):
        s.setblocking(False)
    previous_fd = signal.set_wakeup_fd(wake_writer.fileno())
    pipes: list[multiprocessing.connection.Connection] = []
    failed = None
    try:
        for index in range(count):
            if index == 0:  # never a member of another program's group on this port (wire.claim_port)
                with claim_port(host, port):
                    sock = listen_socket(host, port, backlog, reuse_port=True)
                port = sock.getsockname()[1]
                if on_bound is not None:
                    on_bound()
            else:
                sock = listen_socket(host, port, backlog, reuse_port=True)
            receiver, sender = ctx.Pipe(duplex=False)
            pipes.append(receiver)
            proc = ctx.Process(
                target=_child,
                args=(target, sock, index, sender, (wake, wake_writer), parent, args, forwarded),
                daemon=True,
            )
            try:
                proc.start()
            finally:
                sock.close()
                sender.close()
            procs.append(proc)
        failed = _supervise(procs, pipes, wake, stopped, on_ready)
        if failed is not None and on_exit is not None:
            on_exit(failed, exit_status(procs[failed].exitcode or 0))
    finally:
        _stop(procs, stopped[0] if stopped else signal.SIGTERM, grace_s)
        signal.set_wakeup_fd(previous_fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for conn in (*pipes, wake, wake_writer):
            conn.close()
    if failed is not None:
        return exit_status(procs[failed].exitcode or 0) or 1
    clean = {0, -signal.SIGINT, -signal.SIGTERM}
    return next((exit_status(p.exitcode) for p in procs if p.exitcode not in clean), 0)


def _child(
    target: Callable[..., None],
    sock: socket.socket,
    index: int,
    sender: multiprocessing.connection.Connection,
    wake: tuple[socket.socket, socket.socket],
    parent: int,
    args: tuple[Any, ...],
    forwarded: tuple[int, ...] = (),
) -> None:
    # The parent's handlers and wakeup fd came with the fork: a child's signals are its own (and trio.run warns
    # about a wakeup fd it did not set).
    signal.set_wakeup_fd(-1)
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    for sig in forwarded:
        signal.signal(sig, signal.SIG_IGN)
    for s in wake:
        s.close()
    _stop_with(parent)

    def ready(url: str) -> None:
        if not sender.closed:
            sender.send(url)
            sender.close()

    target(sock, index, ready, *args)


_PR_SET_PDEATHSIG = 1


def _stop_with(parent: int) -> None:
    """Have the kernel send this child SIGTERM when the parent dies, even of SIGKILL (Linux): a worker left
    behind would keep serving its share of the port's connections with nobody to stop it."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: the parent's own stop is all there is
        return
    prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _supervise(
    procs: list[multiprocessing.process.BaseProcess],
    pipes: list[multiprocessing.connection.Connection],
    wake: socket.socket,
    stopped: list[int],
    on_ready: Callable[[str], None] | None,
) -> int | None:
    """Wait for every child's readiness, then for a stop signal (None) or a child's exit (its index)."""
    urls: list[str] = [""] * len(procs)
    waiting = dict(enumerate(pipes))
    sentinels = {proc.sentinel: index for index, proc in enumerate(procs)}
    while True:
        fired = multiprocessing.connection.wait([wake, *waiting.values(), *sentinels])
        if wake in fired:
            _drain(wake)
            if stopped:  # (a byte with nothing in ``stopped`` is a child's, in the instant before its reset)
                return None
        for index, pipe in list(waiting.items()):
            if pipe in fired:
                try:
                    urls[index] = pipe.recv()
                except EOFError:  # it exited before it was ready
                    procs[index].join()
                    return index
                del waiting[index]
                if not waiting and on_ready is not None:
                    on_ready(urls[0])
        for sentinel in fired:
            if sentinel in sentinels:
                procs[sentinels[sentinel]].join()
                return sentinels[sentinel]


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(4096):
            pass
    except BlockingIOError:
        pass


def _stop(procs: list[multiprocessing.process.BaseProcess], signum: int, grace_s: float) -> None:
    """Send ``signum`` to the children still running, give them ``grace_s`` together, then kill the rest."""
    for proc in procs:
        if proc.exitcode is None and proc.pid is not None:
            os.kill(proc.pid, signum)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.exitcode is None:
            proc.kill()
            proc.join()
