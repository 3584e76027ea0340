"""A chat-completions answer as an Anthropic Message, sans I/O: what the stream and non-stream translations share.

``choices[0].message`` becomes content blocks: ``reasoning_content`` a ``thinking`` block (its ``signature`` empty:
only Anthropic can sign), ``content`` a ``text`` block, each tool call a ``tool_use`` block with its arguments
parsed. ``finish_reason`` becomes ``stop_reason``:

    stop → end_turn, or stop_sequence when the upstream says which one matched (vLLM, SGLang)
    length → max_tokens        tool_calls / function_call → tool_use (and so does any answer holding tool calls)
    content_filter → refusal   none or anything else → end_turn

Usage: ``input_tokens`` are the prompt tokens not read from a cache, ``cache_read_input_tokens`` the cached ones,
``output_tokens`` the completion tokens (Anthropic counts the three apart; their sum is the prompt).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from .. import TEXT, THINKING, TOOL, Block, MalformedAnswer, Usage, chat_usage, matched_stop, message_blocks
from ._check import MessagesRequest

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                "content_filter": "refusal"}  # fmt: skip


def message_id(chat_id: Any) -> str:
    return f"msg_{chat_id}" if isinstance(chat_id, str) and chat_id else f"msg_{uuid.uuid4().hex[:24]}"


def tool_use_id(block: Block) -> str:
    """The tool call's own id (clients send it back in ``tool_result``), or a new one where the upstream gave none."""
    if not block.call_id:
        block.call_id = f"toolu_{uuid.uuid4().hex[:24]}"
    return block.call_id


def stop_reason(
    finish: str | None, matched: str | None, stop_sequences: tuple[str, ...], tool_calls: bool
) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) for a chat ``finish_reason``."""
    if finish == "stop" and matched is not None and matched in stop_sequences:
        return "stop_sequence", matched
    reason = STOP_REASONS.get(finish or "", "end_turn")
    if tool_calls and reason == "end_turn":
        return "tool_use", None
    return reason, None


def usage_fields(usage: Usage | None) -> dict[str, int]:
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0}
    return {
        "input_tokens": max(0, usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens),
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
    }


def content_block(block: Block, truncated: bool = False) -> dict[str, Any]:
    """The Messages content block for a finished block (``truncated``: the answer hit ``max_tokens``, so a tool
    call's arguments may be cut short; their parsed part is lost and ``input`` is empty)."""
    if block.kind is TEXT:
        return {"type": "text", "text": block.text}
    if block.kind is THINKING:
        return {"type": "thinking", "thinking": block.text, "signature": ""}
    arguments = block.text
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        if not truncated:
            raise MalformedAnswer(f"The upstream's arguments for the tool call {block.name!r} are not JSON.") from None
        value = {}
    if not isinstance(value, dict):
        raise MalformedAnswer(f"The upstream's arguments for the tool call {block.name!r} are not a JSON object.")
    return {"type": "tool_use", "id": tool_use_id(block), "name": block.name, "input": value}


def chat_to_message(chat: Any, request: MessagesRequest) -> dict[str, Any]:
    """The Message for a non-streamed chat-completions answer (parsed JSON); :class:`MalformedAnswer` if it has
    no ``choices[0].message``."""
    choices = chat.get("choices") if isinstance(chat, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedAnswer("The upstream's answer has no choices.")
    choice = choices[0]
    blocks = message_blocks(choice.get("message"))
    finish = choice.get("finish_reason")
    finish = finish if isinstance(finish, str) else None
    truncated = finish == "length"
    reason, sequence = stop_reason(
        finish, matched_stop(choice), request.stop_sequences, any(b.kind is TOOL for b in blocks)
    )
    model = chat.get("model")
    return {
        "id": message_id(chat.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model if isinstance(model, str) and model else request.model,
        "content": [content_block(b, truncated) for b in blocks],
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage_fields(chat_usage(chat)),
    }
