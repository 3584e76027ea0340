"""OpenTelemetry traces (``--otel-endpoint``): a server span per request, a client span per upstream attempt, the
W3C ``traceparent`` taken from the client and passed upstream. The SDK (the ``otel`` extra) is loaded only when
tracing is on."""

from ._sdklog import SDKLines
from ._spans import (
    FIRST_CHUNK,
    PROVIDERS,
    AttemptSpan,
    ServerSpan,
    Tracing,
    check_tracing,
    provider_name,
    request_attributes,
)
from ._w3c import (
    Parent,
    TracingOptions,
    clean_tracestate,
    format_traceparent,
    parse_headers,
    parse_traceparent,
    traces_url,
    tracing_options,
)

__all__ = [
    "FIRST_CHUNK",
    "PROVIDERS",
    "AttemptSpan",
    "Parent",
    "SDKLines",
    "SDKLines",
    "ServerSpan",
    "Tracing",
    "TracingOptions",
    "check_tracing",
    "clean_tracestate",
    "format_traceparent",
    "parse_headers",
    "parse_traceparent",
    "provider_name",
    "request_attributes",
    "traces_url",
    "tracing_options",
]
