"""Relay settings: one typed class, filled from defaults < config file < environment < flags.

Modelled on hypercorn's Config: plain typed attributes with units in their names, and a loader per
source. Every setting ``name`` has the flag ``--name`` (underscores become dashes) and the
environment variable ``MOONRELAY_NAME``.

Paths: one given as a flag or a variable is the user's, read from the working directory; one written in a config
file is read from the file's own folder (:data:`PATH_SETTINGS`), so a config file and what it names move together.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

from .upstreamconfig import UpstreamConfig, parse_upstreams

MOONSHOT_BASE_URL = "https://api.moonshot.cn/v1"
DEFAULT_MODEL = "moonshot-v1-8k"
ENV_PREFIX = "MOONRELAY_"
FILE_ONLY = {"file_only": True}  # a setting the config file gives, with no flag or environment variable
PATH_SETTINGS = ("api_keys_file", "upstream_ca_file")  # and each [[upstreams]] table's ca_file
TABLES = ("relay", "state", "upstreams")  # the config file's tables


@dataclass
class Settings:
    bind: str = "127.0.0.1:8117"
    upstream: str = MOONSHOT_BASE_URL
    upstream_key_env: str = "MOONSHOT_API_KEY"
    upstream_ca_file: str | None = None
    default_model: str = DEFAULT_MODEL
    workers: int = 1
    backlog: int = 4096  # hypercorn's 100 resets connection storms; somaxconn here is 4096
    # Upstream client. httpx's defaults (100 connections, 5 s for everything) would cap a relay
    # at 100 streams and fail any TTFT over 5 s, so each limit is explicit.
    transport: str = "h11"  # "h11" (ours, O(1) pool) or "httpcore" (httpx's default, kept for comparison)
    max_connections: int = 0  # per worker; 0 = unlimited (a Moonshot account allows 1,000 at most)
    pool_timeout_s: float = 30.0  # wait for a free upstream connection when max_connections is reached
    connect_timeout_s: float = 10.0
    first_byte_timeout_s: float = 300.0  # Moonshot's own request timeout is ~5 minutes
    idle_timeout_s: float = 300.0  # longest silence between two upstream reads
    total_timeout_s: float = 3600.0  # webman/openai's chat default
    keep_alive_s: float = 75.0  # client keep-alive (hypercorn's default is 5 s)
    graceful_timeout_s: float = 10.0
    max_body_bytes: int = 4 * 1024 * 1024  # a 128k-token prompt must fit
    # Client keys: when any is set, chat and model routes need "Authorization: Bearer <one of them>".
    api_keys_file: str | None = None  # one key per line, optional limits (docs/reference.md); SIGHUP reloads it
    api_keys: str | None = None  # comma-separated; prefer MOONRELAY_API_KEYS or the file (flags show in ps)
    # Default limits of every client key (a keys file's line may set its own: docs/reference.md); 0 = none.
    key_rpm: int = 0  # requests per minute
    key_tpm: int = 0  # tokens per minute (the usage responses report)
    key_concurrent: int = 0  # requests in flight at once
    key_budget: str = "0"  # tokens per period: "1000000/1d" (h, d, Nh or Nd; epoch-aligned windows)
    # Output tokens a request with tpm or budget reserves when it names no max_tokens (docs/reference.md)
    key_reserve_tokens: int = 1024
    max_streams: int = 0  # in-flight chat requests per worker; 0 = unlimited; beyond it 429 at once
    retries: int = 1  # extra attempts before the first byte, for connect errors and 429/502/503 only
    retry_max_wait_s: float = 5.0  # longest backoff; a longer Retry-After is relayed instead of waited out
    heartbeat_s: float = 15.0  # SSE ": ping" comment after this much upstream silence; 0 = never
    # A write to a client that does not complete in this time closes that connection and ends its upstream
    # request (a client that stops reading would hold both forever); 0 = no deadline.
    client_write_timeout_s: float = 30.0
    # Every fast path that relies on framework internals (proxy/edge/); "off" = plain hypercorn + quart-trio ASGI
    fast_paths: str = "auto"
    direct_writes: str = "on"  # streamed chunks written straight to the client socket (proxy/edge/); "off" = ASGI
    pump: str = "on"  # direct-written streams relayed by one task per worker (proxy/transport/); "off" = their own
    gc_tuning: str = "on"  # freeze the start-up heap, rarer collections (proxy/gcpolicy.py); "off" = CPython's defaults
    # Observability (proxy/edge/_lifecycle.py)
    access_log: str = "stderr"  # one JSON line per request on logger moonrelay.access; "off" = none
    metrics: str = "on"  # GET /metrics in Prometheus text format; "off" = not served, nothing counted
    metrics_auth: str = "off"  # "on": GET /metrics needs a client key like every /v1 route (needs api_keys)
    cors_origins: str = ""  # comma-separated browser origins allowed to call the relay; "*" = any
    # OpenTelemetry traces (proxy/tracing/, docs/reference.md "Tracing"): off until an endpoint is given
    otel_endpoint: str = ""  # OTLP/HTTP collector, http://HOST:4318 (/v1/traces added when no path); the otel extra
    otel_sample_ratio: float = 1.0  # share of new traces sampled; a client's sampled traceparent is always followed
    otel_service_name: str = "moonrelay"
    otel_headers: str = ""  # name=value,... sent with every export (a collector's key: prefer the environment)
    # Routing (proxy/routing/_router.py) and pass-through (proxy/relay/_passthrough.py)
    passthrough: str = "off"  # other /v1/* paths to the upstream: "off", "on" (all), or comma-separated path globs
    passthrough_headers: str = ""  # request headers pass-through forwards beyond its allow-list (comma-separated)
    max_upload_bytes: int = 100 * 1024 * 1024  # largest streamed pass-through body (Moonshot files: 100 MB)
    # Shared state (proxy/limits, docs/reference.md "--state"): "" = each worker counts its own limits, as always;
    # redis://HOST:PORT/DB = one Redis counts them for every worker and instance. Also a [state] table (url, ...).
    state: str = ""
    state_timeout_s: float = 0.25  # the longest a request waits on Redis, all calls together; then it counts locally
    state_prefix: str = "moonrelay:"  # before every Redis key: several relay fleets can share one Redis
    state_lease_s: float = 30.0  # a slot nobody renews comes back within this long (live ones are renewed)
    state_probe_s: float = 1.0  # while Redis is down, how often each worker tries it again
    # [[upstreams]] tables from the config file only (no flag or variable): several upstreams, routed by model.
    # Empty: the flat upstream settings above define the one default upstream.
    upstreams: tuple[dict[str, Any], ...] = field(default=(), metadata=FILE_ONLY)

    @cached_property
    def routes(self) -> tuple[UpstreamConfig, ...]:
        """The upstreams these settings configure, typed and validated once (proxy/upstreamconfig.py): the
        ``[[upstreams]]`` tables, or the flat settings' one upstream. A ConfigError names what to fix."""
        return parse_upstreams(self)

    @property
    def upstream_key(self) -> str | None:
        return os.environ.get(self.upstream_key_env) or None

    def with_overrides(self, values: Mapping[str, Any]) -> Settings:
        """A copy with ``values`` (already typed, or strings to convert) applied."""
        known = {f.name: f for f in fields(self)}
        changes: dict[str, Any] = {}
        for key, raw in values.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ValueError(f"unknown setting {key!r}{did_you_mean(name, known)}")
            changes[name] = _convert(known[name].type, raw, name)
        return dataclasses.replace(self, **changes)


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'NAME'?)`` with the closest of ``known``, or nothing when none is close."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _convert(type_: Any, raw: Any, name: str) -> Any:
    if not isinstance(raw, str):
        return raw
    text = str(type_)
    if raw == "" and "None" in text:
        return None
    try:
        if text.startswith("int"):
            return int(raw)
        if text.startswith("float"):
            return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name}: expected a number, got {raw!r}") from exc
    return raw


def from_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """Settings given as MOONRELAY_<NAME> variables."""
    names = {f.name for f in fields(Settings) if not f.metadata.get("file_only")}
    out = {}
    for key, value in environ.items():
        if key.startswith(ENV_PREFIX):
            name = key[len(ENV_PREFIX) :].lower()
            if name in names:
                out[name] = value
    return out


def from_toml(path: str) -> dict[str, Any]:
    """Flat settings (top level or a ``[relay]`` table) and the ``[[upstreams]]`` tables, as ``upstreams``.

    Every mistake is a ValueError that names the file (and the line, where there is one): a syntax error, an
    unknown setting or table (with the closest known name). Relative paths in it are made relative to its folder.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ValueError(f"config file {path}: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        where = re.search(r"\(at line (\d+), column (\d+)\)$", str(exc))
        if where is None:
            raise ValueError(f"{path}: {exc}") from exc
        message = str(exc)[: where.start()].rstrip()
        raise ValueError(f"{path}, line {where[1]}, column {where[2]}: {message}") from exc
    text = raw.decode("utf-8")
    relay = data.get("relay", data)
    if relay is not data and [k for k, v in data.items() if not isinstance(v, dict | list)]:
        raise ValueError(f"{path}: settings both at the top level and in [relay]: write them in one place")
    _check_names(path, text, relay, _SETTINGS, TABLES if relay is data else TABLES[1:])
    out = {k.replace("-", "_"): v for k, v in relay.items() if not isinstance(v, dict) and k != "upstreams"}
    state = data.get("state", relay.get("state"))
    if isinstance(state, dict):  # [state] url = "redis://...", timeout_s = 0.25, ...: the state_* settings
        _check_names(path, text, state, _STATE_KEYS, ())
        out.update({"state" if k == "url" else f"state_{k.replace('-', '_')}": v for k, v in state.items()})
    tables = data.get("upstreams", relay.get("upstreams"))
    if tables is not None:
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            raise ValueError(f"{path}: 'upstreams' must be [[upstreams]] tables")
        out["upstreams"] = tuple(_beside(path, t, ("ca_file",)) for t in tables)
    return _beside(path, out, PATH_SETTINGS)


_SETTINGS = tuple(f.name for f in fields(Settings) if not f.metadata.get("file_only"))
_STATE_KEYS = ("url", *(name.removeprefix("state_") for name in _SETTINGS if name.startswith("state_")))


def _check_names(path: str, text: str, table: dict[str, Any], known: Iterable[str], tables: Iterable[str]) -> None:
    """A ValueError naming the file, the line and the closest known name for the first unknown key of ``table``."""
    for key, value in table.items():
        name = key.replace("-", "_")
        if isinstance(value, dict) or key == "upstreams":
            if key not in tables:
                raise ValueError(f"{path}{_line_of(text, key, table=True)}: unknown table [{key}]"
                                 f"{did_you_mean(key, tables)}")  # fmt: skip
        elif name not in known:
            raise ValueError(f"{path}{_line_of(text, key)}: unknown setting {key!r}{did_you_mean(name, known)}")


def _line_of(text: str, key: str, table: bool = False) -> str:
    """``, line N`` where ``key`` is set (or its table opens) in a config file's text; nothing if not found."""
    pattern = rf"^\s*\[+\s*{re.escape(key)}\s*\]" if table else rf"^\s*[\"']?{re.escape(key)}[\"']?\s*="
    found = re.search(pattern, text, re.MULTILINE)
    return f", line {text.count(chr(10), 0, found.start()) + 1}" if found else ""


def _beside(path: str, values: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """``values`` with each relative path among ``names`` made relative to the folder of the file ``path``."""
    folder = os.path.dirname(path)
    out = dict(values)
    for name in names:
        value = out.get(name)
        if isinstance(value, str) and value and not os.path.isabs(value):
            out[name] = os.path.join(folder, value)
    return out


def load(flags: Mapping[str, Any], environ: Mapping[str, str], config_file: str | None = None) -> Settings:
    """Defaults < config file < environment < flags (only flags the user passed), with the ``[[upstreams]]``
    tables parsed and validated (``Settings.routes``: their defaults are the flat settings, so they come last)."""
    settings = Settings()
    config_file = config_file or environ.get(ENV_PREFIX + "CONFIG")
    if config_file:
        values = from_toml(config_file)  # its errors name the file
        try:
            settings = settings.with_overrides(values)
        except ValueError as exc:  # a value of the wrong kind
            raise ValueError(f"{config_file}: {exc}") from exc
    settings = settings.with_overrides(from_environment(environ)).with_overrides(flags)
    settings.routes  # noqa: B018 - a bad table stops start-up (or a reload) here
    return settings


# What a reload (SIGHUP, proxy.edge.reload) changes in a running relay: the upstreams and everything they are built
# from, the client keys and their limits, admission. The rest (the socket, the workers, the serving paths, the
# store, observability) is fixed when the relay starts: a reload keeps it, and its log line names what waits
# for a restart.
LIVE_SETTINGS = frozenset({
    "upstreams", "upstream", "upstream_key_env", "upstream_ca_file", "default_model", "max_connections",
    "pool_timeout_s", "connect_timeout_s", "first_byte_timeout_s", "idle_timeout_s", "total_timeout_s",
    "api_keys_file", "api_keys", "key_rpm", "key_tpm", "key_concurrent", "key_budget", "key_reserve_tokens",
    "max_streams", "retries", "retry_max_wait_s",
})  # fmt: skip


@dataclass(frozen=True)
class Sources:
    """Where a relay's settings came from: the flags the user passed, the environment, the config file. A reload
    reads them again (the file anew)."""

    flags: Mapping[str, Any] = field(default_factory=dict)
    environ: Mapping[str, str] = field(default_factory=dict)
    config_file: str | None = None

    def load(self) -> Settings:
        return load(self.flags, self.environ, self.config_file)


def reloaded(running: Settings, new: Settings) -> tuple[Settings, list[str]]:
    """``running`` with ``new``'s :data:`LIVE_SETTINGS`, and the names of the other settings ``new`` changes (they
    wait for a restart)."""
    waiting = [f.name for f in fields(Settings) if f.name not in LIVE_SETTINGS
               and getattr(new, f.name) != getattr(running, f.name)]  # fmt: skip
    return dataclasses.replace(running, **{name: getattr(new, name) for name in LIVE_SETTINGS}), waiting
