"""The ``[[upstreams]]`` tables as typed, validated :class:`UpstreamConfig` objects, parsed once per settings.

    [[upstreams]]                       → UpstreamConfig, validated (ConfigError names the table and what to fix)
    no [[upstreams]]: --upstream flags  → one UpstreamConfig, the default (exactly the single-upstream relay)

:attr:`proxy.config.Settings.routes` holds the result; the router, the metrics' model names, the start-up line
and a reload all read it, none parses a table again. A table's timeouts and connection cap default to the flat
settings' (``--connect-timeout-s``…), so the tables are parsed once every source has been applied.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:  # config.py imports this module
    from .config import Settings

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # it goes into metric labels and a request header
_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TIMEOUTS = ("connect_timeout_s", "first_byte_timeout_s", "idle_timeout_s", "total_timeout_s")
_BREAKER_TIMES = ("breaker_window_s", "breaker_cooldown_s")
_COUNTS = ("max_concurrent", "max_connections", "breaker_failures")
_KEYS = frozenset(
    {"name", "base_url", "key_env", "key_envs", "models", "default", "include_usage", "ca_file", "fallbacks",
     "weight", "retry_on_timeout", *_TIMEOUTS, *_BREAKER_TIMES, *_COUNTS}
)  # fmt: skip
MAX_WEIGHT = 1000


def upstream_label(base_url: str) -> str:
    """``host[:port]`` of a base URL, never its userinfo."""
    parts = urlsplit(base_url)
    host = parts.hostname or base_url
    return f"{host}:{parts.port}" if parts.port else host


class ConfigError(ValueError):
    """An ``[[upstreams]]`` table the relay refuses to start with (the CLI exits 2 with this message) or to reload
    (the config in force stays)."""


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    name: str
    base_url: str
    key_envs: tuple[str, ...] = ()  # environment variables holding this upstream's keys, used in turn
    models: tuple[str, ...] = ()  # exact names and glob patterns
    default: bool = False  # serves every model no other upstream claims
    max_concurrent: int = 0  # requests in flight to this upstream per worker; 0 = unlimited
    include_usage: bool = False  # ask for stream usage (stream_options.include_usage) on every stream
    connect_timeout_s: float = 10.0
    first_byte_timeout_s: float = 300.0
    idle_timeout_s: float = 300.0
    total_timeout_s: float = 3600.0
    max_connections: int = 0
    ca_file: str | None = None
    fallbacks: tuple[str, ...] = ()  # upstreams tried in order when this one fails before the first byte
    # A first-byte timeout here may send the request again (a retry, the next deployment or fallback): it may then
    # run twice, so only where the operator says so (proxy.routing._attempts)
    retry_on_timeout: bool = False
    weight: int = 1  # its share of its models' requests among their deployments (1 to MAX_WEIGHT)
    breaker_failures: int = 5  # failures in a row, within one window, that open the circuit; 0: no breaker
    breaker_window_s: float = 30.0
    breaker_cooldown_s: float = 30.0  # how long an open circuit stays open before one probe request


def single_upstream(settings: Settings) -> UpstreamConfig:
    """The one default upstream the flat settings (``--upstream``, ``--upstream-key-env``…) describe.

    Named by ``host[:port]``, as the metrics and access log named the upstream before routing existed.
    """
    return UpstreamConfig(
        name=upstream_label(settings.upstream),
        base_url=settings.upstream,
        key_envs=(settings.upstream_key_env,),
        default=True,
        **_inherited(settings),
    )


def _inherited(settings: Settings) -> dict[str, Any]:
    """What an upstream takes from the flat settings unless its table says otherwise."""
    return {
        "connect_timeout_s": settings.connect_timeout_s,
        "first_byte_timeout_s": settings.first_byte_timeout_s,
        "idle_timeout_s": settings.idle_timeout_s,
        "total_timeout_s": settings.total_timeout_s,
        "max_connections": settings.max_connections,
        "ca_file": settings.upstream_ca_file,
    }


def parse_upstreams(settings: Settings) -> tuple[UpstreamConfig, ...]:
    """The upstreams ``settings`` configure, validated: its ``upstreams`` tables, or the flat settings' one. Read
    it as ``settings.routes`` (parsed once per settings)."""
    if not settings.upstreams:
        return (single_upstream(settings),)
    configs = tuple(parse_upstream(table, settings, i) for i, table in enumerate(settings.upstreams))
    check_together(configs)
    return configs


def parse_upstream(table: Mapping[str, Any], settings: Settings, index: int = 0) -> UpstreamConfig:
    """One ``[[upstreams]]`` table → an UpstreamConfig; every mistake is a ConfigError that names it."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"upstreams[{index}]: expected a table, got {type(table).__name__}")
    name = table.get("name")
    where = f"upstream {name!r}" if isinstance(name, str) else f"upstreams[{index}]"
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_KEYS))}")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"{where}: 'name' is required: letters, digits, '.', '_' or '-' (at most 64)")
    base_url = table.get("base_url")
    if not isinstance(base_url, str) or not base_url:
        raise ConfigError(f"{where}: 'base_url' is required, e.g. https://api.moonshot.cn/v1")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: base_url {base_url!r} is not an http(s) URL")
    if "key_env" in table and "key_envs" in table:
        raise ConfigError(f"{where}: give 'key_env' or 'key_envs', not both")
    key_envs = table.get("key_envs", [table["key_env"]] if "key_env" in table else [])
    if not isinstance(key_envs, list) or not all(isinstance(k, str) and _ENV.fullmatch(k) for k in key_envs):
        raise ConfigError(f"{where}: key_env(s) must name environment variables, e.g. MOONSHOT_API_KEY")
    if len(set(key_envs)) != len(key_envs):
        raise ConfigError(f"{where}: key_envs lists a variable twice")
    models = table.get("models", [])
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise ConfigError(f"{where}: 'models' must be a list of model names or patterns")
    for pattern in models:
        problem = pattern_problem(pattern)
        if problem:
            raise ConfigError(f"{where}: bad model pattern {pattern!r}: {problem}")
    values: dict[str, Any] = _inherited(settings)
    for key in (*_TIMEOUTS, *_BREAKER_TIMES, *_COUNTS):
        if key not in table:
            continue
        value = table[key]
        integral = key in _COUNTS
        if isinstance(value, bool) or not isinstance(value, int if integral else (int, float)):
            raise ConfigError(f"{where}: '{key}' must be a number")
        if value < 0 or (not integral and value == 0):
            raise ConfigError(f"{where}: '{key}' must be {'at least 0' if integral else 'positive'}")
        values[key] = value if integral else float(value)
    for key in ("default", "include_usage", "retry_on_timeout"):
        if not isinstance(table.get(key, False), bool):
            raise ConfigError(f"{where}: '{key}' must be true or false")
    ca_file = table.get("ca_file", values["ca_file"])
    if ca_file is not None and not isinstance(ca_file, str):
        raise ConfigError(f"{where}: 'ca_file' must be a path")
    values["ca_file"] = ca_file
    fallbacks = table.get("fallbacks", [])
    if not isinstance(fallbacks, list) or not all(isinstance(f, str) for f in fallbacks):
        raise ConfigError(f"{where}: 'fallbacks' must be a list of upstream names")
    if name in fallbacks:
        raise ConfigError(f"{where}: 'fallbacks' lists the upstream itself")
    if len(set(fallbacks)) != len(fallbacks):
        raise ConfigError(f"{where}: 'fallbacks' lists an upstream twice")
    values["fallbacks"] = tuple(fallbacks)
    weight = table.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= MAX_WEIGHT:
        raise ConfigError(f"{where}: 'weight' must be a whole number from 1 to {MAX_WEIGHT}")
    values["weight"] = weight
    return UpstreamConfig(
        name=name,
        base_url=base_url,
        key_envs=tuple(key_envs),
        models=tuple(m for m in models if m != "*"),
        default=table.get("default", False) or "*" in models,
        include_usage=table.get("include_usage", False),
        retry_on_timeout=table.get("retry_on_timeout", False),
        **values,
    )


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot be a model name or glob (``*``, ``?``, ``[...]``); None when it can."""
    if not pattern:
        return "empty"
    if any(ch.isspace() or not ch.isprintable() for ch in pattern):
        return "contains whitespace or control characters"
    depth = 0
    for ch in pattern:
        if ch == "[":
            if depth:
                return "nested '['"
            depth = 1
        elif ch == "]" and depth:
            depth = 0
    if depth:
        return "'[' without a closing ']'"
    return None


def check_together(configs: Sequence[UpstreamConfig]) -> None:
    """What no single table shows: duplicate names, two defaults, a fallback that names no upstream. One exact
    model listed by several tables is allowed: they are its deployments."""
    names: set[str] = set()
    defaults = []
    for c in configs:
        if c.name in names:
            raise ConfigError(f"upstream name {c.name!r} is used twice")
        names.add(c.name)
        if c.default:
            defaults.append(c.name)
    for c in configs:
        unknown = [f for f in c.fallbacks if f not in names]
        if unknown:
            raise ConfigError(f"upstream {c.name!r}: 'fallbacks' names no upstream: {', '.join(unknown)}")
    if len(defaults) > 1:
        raise ConfigError(f"more than one default upstream ({', '.join(defaults)}): keep one 'default = true' or '*'")
