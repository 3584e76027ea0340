"""W3C Trace Context headers and the ``--otel-*`` settings, sans I/O: strings in, values or a ValueError out.

``traceparent`` is ``VERSION-TRACEID-PARENTID-FLAGS`` in lowercase hex (W3C Trace Context, level 1): a value that
breaks any rule is ignored, never an error (the request is traced as a new trace), and so is its ``tracestate``.
Version ``00`` is exactly 55 characters; a later version may carry more after a ``-``, which a version-00 reader
skips; version ``ff`` is invalid, as are an all-zero trace id or parent id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
TRACESTATE_MAX = 512  # the length every vendor must pass on; a longer tracestate is dropped, not cut
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token
TRACES_PATH = "/v1/traces"


@dataclass(frozen=True, slots=True)
class Parent:
    """A caller's trace context: where this request's server span hangs."""

    trace_id: int
    span_id: int
    flags: int
    tracestate: str | None = None


def parse_traceparent(value: str | None, tracestate: str | None = None) -> Parent | None:
    """The parent a ``traceparent`` header names (with its ``tracestate`` when that is usable), or None when it is
    missing or invalid."""
    if not value:
        return None
    value = value.strip(" \t")
    found = _TRACEPARENT.match(value)
    if found is None:
        return None
    version, trace, span, flags = found.groups()
    if version == "ff" or (version == "00" and len(value) != 55) or (len(value) > 55 and value[55] != "-"):
        return None
    trace_id, span_id = int(trace, 16), int(span, 16)
    if not trace_id or not span_id:
        return None
    return Parent(trace_id, span_id, int(flags, 16), clean_tracestate(tracestate))


def clean_tracestate(value: str | None) -> str | None:
    """A ``tracestate`` to pass on as it came: printable ASCII of at most :data:`TRACESTATE_MAX` characters."""
    if not value:
        return None
    value = value.strip(" \t")
    if not value or len(value) > TRACESTATE_MAX or not value.isascii() or not value.isprintable():
        return None
    return value


def format_traceparent(trace_id: int, span_id: int, flags: int) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{flags & 0xFF:02x}"


@dataclass(frozen=True, slots=True)
class TracingOptions:
    """The ``--otel-*`` settings, checked: where spans go and how many."""

    endpoint: str  # the OTLP/HTTP traces URL
    sample_ratio: float = 1.0
    service_name: str = "moonrelay"
    headers: dict[str, str] = field(default_factory=dict)


def tracing_options(settings: Any) -> TracingOptions | None:
    """The options ``settings`` give (``otel_endpoint``, ``otel_sample_ratio``, ``otel_service_name``,
    ``otel_headers``), or None when tracing is off (no endpoint). A value the relay cannot use is a ValueError that
    names the setting."""
    if not settings.otel_endpoint:
        return None
    ratio = settings.otel_sample_ratio
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"otel_sample_ratio: expected a number from 0 to 1, got {ratio}")
    name = settings.otel_service_name.strip()
    if not name:
        raise ValueError("otel_service_name: must not be empty")
    return TracingOptions(traces_url(settings.otel_endpoint), ratio, name, parse_headers(settings.otel_headers))


def traces_url(endpoint: str) -> str:
    """The URL spans are posted to: ``endpoint`` as given, or with ``/v1/traces`` when it names no path (a
    collector's base URL, ``http://HOST:4318``)."""
    try:
        parts = urlsplit(endpoint.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ValueError(f"otel_endpoint: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"otel_endpoint: expected http://HOST:PORT or https://HOST:PORT/PATH, got {endpoint!r}")
    if parts.username or parts.password:
        raise ValueError("otel_endpoint: credentials in the URL would be logged; send them with otel_headers")
    if parts.path in ("", "/"):
        parts = parts._replace(path=TRACES_PATH)
    return parts.geturl()


def parse_headers(text: str) -> dict[str, str]:
    """``key=value,key2=value2`` (``OTEL_EXPORTER_OTLP_HEADERS``' format: values percent-encoded) as a dict."""
    out: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not _HEADER_NAME.fullmatch(name):  # the text is not shown: it may hold a key
            raise ValueError("otel_headers: expected name=value pairs separated by commas")
        out[name.lower()] = unquote(value.strip())
    return out
