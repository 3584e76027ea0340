"""Sans-I/O protocol pieces, each pure and tested with bytes: SSE framing, request validation,
OpenAI-shaped errors, path normalisation, usage extraction, retry timing, who an upstream's 429 is about.

The subpackages ``messages`` (Anthropic Messages) and ``responses`` (OpenAI Responses) validate those protocols and
translate them onto chat completions; they build on the shared pieces exported here (token usage, the chat-stream
block core, JSON bytes) and are imported by name, not from here."""

from ._chatblocks import TEXT, THINKING, TOOL, Block, MalformedAnswer, matched_stop, message_blocks
from ._chatstream import ChatStreamTranslator
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
from ._fields import (
    invalid,
    is_int,
    is_number,
    optional_bool,
    optional_dict,
    optional_int,
    optional_number,
    optional_str,
    refuse_fields,
    required_str,
    string_list,
    untranslatable,
)
from ._jsonbytes import dumps, json_str
from ._limited import Limited, limited_by
from ._paths import SEGMENT_CHARS, PathRefused, normalise
from ._retry import RETRY_STATUSES, parse_retry_after, retry_delay
from ._sse import DONE, EventSplitter, event_data, well_formed
from ._tokens import Usage, chat_usage, count, usage_from_chat
from ._usage import (
    ReportedUsage,
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
from ._validate import ChatRequest, InvalidRequest, check_chat_object, check_content_type, load_json, parse_chat_request

__all__ = [
    "Block",
    "ChatRequest",
    "ChatStreamTranslator",
    "DONE",
    "EventMeter",
    "EventSplitter",
    "InvalidRequest",
    "JSON",
    "JSONUsage",
    "Limited",
    "MALFORMED_NDJSON",
    "MALFORMED_SSE",
    "MAX_EVENT_BYTES",
    "MAX_USAGE_BYTES",
    "MalformedAnswer",
    "PathRefused",
    "RETRY_STATUSES",
    "ReportedUsage",
    "SEGMENT_CHARS",
    "SHUTDOWN_NDJSON",
    "SHUTDOWN_SSE",
    "SHUTTING_DOWN",
    "TEXT",
    "THINKING",
    "TOOL",
    "Usage",
    "UsageMeter",
    "UsageStripper",
    "asked_for_usage",
    "carries_usage",
    "chat_usage",
    "check_chat_object",
    "check_content_type",
    "count",
    "dumps",
    "error_body",
    "event_data",
    "invalid",
    "is_int",
    "is_number",
    "json_or_none",
    "json_str",
    "limited_by",
    "load_json",
    "map_transport_error",
    "matched_stop",
    "message_blocks",
    "normalise",
    "optional_bool",
    "optional_dict",
    "optional_int",
    "optional_number",
    "optional_str",
    "parse_chat_request",
    "parse_retry_after",
    "refuse_fields",
    "required_str",
    "retry_delay",
    "sse_error_event",
    "string_list",
    "untranslatable",
    "usage_from_chat",
    "usage_in",
    "usage_of",
    "usage_only",
    "well_formed",
    "with_usage",
]
