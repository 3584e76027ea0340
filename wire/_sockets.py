"""Listening sockets and ``HOST:PORT`` addresses, for the relay's workers and the simulated upstream alike."""

from __future__ import annotations

import socket

__all__ = ["listen_socket", "split_bind", "url_host"]


def split_bind(bind: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6; no host, as in ``:PORT`` or ``PORT``, is 127.0.0.1) as ``(host, port)``.

    ValueError if the port is not a number.
    """
    host, _, port = bind.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {bind!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def url_host(host: str) -> str:
    """``host`` as a URL writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def listen_socket(host: str, port: int, backlog: int, *, reuse_port: bool = False) -> socket.socket:
    """A bound, listening, non-blocking TCP socket.

    ``reuse_port``: several processes each bind their own socket to the port (SO_REUSEPORT), and the kernel
    spreads new connections across them by hash; with port 0, bind the first and pass its port to the rest
    (wire.run_workers).
    TCP_NODELAY is set here so every accepted socket inherits it: a streamed chunk goes out at once.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
