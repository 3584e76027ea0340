"""Prometheus metrics for the relay, correct across forked workers.

With one worker the values live in this process. With several, prometheus-client's multiprocess
mode keeps each worker's values in mmapped files under ``PROMETHEUS_MULTIPROC_DIR`` and a scrape of
any worker sums them all. prometheus-client picks its value class when it is *imported*, so the
server parent calls :func:`prepare_multiprocess` before it forks and nothing imports
prometheus_client before that (this module imports it lazily, in :class:`Metrics`).

Labels are bounded: a label value never comes from a client or an upstream unchecked, or every
distinct string would be a new series held forever (and written to every worker's file). Models keep
their name when configured (the default model, exact names in ``[[upstreams]]`` ``models``), else
``other``; error kinds are the relay's own codes or ``http_<status>``, else ``upstream_error``. Routes
are URL rules and upstreams configured names (set by the app).

Cost: nothing is touched per chunk. Each request ends with one counter per family and one or two
histogram observations; chunks are counted in a local int and added once, so
``moonrelay_chunks_relayed_total`` moves when a response ends.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterable
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds. TTFC of a chat model spans 0.2 s to minutes; relays in front of the simulator see ms.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
OTHER_MODEL = "other"
# The codes the relay itself writes with type upstream_error (proxy/protocol/_errors.py); upstream bodies vary.
KINDS = frozenset(
    {"upstream_error", "upstream_unavailable", "upstream_timeout", "upstream_connect_timeout", "upstream_busy",
     "upstream_malformed"} | {f"http_{status}" for status in range(100, 600)}
)  # fmt: skip


def prepare_multiprocess(settings: Any) -> str | None:
    """In the server parent, before forking several workers: a fresh, empty metrics directory.

    An operator's own ``PROMETHEUS_MULTIPROC_DIR`` is used as given (they clean it); otherwise a
    temporary one is made and removed when the parent exits.
    """
    if settings.workers <= 1 or settings.metrics == "off":
        return None
    if os.environ.get(MULTIPROC_ENV):
        os.makedirs(os.environ[MULTIPROC_ENV], exist_ok=True)
        return os.environ[MULTIPROC_ENV]
    path = tempfile.mkdtemp(prefix="moonrelay-metrics-")
    os.environ[MULTIPROC_ENV] = path
    parent = os.getpid()

    def cleanup() -> None:
        if os.getpid() == parent:
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(cleanup)
    return path


class Metrics:
    """The relay's metric families, registered in a registry of their own (one per app); ``models`` are the
    model names that get a label of their own (the rest are ``other``)."""

    def __init__(self, models: Iterable[str] = ()) -> None:
        import prometheus_client as prom  # here, not at import: see the module docstring

        self._prom = prom
        self.models = frozenset(models)
        from prometheus_client import values

        # Decided when prometheus_client was imported, whatever the environment says now.
        self.multiprocess = values.ValueClass is not values.MutexValue
        # In multiprocess mode values go to the files whatever the registry; a scrape reads the files.
        self.registry = prom.CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.requests = prom.Counter(
            "moonrelay_requests", "Requests answered, by route, upstream and status.",
            ("route", "upstream", "status"), registry=reg,
        )  # fmt: skip
        self.in_flight = prom.Gauge(
            "moonrelay_streams_in_flight", "Streaming responses being relayed now.",
            registry=reg, multiprocess_mode="livesum",
        )  # fmt: skip
        self.ttfc = prom.Histogram(
            "moonrelay_ttfc_seconds", "Time from request to the first body chunk sent to the client (streams).",
            ("route",), buckets=LATENCY_BUCKETS, registry=reg,
        )  # fmt: skip
        self.first_byte = prom.Histogram(
            "moonrelay_upstream_first_byte_seconds",
            "Time from request to the upstream's response headers, relayed as the stream's start (streams only).",
            ("route",), buckets=LATENCY_BUCKETS, registry=reg,
        )  # fmt: skip
        self.duration = prom.Histogram(
            "moonrelay_request_duration_seconds", "Time from request to the last byte (or the client leaving).",
            ("route",), buckets=DURATION_BUCKETS, registry=reg,
        )  # fmt: skip
        self.chunks = prom.Counter(
            "moonrelay_chunks_relayed", "Body chunks sent to clients (counted when each response ends).",
            ("route",), registry=reg,
        )  # fmt: skip
        self.upstream_errors = prom.Counter(
            "moonrelay_upstream_errors", "Upstream failures by kind (transport error code, or http_<status>).",
            ("upstream", "kind"), registry=reg,
        )  # fmt: skip
        self.fallbacks = prom.Counter(
            "moonrelay_fallbacks", "Requests moved to a fallback upstream before the first byte, by reason.",
            ("from", "to", "reason"), registry=reg,
        )  # fmt: skip
        # A state, not an amount: never summed over workers. Each worker writes what the store says at each scrape
        # and at each change it makes; the most recent write wins (with --state shared, every worker agrees).
        self.circuit_state = prom.Gauge(
            "moonrelay_upstream_circuit_state", "An upstream's circuit breaker: 0 closed, 1 half-open, 2 open.",
            ("upstream",), registry=reg, multiprocess_mode="livemostrecent",
        )  # fmt: skip
        self.circuit_openings = prom.Counter(
            "moonrelay_upstream_circuit_openings", "Times an upstream's circuit opened (failures, or a failed probe).",
            ("upstream",), registry=reg,
        )  # fmt: skip
        self.client_write_timeouts = prom.Counter(
            "moonrelay_client_write_timeouts",
            "Responses cut off because the client did not take a write within client_write_timeout_s.",
            registry=reg,
        )  # fmt: skip
        self.client_limit_rejections = prom.Counter(
            "moonrelay_client_limit_rejections",
            "Requests refused (429, nothing sent upstream) by a client key's limit: concurrent, rpm, tpm or budget; "
            "key: its name, else its fingerprint.", ("limit", "key"), registry=reg,
        )  # fmt: skip
        self.prompt_tokens = prom.Counter(
            "moonrelay_prompt_tokens", "Prompt tokens from upstream usage.", ("upstream", "model"), registry=reg
        )
        self.completion_tokens = prom.Counter(
            "moonrelay_completion_tokens", "Completion tokens from upstream usage.", ("upstream", "model"),
            registry=reg,
        )  # fmt: skip

        self.config_reloads = prom.Counter(
            "moonrelay_config_reloads", "Config reloads (SIGHUP, or proxy.edge.reload), by result: applied or refused "
            "(the config in force kept).", ("result",), registry=reg,
        )  # fmt: skip
        self.config_generation = prom.Gauge(
            "moonrelay_config_generation", "The config generation a worker runs: 1 at start, one more per applied "
            "reload (the lowest of the live workers).", registry=reg, multiprocess_mode="livemin",
        )  # fmt: skip

    def config_reload(self, generation: int, applied: bool | None) -> None:
        """The worker now runs config ``generation``, after a reload ``applied`` or refused (None: at start)."""
        self.config_generation.set(generation)
        for result in ("applied", "refused"):  # both series exist from the start, at 0
            counter = self.config_reloads.labels(result)
            if applied is (result == "applied"):
                counter.inc()

    def watch_store(self, store: Any) -> None:
        """The ``--state`` store's health (proxy.limits.FailoverStore: ``on_change``/``on_error``); a store
        without them (this worker's memory) has none to show."""
        if not hasattr(store, "on_change"):
            return
        prom = self._prom
        up = prom.Gauge(
            "moonrelay_state_backend_up",
            "1 while the --state Redis answers; 0 while limits are counted in each worker (the lowest worker).",
            registry=self.registry, multiprocess_mode="livemin",
        )  # fmt: skip
        errors = prom.Counter(
            "moonrelay_state_errors", "Calls to the --state Redis that failed or ran past state_timeout_s.",
            registry=self.registry,
        )  # fmt: skip
        up.set(1 if store.up else 0)
        store.on_change = lambda ok: up.set(1 if ok else 0)
        store.on_error = errors.inc

    def fallback(self, failed: str, to: str, reason: str) -> None:
        """One request moved from upstream ``failed`` to ``to`` (``reason``: proxy.routing.resend_reason's, or
        ``http_<status>``)."""
        self.fallbacks.labels(failed, to, reason).inc()

    def circuit(self, upstream: str, state: int, opened: bool) -> None:
        """An upstream's circuit is now ``state`` (proxy.routing.Circuit); ``opened``: this worker opened it."""
        self.circuit_state.labels(upstream).set(state)
        if opened:
            self.circuit_openings.labels(upstream).inc()

    def circuits(self, states: dict[str, int]) -> None:
        """Every upstream's circuit as the store has it now (before a scrape)."""
        for upstream, state in states.items():
            self.circuit_state.labels(upstream).set(state)
            self.circuit_openings.labels(upstream)  # the counter's series exists at 0

    def render(self) -> bytes:
        """The text exposition: this process's values, or every worker's summed in multiprocess mode."""
        prom = self._prom
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = prom.CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return prom.generate_latest(registry)
        return prom.generate_latest(self.registry)

    def record(self, rec: Any, *, streamed: bool, first_byte_s: float | None, ttfc_s: float | None, kind: str | None):
        """Everything one finished request adds (``rec`` is an AccessRecord)."""
        self.requests.labels(rec.route, rec.upstream, str(rec.status)).inc()
        self.duration.labels(rec.route).observe(rec.duration_ms / 1000)
        if first_byte_s is not None:
            self.first_byte.labels(rec.route).observe(first_byte_s)
        if ttfc_s is not None and streamed:
            self.ttfc.labels(rec.route).observe(ttfc_s)
        if rec.chunks:
            self.chunks.labels(rec.route).inc(rec.chunks)
        if kind is not None:
            self.upstream_errors.labels(rec.upstream, kind if kind in KINDS else "upstream_error").inc()
        if rec.prompt_tokens is not None or rec.completion_tokens is not None:
            model = rec.model or ""  # "": a pass-through response with usage (no model noted)
            if model and model not in self.models:
                model = OTHER_MODEL
            if rec.prompt_tokens is not None:
                self.prompt_tokens.labels(rec.upstream, model).inc(rec.prompt_tokens)
            if rec.completion_tokens is not None:
                self.completion_tokens.labels(rec.upstream, model).inc(rec.completion_tokens)
