"""The other Messages routes clients call, sans I/O: ``GET /v1/models`` in Anthropic's list shape and
``POST /v1/messages/count_tokens``.

A model list (https://docs.anthropic.com/en/api/models-list) is ``{"data": [{"type": "model", "id",
"display_name", "created_at"}], "has_more", "first_id", "last_id"}``, ``created_at`` an RFC 3339 time; the relay
builds it from the OpenAI-shaped list it already merges (``created`` in Unix seconds).

Token counting (https://docs.anthropic.com/en/api/messages-count-tokens) answers ``{"input_tokens": N}``. A chat
upstream has no such route, so the relay answers either with an exact count from an upstream's own tokenizer
(Moonshot's ``POST /v1/tokenizers/estimate-token-count`` takes the chat ``model`` and ``messages``:
:func:`count_tokens_chat` builds them) or, where there is none, with :func:`estimate_tokens`, which says what it is:
``x-moonrelay-token-count: estimate`` on the response (:func:`count_tokens_answer`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from .. import JSON, dumps, is_int, load_json
from ._check import check_messages_request
from ._request import messages_to_chat

ESTIMATE_HEADER = "x-moonrelay-token-count"
IMAGE_TOKENS = 1600  # what a large image costs in Anthropic's own accounting (about 1.15 megapixels / 750)
MESSAGE_TOKENS = 4  # a message's role and framing


def anthropic_models(models: Iterable[dict[str, Any]]) -> bytes:
    """Anthropic's model list for OpenAI-shaped model objects (``id``, ``created``)."""
    data = []
    for model in models:
        model_id = model.get("id")
        if not isinstance(model_id, str):
            continue
        created = model.get("created")
        when = datetime.fromtimestamp(created if is_int(created) and created >= 0 else 0, UTC)
        data.append({"type": "model", "id": model_id, "display_name": model_id,
                     "created_at": when.strftime("%Y-%m-%dT%H:%M:%SZ")})  # fmt: skip
    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
    return dumps({"data": data, "has_more": False, "first_id": first, "last_id": last})


def count_tokens_chat(raw: bytes) -> dict[str, Any]:
    """A checked ``count_tokens`` body as chat ``model``, ``messages`` and ``tools`` (400s as for a message)."""
    request = check_messages_request(load_json(raw), count_tokens=True)
    return messages_to_chat(request, count_tokens=True)


def estimate_tokens(chat: dict[str, Any]) -> int:
    """A rough count of a chat request's input tokens: a quarter token per ASCII character, one per other
    character (CJK text runs near one token a character), ``IMAGE_TOKENS`` per image, and a few per message."""
    text: list[str] = []
    images = 0
    for message in chat.get("messages", ()):
        content = message.get("content")
        if isinstance(content, str):
            text.append(content)
        elif isinstance(content, list):
            for part in content:
                if part.get("type") == "text":
                    text.append(part["text"])
                else:
                    images += 1
        text.append(message.get("reasoning_content") or "")
        for call in message.get("tool_calls") or ():
            text.append(call["function"]["name"] + call["function"]["arguments"])
    for tool in chat.get("tools", ()):
        text.append(dumps(tool["function"]).decode())
    joined = "".join(text)
    ascii_chars = len(joined.encode("ascii", "ignore"))
    return (math.ceil(ascii_chars / 4) + len(joined) - ascii_chars + IMAGE_TOKENS * images
            + MESSAGE_TOKENS * len(chat.get("messages", ())))  # fmt: skip


def count_tokens_answer(input_tokens: int, *, estimate: bool) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a ``count_tokens`` answer; an estimate says so in a header."""
    headers = {"content-type": JSON}
    if estimate:
        headers[ESTIMATE_HEADER] = "estimate"
    return 200, headers, dumps({"input_tokens": input_tokens})
