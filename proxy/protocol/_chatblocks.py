"""A chat-completions answer as content blocks, sans I/O: what the Messages and Responses translators build their
content and output items from, streamed (``_chatstream.py``) or whole (:func:`message_blocks`)."""

from __future__ import annotations

import json
from typing import Any

from ..errors import UpstreamFailed

TEXT, THINKING, TOOL = "text", "thinking", "tool"
NEW, HELD, OPEN, CLOSED = 0, 1, 2, 3


class MalformedAnswer(UpstreamFailed):
    """A chat answer that cannot be translated (no choices, tool arguments that are not JSON): a 502 to the client,
    as for any upstream answer that breaks its protocol."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "upstream_malformed")


class Block:
    """One content block (Messages) or output item (Responses): its kind and its text or arguments so far."""

    __slots__ = ("kind", "parts", "index", "call_id", "name", "state", "checked", "complete", "prefix", "item_id")

    def __init__(self, kind: str, call_id: str | None = None, name: str = "") -> None:
        self.kind = kind
        self.parts: list[str] = []
        self.index = -1  # its position in the output, once it has opened
        self.call_id = call_id
        self.name = name
        self.state = NEW
        self.checked = -1  # len(parts) when the arguments were last checked for a whole JSON value
        self.complete = False
        self.prefix = b""  # the renderer's per-block template
        self.item_id = ""

    @property
    def text(self) -> str:
        return "".join(self.parts)


def message_blocks(message: Any) -> list[Block]:
    """The blocks of a non-streamed chat ``choices[0].message``: reasoning, text, then tool calls."""
    blocks: list[Block] = []
    if not isinstance(message, dict):
        return blocks
    for kind, value in (
        (THINKING, message.get("reasoning_content") or message.get("reasoning")),
        (TEXT, message.get("content")),
        (TEXT, message.get("refusal")),
    ):
        if isinstance(value, list):  # content parts, as a few upstreams answer
            value = "".join(p.get("text", "") for p in value if isinstance(p, dict) and isinstance(p.get("text"), str))
        if isinstance(value, str) and value:
            block = Block(kind)
            block.parts.append(value)
            blocks.append(block)
    for call in message.get("tool_calls") or ():
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            block = Block(TOOL, call.get("id") if isinstance(call.get("id"), str) else None, str(fn.get("name") or ""))
            block.parts.append(arguments(fn.get("arguments")) or "")
            blocks.append(block)
    for i, block in enumerate(blocks):
        block.index, block.state = i, CLOSED
    return blocks


def matched_stop(choice: dict[str, Any]) -> str | None:
    """The stop sequence a choice ended on, where the upstream says (vLLM's ``stop_reason``, SGLang's
    ``matched_stop``); OpenAI, Moonshot and DeepSeek do not."""
    for name in ("stop_reason", "matched_stop"):
        value = choice.get(name)
        if isinstance(value, str):
            return value
    return None


def arguments(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):  # an upstream that sends the arguments as an object
        return json.dumps(value, ensure_ascii=False)
    return None
