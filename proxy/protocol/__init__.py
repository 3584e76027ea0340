"""Sans-I/O protocol pieces, each pure and tested with bytes: SSE framing, request validation,
OpenAI-shaped errors, path normalisation, usage extraction, retry timing, who an upstream's 429 is about."""

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
from ._limited import Limited, limited_by
from ._paths import SEGMENT_CHARS, PathRefused, normalise
from ._retry import RETRY_STATUSES, parse_retry_after, retry_delay
from ._sse import DONE, EventSplitter, event_data, well_formed
from ._usage import UsageStripper, asked_for_usage, usage_only, with_usage
from ._validate import ChatRequest, InvalidRequest, check_chat_object, check_content_type, parse_chat_request

__all__ = [
    "ChatRequest",
    "DONE",
    "EventSplitter",
    "InvalidRequest",
    "JSON",
    "Limited",
    "MALFORMED_NDJSON",
    "MALFORMED_SSE",
    "PathRefused",
    "RETRY_STATUSES",
    "SEGMENT_CHARS",
    "SHUTDOWN_NDJSON",
    "SHUTDOWN_SSE",
    "SHUTTING_DOWN",
    "UsageStripper",
    "asked_for_usage",
    "check_chat_object",
    "check_content_type",
    "error_body",
    "event_data",
    "limited_by",
    "map_transport_error",
    "normalise",
    "parse_chat_request",
    "parse_retry_after",
    "retry_delay",
    "sse_error_event",
    "usage_only",
    "well_formed",
    "with_usage",
]
