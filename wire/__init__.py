"""The wire toolkit the relay and the load generator share: HTTP/1.1 chunk framing and decoding, listening
sockets and addresses, the open-file limit, stop signals, one-line command-line errors.

Neutral ground: it imports neither ``proxy`` nor ``loadtest`` and no framework internals (only trio and the
standard library), so the load generator uses it without sharing the relay's code (tests/wire/test_wire.py checks it).
Each piece is sans-I/O or a thin shell around the OS, tested with bytes in tests/wire/test_wire.py.

Per-chunk code that must not pay a call (the relay's direct write, its non-blocking ``os.write`` fast paths)
inlines what it needs and names the definition here in a comment.
"""

from ._chunked import ChunkedDecoder, ChunkedError, chunk_frame
from ._cli import ArgumentParser
from ._fdlimit import raise_nofile_limit
from ._signals import STOP_SIGNALS, wait_for_stop_signal
from ._sockets import BindError, claim_port, listen_socket, split_bind, url_host
from ._workers import Ready, exit_status, run_workers

__all__ = [
    "STOP_SIGNALS",
    "ArgumentParser",
    "BindError",
    "ChunkedDecoder",
    "ChunkedError",
    "Ready",
    "chunk_frame",
    "claim_port",
    "exit_status",
    "listen_socket",
    "raise_nofile_limit",
    "run_workers",
    "split_bind",
    "url_host",
    "wait_for_stop_signal",
]
