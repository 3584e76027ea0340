"""The edge: the request lifecycle in one outer layer, and everything that knows hypercorn's, quart's, quart-trio's
or h11's internals. Nothing below it imports it.

- the server (``_server``): worker processes on one port, signals, the shared store, drain and shutdown;
- the config reload (``_reload``): SIGHUP or :func:`reload`, checked whole, swapped whole per worker;
- hypercorn's worker and our connection class (``_worker``, ``_tcpserver``): reading the socket, keep-alive as a
  deadline, hypercorn's writes as one ``os.write``;
- the lifecycle (``_lifecycle``): request ids, CORS, ``/readyz`` ``/metrics`` and the demo page, the store budget,
  the access log and metrics (sinks in :mod:`proxy.observability`) when the call ends;
- the Quart app (``_app``): the relay's views as quart-trio routes, authentication and the error handlers;
- Quart's side of the call (``_inline``): the request handled in hypercorn's task, a relay body handed a writer for
  the client's socket (``_direct``) instead of being iterated;
- the one switch for every fast path (``_gate``, ``versions``) and the counters that prove them (``_taken``).

With the fast paths off the relay runs on plain hypercorn + quart-trio ASGI."""

from ._app import create_app
from ._cors import CORSPolicy
from ._direct import ClientWrites, DirectWriter, current_writer
from ._gate import fast_paths_allowed, fast_paths_mode
from ._lifecycle import Observer, install_observability
from ._reload import Reload, Reloader, reload
from ._server import (
    build_store,
    check,
    check_state,
    drain,
    ignore_reload_signal,
    reload_on_sighup,
    run,
    serve,
    worker_config,
)
from ._taken import FALLBACKS, TAKEN
from ._tap import Tap
from ._tcpserver import request_body_unread, send_last, shielding_last, write_timed_out
from ._worker import client_writes, hypercorn_config, prepare_app, request_class, serve_app
from .versions import FAST_PATHS_ENV, TESTED, untested_frameworks

__all__ = [
    "CORSPolicy",
    "ClientWrites",
    "DirectWriter",
    "FALLBACKS",
    "FAST_PATHS_ENV",
    "Observer",
    "Reload",
    "Reloader",
    "TAKEN",
    "TESTED",
    "Tap",
    "build_store",
    "check",
    "check_state",
    "client_writes",
    "create_app",
    "current_writer",
    "drain",
    "fast_paths_allowed",
    "fast_paths_mode",
    "hypercorn_config",
    "ignore_reload_signal",
    "install_observability",
    "prepare_app",
    "reload",
    "reload_on_sighup",
    "request_body_unread",
    "request_class",
    "run",
    "send_last",
    "serve",
    "serve_app",
    "shielding_last",
    "untested_frameworks",
    "worker_config",
    "write_timed_out",
]
