"""Anthropic Messages, sans I/O: request checks (for native and translated upstreams alike), the translation onto
chat completions (request, answer, stream), the protocol's errors, native usage, and the model list and token
count routes. Mapping tables: docs/reference.md, "Anthropic Messages and OpenAI Responses"."""

from ._check import MessagesRequest, check_messages_request, parse_messages_request
from ._errors import PING, messages_error, messages_error_body, messages_error_event, messages_status
from ._models import ESTIMATE_HEADER, anthropic_models, count_tokens_answer, count_tokens_chat, estimate_tokens
from ._request import messages_to_chat
from ._response import chat_to_message
from ._stream import MessagesStream
from ._usage import MessagesUsageReader, message_usage

__all__ = [
    "ESTIMATE_HEADER",
    "MessagesRequest",
    "MessagesStream",
    "MessagesUsageReader",
    "PING",
    "anthropic_models",
    "chat_to_message",
    "check_messages_request",
    "count_tokens_answer",
    "count_tokens_chat",
    "estimate_tokens",
    "message_usage",
    "messages_error",
    "messages_error_body",
    "messages_error_event",
    "messages_status",
    "messages_to_chat",
    "parse_messages_request",
]
