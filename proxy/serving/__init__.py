"""The serving shell: everything that knows hypercorn's, quart's, quart-trio's or h11's internals.

Outside this package the relay sees ASGI, Quart's public API and these names:

- :func:`hypercorn_config`, :func:`serve_app`, :func:`client_writes`, :func:`open_connections`: one worker on one
  socket, its client write deadline and its count of open client connections;
- :func:`prepare_app`, :func:`request_class`: Quart's side (inline request call, per-path body limits);
- :func:`current_writer`: a streamed body's direct writer to its client socket, or None;
- :func:`send_last`, :func:`shielding_last`, :func:`request_body_unread`, :func:`write_timed_out`: what the
  outer ASGI layer needs of the connection;
- :func:`fast_paths_allowed`: the one switch, gated by the tested framework versions (``versions.py``);
  ``TAKEN``/``FALLBACKS``: which fast paths ran (tests).

Every fast path (our connection class with its own read loop, keep-alive deadline and raw writes; the
direct app call; the inline request call; direct body writes with our chunked framing and the deferred
last piece; ``connection: close`` on early responses) is taken only when :func:`fast_paths_allowed`; with
it off the relay runs on plain hypercorn + quart-trio ASGI. tests/relay/functional/test_fast_paths.py proves both.
"""

from ._connection import OpenConnections, request_body_unread, send_last, shielding_last, write_timed_out
from ._direct import ClientWrites, DirectWriter, current_writer
from ._gate import fast_paths_allowed, fast_paths_mode
from ._taken import FALLBACKS, TAKEN
from ._worker import client_writes, hypercorn_config, open_connections, prepare_app, request_class, serve_app
from .versions import FAST_PATHS_ENV, TESTED, untested_frameworks

__all__ = [
    "FALLBACKS",
    "FAST_PATHS_ENV",
    "TAKEN",
    "TESTED",
    "ClientWrites",
    "DirectWriter",
    "OpenConnections",
    "client_writes",
    "current_writer",
    "fast_paths_allowed",
    "fast_paths_mode",
    "hypercorn_config",
    "open_connections",
    "prepare_app",
    "request_body_unread",
    "request_class",
    "send_last",
    "serve_app",
    "shielding_last",
    "untested_frameworks",
    "write_timed_out",
]
