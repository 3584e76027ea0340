"""A chat-completions stream as Anthropic Messages events, sans I/O: upstream event data in, SSE bytes out.

The sequence clients expect (https://docs.anthropic.com/en/docs/build-with-claude/streaming): ``message_start``
(a Message with empty content), then per content block ``content_block_start``, its deltas (``text_delta``,
``thinking_delta``, ``input_json_delta``) and ``content_block_stop``, blocks one after another with indices
counting from 0; then ``message_delta`` (``stop_reason``, ``stop_sequence``, cumulative ``usage``) and
``message_stop``. Each event is ``event: <type>`` plus ``data: <JSON with the same type>``.

``message_start`` goes out with the first upstream chunk (never before the upstream answered, so that the relay may
still fall back), with ``input_tokens`` as far as the caller knows them: a chat upstream tells them only at the
end, so ``message_delta`` carries them too (the SDKs take a ``message_delta``'s ``input_tokens`` over
``message_start``'s). A failure mid-stream is ``event: error`` (``_errors.py``). Deltas are rendered from a
per-block template: one string escape and one concatenation per chunk.
"""

from __future__ import annotations

from typing import Any

from .. import TEXT, THINKING, TOOL, Block, ChatStreamTranslator, dumps, json_str
from ._check import MessagesRequest
from ._errors import messages_error_event
from ._response import message_id, stop_reason, tool_use_id, usage_fields

_DELTA_OF = {
    TEXT: b'"delta":{"type":"text_delta","text":',
    THINKING: b'"delta":{"type":"thinking_delta","thinking":',
    TOOL: b'"delta":{"type":"input_json_delta","partial_json":',
}
_DELTA_HEAD = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
_STOP = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":%d}\n\n'
_MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + dumps(data) + b"\n\n"


class MessagesStream(ChatStreamTranslator):
    """Chat SSE data in (:meth:`feed` / :meth:`feed_chunk`), Messages SSE bytes out; :meth:`end` at the end of the
    upstream body, :meth:`fail` for a failure after the start. ``usage`` is the upstream's, for the relay."""

    __slots__ = ("_request", "_message_id", "_input_tokens")

    def __init__(self, request: MessagesRequest, *, input_tokens: int = 0, message_id: str | None = None) -> None:
        super().__init__()
        self._request = request
        self._input_tokens = input_tokens
        self._message_id = message_id

    def _begin(self, chunk: dict[str, Any]) -> None:
        if self._message_id is None:
            self._message_id = message_id(chunk.get("id"))
        model = chunk.get("model")
        usage = {"input_tokens": self._input_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                 "output_tokens": 0}  # fmt: skip
        message = {
            "id": self._message_id,
            "type": "message",
            "role": "assistant",
            "model": model if isinstance(model, str) and model else self._request.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        self._out.append(event("message_start", {"type": "message_start", "message": message}))

    def _opened(self, block: Block) -> None:
        if block.kind is TEXT:
            start: dict[str, Any] = {"type": "text", "text": ""}
        elif block.kind is THINKING:
            start = {"type": "thinking", "thinking": "", "signature": ""}
        else:
            start = {"type": "tool_use", "id": tool_use_id(block), "name": block.name, "input": {}}
        self._out.append(
            event("content_block_start", {"type": "content_block_start", "index": block.index, "content_block": start})
        )
        block.prefix = _DELTA_HEAD + b"%d," % block.index + _DELTA_OF[block.kind]

    def _delta(self, block: Block, text: str) -> None:
        self._out.append(block.prefix + json_str(text) + b"}}\n\n")

    def _closed(self, block: Block) -> None:
        self._out.append(_STOP % block.index)

    def _completed(self) -> None:
        tools = any(b.kind is TOOL for b in self._blocks)
        reason, sequence = stop_reason(self._finish, self._matched, self._request.stop_sequences, tools)
        usage = usage_fields(self._usage) if self._usage is not None else {"output_tokens": 0}
        delta = {"stop_reason": reason, "stop_sequence": sequence}
        self._out.append(event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
        self._out.append(_MESSAGE_STOP)

    def _failed(self, status: int, code: str, message: str) -> None:
        self._out.append(messages_error_event(status, code, message))
