"""Which upstream serves a request, sans I/O: the ``[[upstreams]]`` config model, its validation, and
the model → upstream matcher.

    [[upstreams]]                       → UpstreamConfig (validated once, at startup)
    no [[upstreams]]: --upstream flags  → one UpstreamConfig, the default (exactly the single-upstream relay)
    Router.route("moonshot-v1-8k")      → the upstream's name, or None (→ 404 model_not_found)
    Router.deployments("kimi-k2")       → every upstream that lists the exact name: its deployments, balanced by
                                          ``weight`` and health (proxy.routing._balance, proxy.routing._health)
    fallbacks = ["b", "c"]              → tried in order when this upstream fails before the first byte
                                          (proxy.relay._relay; each name checked to exist, never itself)

Matching: exact model names first (across all upstreams; several tables may list one: they are its
deployments), then glob patterns (``moonshot-*``) in config order, then the default upstream (``default = true``,
or ``"*"`` among its models). A decision is cached per model name, so the per-request cost is one dict hit; the
cache is bounded because model names come from clients.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit

from ..config import Settings, load
from ..protocol import InvalidRequest

CACHE_LIMIT = 10_000  # distinct model names remembered; beyond it decisions are still right, just not cached
CACHED_NAME_MAX = 256  # longer names (no real model's) are decided, not remembered: 10,000 body-sized ones are GBs
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # it goes into metric labels and a request header
_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_GLOB_CHARS = frozenset("*?[")
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
    """An ``[[upstreams]]`` table the relay refuses to start with (the CLI exits 2 with this message)."""


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


def upstream_configs(settings: Settings) -> list[UpstreamConfig]:
    """The upstreams the relay serves, validated: ``settings.upstreams`` tables, or the flat settings' one."""
    if not settings.upstreams:
        return [single_upstream(settings)]
    configs = [parse_upstream(table, settings, i) for i, table in enumerate(settings.upstreams)]
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


def _is_exact(model: str) -> bool:
    return not _GLOB_CHARS.intersection(model)


class Router:
    """Model name → upstream names (its deployments, in config order), by the rules in the module docstring."""

    __slots__ = ("_exact", "_patterns", "default", "_cache")

    def __init__(self, configs: Iterable[UpstreamConfig]) -> None:
        self._exact: dict[str, tuple[str, ...]] = {}
        self._patterns: list[tuple[str, str]] = []
        self.default: str | None = None
        for c in configs:
            for model in c.models:
                if _is_exact(model):
                    self._exact[model] = (*self._exact.get(model, ()), c.name)
                else:
                    self._patterns.append((model, c.name))
            if c.default and self.default is None:
                self.default = c.name
        self._cache: dict[str, tuple[str, ...]] = {}

    def route(self, model: str) -> str | None:
        """The (first) upstream that serves ``model``; None when none does (no pattern matches, no default)."""
        found = self.deployments(model)
        return found[0] if found else None

    def deployments(self, model: str) -> tuple[str, ...]:
        """Every upstream that serves ``model`` (several when tables share its exact name); () when none does."""
        try:
            return self._cache[model]
        except KeyError:
            pass
        found = self._decide(model)
        if len(self._cache) < CACHE_LIMIT and len(model) <= CACHED_NAME_MAX:
            self._cache[model] = found
        return found

    def _decide(self, model: str) -> tuple[str, ...]:
        exact = self._exact.get(model)
        if exact is not None:
            return exact
        for pattern, name in self._patterns:
            if fnmatchcase(model, pattern):
                return (name,)
        return (self.default,) if self.default is not None else ()


def configured_models(settings: Settings) -> frozenset[str]:
    """The model names an operator configured: the default model and the exact names (not globs) in every
    upstream's ``models``. Only these name a metrics series; clients can send any string."""
    names = {settings.default_model}
    for config in upstream_configs(settings):
        names.update(m for m in config.models if _is_exact(m))
    return frozenset(names)


def describe_upstreams(settings: Settings) -> str:
    """For the startup line: ``upstream URL``, or the configured upstreams' names."""
    if not settings.upstreams:
        return f"upstream {settings.upstream}"
    return "upstreams " + ", ".join(str(t.get("name")) for t in settings.upstreams)


def the_model(model: str | None) -> str:
    """How an error names what the client asked for: the model (cut to 100 characters), never the upstreams that
    serve it (those are the operator's: the log names them)."""
    if model is None:
        return "this request"
    return f"the model {model if len(model) <= 100 else model[:100] + '…'!r}"


def model_not_found(model: str) -> InvalidRequest:
    """The 404 for a model no upstream serves (no pattern matches, and there is no default upstream)."""
    return InvalidRequest(f"No upstream serves {the_model(model)}.", "model_not_found", 404)


def load_settings(flags: Mapping[str, Any], environ: Mapping[str, str], config_file: str | None = None) -> Settings:
    """``proxy.config.load``, then the ``[[upstreams]]`` tables validated: a bad one stops startup (ConfigError is
    a ValueError)."""
    settings = load(flags, environ, config_file)
    upstream_configs(settings)
    return settings
