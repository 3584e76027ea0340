"""Listening sockets and ``HOST:PORT`` addresses, for the relay's workers and the simulated upstream alike.

Every way a listening socket cannot be had is one :class:`BindError` whose message says what to change, so a
command line prints it as one line (a port in use, a host that does not resolve, a port out of range).
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["BindError", "claim_port", "listen_socket", "split_bind", "url_host"]

_EXAMPLE = "e.g. 127.0.0.1:8117; port 0 picks a free one"


class BindError(OSError):
    """A listening socket that cannot be had; the message says what to change."""


def split_bind(bind: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6; no host, as in ``:PORT`` or ``PORT``, is 127.0.0.1) as ``(host, port)``.

    ValueError if the port is not a number from 0 to 65535.
    """
    host, _, port = bind.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"expected HOST:PORT ({_EXAMPLE}), got {bind!r}")
    if int(port) > 65535:
        raise ValueError(f"port {int(port)} in {bind!r} is out of range: ports are 0-65535 ({_EXAMPLE})")
    return host.strip("[]") or "127.0.0.1", int(port)


def url_host(host: str) -> str:
    """``host`` as a URL writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bind_error(host: str, port: int, exc: OSError | OverflowError) -> BindError:
    where = f"cannot listen on {url_host(host)}:{port}"
    if isinstance(exc, OverflowError):
        return BindError(f"{where}: ports are 0-65535 ({_EXAMPLE})")
    if isinstance(exc, socket.gaierror):
        return BindError(f"{where}: unknown host {host!r}: give an IP address or a name this machine resolves")
    if exc.errno == errno.EADDRINUSE:
        return BindError(f"{where}: the port is in use (another relay or program listens there): stop it, or "
                         "choose another port (port 0 picks a free one)")  # fmt: skip
    if exc.errno == errno.EADDRNOTAVAIL:
        return BindError(f"{where}: {host} is not an address of this machine (127.0.0.1: this machine only, "
                         "0.0.0.0: every interface)")  # fmt: skip
    if exc.errno == errno.EACCES:
        return BindError(f"{where}: permission denied (ports below 1024 need privileges): choose a port above 1023")
    return BindError(f"{where}: {exc.strerror or exc}")


def listen_socket(host: str, port: int, backlog: int, *, reuse_port: bool = False) -> socket.socket:
    """A bound, listening, non-blocking TCP socket; :class:`BindError` when it cannot be had.

    ``reuse_port``: several processes each bind their own socket to the port (SO_REUSEPORT), and the kernel
    spreads new connections across them by hash; the first socket of such a group is bound under
    :func:`claim_port` (wire.run_workers), so that it never joins another program's group.
    TCP_NODELAY is set here so every accepted socket inherits it: a streamed chunk goes out at once.
    """
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except (OSError, OverflowError) as exc:
        sock.close()
        raise _bind_error(host, port, exc) from exc
    except BaseException:
        sock.close()
        raise
    return sock


# How long claim_port waits for another process's claim of the same port: a claim lasts two binds (microseconds),
# so only a process stopped inside one holds it longer.
CLAIM_WAIT_S = 2.0


@contextmanager
def claim_port(host: str, port: int) -> Iterator[None]:
    """Make sure nothing listens on ``host:port``, and keep every other claimant of the port waiting until the
    first SO_REUSEPORT socket of a group is bound and listening inside this block. :class:`BindError` if the port
    is taken (port 0 is always free: the kernel picks an unused one).

    Linux lets any socket of the same user with SO_REUSEPORT join a listening group, so a second relay started
    on a port the first one serves would silently take half its connections. A socket bound *without*
    SO_REUSEPORT cannot join one: that bind fails if anything listens there, which is the check. The claim, an
    abstract Unix socket named after the port (released by the kernel when its holder exits, whatever way),
    closes the window between that check and the group's first bind, where two starting relays could both pass.
    """
    if port == 0:
        yield
        return
    lock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        deadline = time.monotonic() + CLAIM_WAIT_S
        while True:
            try:
                lock.bind(f"\0wire-port-{port}")
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:  # no abstract namespace (not Linux): the check alone
                    break
                if time.monotonic() > deadline:
                    raise BindError(f"cannot listen on {url_host(host)}:{port}: another process has been "
                                    f"starting to listen there for {CLAIM_WAIT_S:g} s") from exc  # fmt: skip
                time.sleep(0.005)
        probe = socket.socket(_family(host), socket.SOCK_STREAM)
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a previous run's TIME_WAIT is no owner
            probe.bind((host, port))
        except (OSError, OverflowError) as exc:
            raise _bind_error(host, port, exc) from exc
        finally:
            probe.close()
        yield
    finally:
        lock.close()
