"""Sans-I/O protocol pieces, each pure and tested with bytes: SSE framing, request validation,
OpenAI-shaped errors, path normalisation, usage extraction, retry timing."""

from ._errors import (
    JSON,
    MALFORMED_NDJSON,
    MALFORMED_SSE,
    SHUTDOWN_NDJSON,
    SHUTDOWN_SSE,
    SHUTTING_DOWN,
    error_body,
    map_transport_error,
    sse_error_event,
)
from ._paths import SEGMENT_CHARS, PathRefused, normalise
from ._retry import RETRY_STATUSES, parse_retry_after, retry_delay
from ._sse import DONE, EventSplitter, event_data, well_formed
from ._usage import (
    Usage,
    UsageMeter,
    UsageStripper,
    asked_for_usage,
    carries_usage,
    json_or_none,
    usage_in,
    usage_of,
    usage_only,
    with_usage,
)
from ._usagescan import MAX_EVENT_BYTES, MAX_USAGE_BYTES, EventMeter, JSONUsage
from ._validate import ChatRequest, InvalidRequest, check_chat_object, check_content_type, parse_chat_request

__all__ = [
    "ChatRequest",
    "DONE",
    "EventMeter",
    "EventSplitter",
    "InvalidRequest",
    "JSON",
    "JSONUsage",
    "MALFORMED_NDJSON",
    "MALFORMED_SSE",
    "MAX_EVENT_BYTES",
    "MAX_USAGE_BYTES",
    "PathRefused",
    "RETRY_STATUSES",
    "SEGMENT_CHARS",
    "SHUTDOWN_NDJSON",
    "SHUTDOWN_SSE",
    "SHUTTING_DOWN",
    "Usage",
    "UsageMeter",
    "UsageStripper",
    "asked_for_usage",
    "carries_usage",
    "check_chat_object",
    "check_content_type",
    "error_body",
    "event_data",
    "json_or_none",
    "map_transport_error",
    "normalise",
    "parse_chat_request",
    "parse_retry_after",
    "retry_delay",
    "sse_error_event",
    "usage_in",
    "usage_of",
    "usage_only",
    "well_formed",
    "with_usage",
]
