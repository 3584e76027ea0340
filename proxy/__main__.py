"""``python -m proxy`` / ``moonrelay``: run the relay.

A mistake on the command line, in the environment or in a config file is one line on stderr that says what to fix,
and exit status 2, before anything is bound; so is a port that cannot be had. The relay's own log lines (start-up,
SIGHUP reloads, the --state Redis) go to stderr, one per event.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from dataclasses import fields

from wire import ArgumentParser, BindError

from .config import ENV_PREFIX, Settings, Sources

_HELP = {
    "bind": "HOST:PORT to listen on (port 0 picks a free one)",
    "key_rpm": "default requests per minute of every client key; 0 = none",
    "key_tpm": "default tokens per minute of every client key (from the responses' usage); 0 = none",
    "key_concurrent": "default requests in flight at once per client key; 0 = none",
    "key_budget": "default token budget per client key and period, e.g. 1000000/1d (h, d, Nh, Nd); 0 = none",
    "key_reserve_tokens": "output tokens a request of a key with tpm or budget reserves while in flight when it "
    "names no max_tokens",
    "upstream": "base URL of the OpenAI-compatible upstream, ending in /v1",
    "upstream_key_env": "environment variable that holds the upstream API key",
    "upstream_ca_file": "PEM file of a private CA for an https upstream (verification stays on)",
    "default_model": "model used when a request names none",
    "workers": "worker processes on one SO_REUSEPORT port (each relays ~9,990 streams at a 20,000 fd limit)",
    "backlog": "listen backlog (hypercorn's default 100 resets connection storms)",
    "transport": "upstream HTTP client under httpx: h11 (lean pool) or httpcore (httpx's default)",
    "max_connections": "upstream connections per worker; 0 = unlimited",
    "pool_timeout_s": "wait this long for a free upstream connection, then 503",
    "connect_timeout_s": "upstream connect (and TLS handshake) timeout, then 504",
    "first_byte_timeout_s": "upstream response-headers timeout, then 504",
    "idle_timeout_s": "longest upstream silence inside a response",
    "total_timeout_s": "whole-request timeout",
    "keep_alive_s": "client keep-alive timeout",
    "graceful_timeout_s": "on SIGTERM, how long in-flight streams may finish; the rest end with a shutting_down error",
    "access_log": "one JSON line per request on stderr; off = none",
    "metrics": "serve Prometheus /metrics; off = none",
    "metrics_auth": "on: /metrics needs a client key (--api-keys or --api-keys-file); off: open, like /readyz",
    "cors_origins": "comma-separated browser origins allowed to call the relay, * = any",
    "otel_endpoint": "OpenTelemetry traces to this OTLP/HTTP collector (http://HOST:4318; /v1/traces is added when the "
    "URL has no path); '' = no tracing. Needs the otel extra: pip install 'moonrelay[otel]'",
    "otel_sample_ratio": "share of new traces sampled, 0 to 1 (a client's sampled traceparent is always followed)",
    "otel_service_name": "service.name of the relay's spans",
    "otel_headers": "name=value,name2=value2 headers of every export, e.g. a collector's API key (prefer the "
    "environment variable: flags show in ps)",
    "max_body_bytes": "largest request body accepted (413 beyond)",
    "api_keys_file": "file of client keys, one per line with optional limits (docs/reference.md); SIGHUP reloads it",
    "api_keys": "comma-separated client keys (prefer the environment variable or --api-keys-file)",
    "state": "redis://HOST:PORT/DB (redis://:PASSWORD@HOST:PORT/DB, redis://USER:PASSWORD@...): upstream caps and "
    "limits shared by every worker and instance; '' = per worker (prefer the environment variable: flags show in ps)",
    "state_timeout_s": "the longest a request waits on the --state Redis, all its calls together (as long again at its "
    "end); past it the worker counts locally",
    "state_prefix": "prefix of every key in the --state Redis",
    "state_lease_s": "every slot (upstream, client key, probe) a crashed or cut-off worker held comes back within "
    "this long (--state; live ones are renewed)",
    "state_probe_s": "while the --state Redis is down, how often each worker tries it again",
    "max_streams": "in-flight chat requests per worker, 0 = unlimited; beyond it an immediate 429",
    "retries": "extra upstream attempts before the first byte (connect errors, 429/502/503 only)",
    "retry_max_wait_s": "longest wait between attempts; a longer Retry-After is relayed to the client instead",
    "fast_paths": "auto: the serving fast paths (proxy/edge/) on the tested framework versions only; "
    "off: plain hypercorn ASGI; force: on any version",
    "direct_writes": "on: streamed chunks go straight to the client socket (leaner); off: through ASGI/hypercorn",
    "pump": "on: one task per worker reads every directly written stream's upstream and relays its chunks (no task "
    "switch per chunk); off: each stream's own task reads it",
    "gc_tuning": "on: freeze the start-up heap and collect garbage less often (no full-heap stalls); off: CPython's",
    "heartbeat_s": "send an SSE ': ping' comment after this many seconds of upstream silence; 0 = never",
    "client_write_timeout_s": "a client write not done in this time closes the connection and its upstream; 0 = never",
    "passthrough": "other /v1/* paths passed to the upstream: off, on (all), or comma-separated path globs",
    "passthrough_headers": "client request headers pass-through forwards beyond its allow-list (comma-separated)",
    "max_upload_bytes": "largest streamed pass-through request body (file uploads), 413 beyond",
}


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="moonrelay",
        description="OpenAI-compatible streaming relay (Moonshot by default). Every flag --NAME can also be set "
        f"as {ENV_PREFIX}NAME; precedence: flag > environment > --config file > default.",
    )
    parser.add_argument(
        "--config", help="TOML file with the same settings (top level or a [relay] table) and [[upstreams]] tables"
    )
    defaults = Settings()
    for f in fields(Settings):
        if f.metadata.get("file_only"):
            continue
        flag = "--" + f.name.replace("_", "-")
        parser.add_argument(
            flag,
            dest=f.name,
            default=argparse.SUPPRESS,  # only flags the user passed override the other sources
            metavar=f.name.upper(),
            help=f"{_HELP.get(f.name, '')} (default: {getattr(defaults, f.name)}; env {ENV_PREFIX}{f.name.upper()})",
        )
    return parser


class _LogLines(logging.Formatter):
    """``moonrelay[PID]: message``; ``moonrelay[PID]: warning: message`` above INFO (each worker is a process)."""

    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno <= logging.INFO else f"{record.levelname.lower()}: "
        line = f"moonrelay[{record.process}]: {level}{record.getMessage()}"
        return f"{line}\n{self.formatException(record.exc_info)}" if record.exc_info else line


def log_to_stderr() -> None:
    """The ``moonrelay`` logger's lines on stderr from INFO on (``moonrelay.access`` has its own handler)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogLines())
    logger = logging.getLogger("moonrelay")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the reload signal never stops a relay, even one still starting
    args = vars(build_parser().parse_args(argv))
    config_file = args.pop("config", None)
    from .auth import load_client_keys
    from .edge import check, check_state, fast_paths_mode, run
    from .relay import header_names
    from .tracing import check_tracing

    try:
        sources = Sources(args, dict(os.environ), config_file)  # read again by each reload (SIGHUP)
        settings = sources.load()
        check(settings)  # the bind address, the --state URL
        load_client_keys(settings)  # a missing or empty keys file stops the relay here, not at the first request
        header_names(settings.passthrough_headers)  # so does a header pass-through must not forward
        fast_paths_mode(settings.fast_paths)  # and an unknown fast_paths value
        check_tracing(settings)  # and otel_* settings it cannot use, or tracing without the otel extra
        check_state(settings)  # and a --state URL that cannot work, or that its Redis refuses
    except (ValueError, OSError) as exc:
        print(f"moonrelay: {exc}", file=sys.stderr)
        return 2
    notes = []
    for config in settings.routes:
        keyless = not any(os.environ.get(name) for name in config.key_envs)
        if config.key_envs and keyless and config.base_url.startswith("https://"):  # a local sim needs none
            names = ", ".join(f"${name}" for name in config.key_envs)
            notes.append(f"warning: upstream {config.name}: {names} not set; it will answer 401")
    log_to_stderr()
    try:
        return run(settings, tuple(notes), sources)
    except BindError as exc:
        print(f"moonrelay: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
