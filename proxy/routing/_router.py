"""Which upstream serves a request, sans I/O: the model → upstream matcher over the typed ``[[upstreams]]``
(``Settings.routes``: proxy/upstreamconfig.py parses and validates them).

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

from collections.abc import Iterable
from fnmatch import fnmatchcase

from ..config import Settings
from ..protocol import InvalidRequest
from ..upstreamconfig import UpstreamConfig

CACHE_LIMIT = 10_000  # distinct model names remembered; beyond it decisions are still right, just not cached
CACHED_NAME_MAX = 256  # longer names (no real model's) are decided, not remembered: 10,000 body-sized ones are GBs

_GLOB_CHARS = frozenset("*?[")


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
    for config in settings.routes:
        names.update(m for m in config.models if _is_exact(m))
    return frozenset(names)


def describe_upstreams(settings: Settings) -> str:
    """For the startup line: ``upstream URL``, or the configured upstreams' names."""
    if not settings.upstreams:
        return f"upstream {settings.upstream}"
    return "upstreams " + ", ".join(c.name for c in settings.routes)


def the_model(model: str | None) -> str:
    """How an error names what the client asked for: the model (cut to 100 characters), never the upstreams that
    serve it (those are the operator's: the log names them)."""
    if model is None:
        return "this request"
    return f"the model {model if len(model) <= 100 else model[:100] + '…'!r}"


def model_not_found(model: str) -> InvalidRequest:
    """The 404 for a model no upstream serves (no pattern matches, and there is no default upstream)."""
    return InvalidRequest(f"No upstream serves {the_model(model)}.", "model_not_found", 404)
