"""OpenAI Responses, sans I/O: request checks (for native and translated upstreams alike), the translation onto
chat completions (request, answer, stream) with the hook for a response store, the protocol's errors and native
usage. Mapping tables: docs/reference.md, "Anthropic Messages and OpenAI Responses"."""

from ._check import ResponsesRequest, check_responses_request, parse_responses_request
from ._errors import responses_error, responses_error_type
from ._request import StoreRequired, responses_to_chat
from ._response import chat_to_response
from ._stream import ResponsesStream
from ._usage import response_usage, responses_event_usage

__all__ = [
    "ResponsesRequest",
    "ResponsesStream",
    "StoreRequired",
    "chat_to_response",
    "check_responses_request",
    "parse_responses_request",
    "response_usage",
    "responses_error",
    "responses_error_type",
    "responses_event_usage",
    "responses_to_chat",
]
