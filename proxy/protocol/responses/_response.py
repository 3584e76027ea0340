"""A chat-completions answer as an OpenAI Response object, sans I/O: what the stream and non-stream translations
share (https://platform.openai.com/docs/api-reference/responses/object).

``choices[0].message`` becomes output items: ``reasoning_content`` a ``reasoning`` item (its text as
``reasoning_text`` content; no summary), ``content`` a ``message`` item with one ``output_text`` part, each tool
call a ``function_call`` item (``call_id`` the upstream's tool call id). ``finish_reason`` ``length`` makes the
response ``incomplete`` (``incomplete_details.reason`` ``max_output_tokens``), ``content_filter`` too (reason
``content_filter``); anything else ``completed``. Usage: ``input_tokens`` are all prompt tokens, the cached ones
also in ``input_tokens_details.cached_tokens``. The response repeats the request's settings, as the API does.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from .. import TEXT, THINKING, TOOL, Block, MalformedAnswer, Usage, chat_usage, message_blocks
from ._check import ResponsesRequest

INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
_ITEM_PREFIX = {TEXT: "msg", THINKING: "rs", TOOL: "fc"}


def new_response_id() -> str:
    return f"resp_{uuid.uuid4().hex}"


def item_id(response_id: str, block: Block) -> str:
    """An output item's id: its kind's prefix, the response's id and its place in the output."""
    if not block.item_id:
        block.item_id = f"{_ITEM_PREFIX[block.kind]}_{response_id.removeprefix('resp_')}_{block.index}"
    return block.item_id


def call_id(block: Block) -> str:
    if not block.call_id:
        block.call_id = f"call_{uuid.uuid4().hex[:24]}"
    return block.call_id


def echo(request: ResponsesRequest) -> dict[str, Any]:
    """The request's settings as a Response repeats them."""
    data = request.data
    reasoning = data.get("reasoning") or {}
    text: dict[str, Any] = {"format": (data.get("text") or {}).get("format") or {"type": "text"}}
    if (data.get("text") or {}).get("verbosity") is not None:
        text["verbosity"] = data["text"]["verbosity"]
    return {
        "instructions": data.get("instructions"),
        "max_output_tokens": data.get("max_output_tokens"),
        "metadata": data.get("metadata") or {},
        "parallel_tool_calls": data.get("parallel_tool_calls", True) is not False,
        "previous_response_id": request.previous_response_id,
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": request.store,
        "temperature": data.get("temperature"),
        "text": text,
        "tool_choice": data.get("tool_choice") or "auto",
        "tools": data.get("tools") or [],
        "top_p": data.get("top_p"),
        "truncation": "disabled",
        "user": data.get("user"),
    }


def envelope(response_id: str, created_at: int, model: str, settings: dict[str, Any], status: str) -> dict[str, Any]:
    """A Response object with no output yet."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "model": model,
        "output": [],
        "usage": None,
        **settings,
    }


def usage_fields(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": usage.cache_write_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def arguments(block: Block, truncated: bool) -> str:
    """A function call's arguments: "{}" for none; not JSON (and not cut short by max_output_tokens): 502."""
    text = block.text
    if not text.strip():
        return "{}"
    if not truncated:
        try:
            json.loads(text)
        except ValueError:
            raise MalformedAnswer(f"The upstream's arguments for the tool call {block.name!r} are not JSON.") from None
    return text


def output_item(block: Block, response_id: str, status: str, truncated: bool = False) -> dict[str, Any]:
    """The output item for a finished block."""
    ident = item_id(response_id, block)
    if block.kind is TEXT:
        part = {"type": "output_text", "text": block.text, "annotations": [], "logprobs": []}
        return {"id": ident, "type": "message", "status": status, "role": "assistant", "content": [part]}
    if block.kind is THINKING:
        part = {"type": "reasoning_text", "text": block.text}
        return {"id": ident, "type": "reasoning", "status": status, "summary": [], "content": [part]}
    return {"id": ident, "type": "function_call", "status": status, "call_id": call_id(block), "name": block.name,
            "arguments": arguments(block, truncated)}  # fmt: skip


def finish(response: dict[str, Any], finish_reason: str | None, blocks: list[Block], usage: Usage | None) -> None:
    """Fill ``response`` (an :func:`envelope`) with its output, status and usage for a chat ``finish_reason``."""
    reason = INCOMPLETE.get(finish_reason or "")
    response["status"] = "incomplete" if reason else "completed"
    response["incomplete_details"] = {"reason": reason} if reason else None
    last = len(blocks) - 1
    response["output"] = [
        output_item(b, response["id"], "incomplete" if reason and i == last else "completed", reason is not None)
        for i, b in enumerate(blocks)
    ]
    response["usage"] = usage_fields(usage)


def chat_to_response(
    chat: Any, request: ResponsesRequest, *, response_id: str | None = None, created_at: int | None = None
) -> dict[str, Any]:
    """The Response for a non-streamed chat-completions answer (parsed JSON); :class:`MalformedAnswer` if it has
    no ``choices[0].message``."""
    choices = chat.get("choices") if isinstance(chat, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedAnswer("The upstream's answer has no choices.")
    model = chat.get("model")
    response = envelope(
        response_id or new_response_id(),
        int(time.time()) if created_at is None else created_at,
        model if isinstance(model, str) and model else request.model or "",
        echo(request),
        "completed",
    )
    reason = choices[0].get("finish_reason")
    finish(response, reason if isinstance(reason, str) else None, message_blocks(choices[0].get("message")),
           chat_usage(chat))  # fmt: skip
    return response
