"""A chat-completions stream as OpenAI Responses semantic events, sans I/O: upstream event data in, SSE bytes out.

The sequence (https://platform.openai.com/docs/api-reference/responses-streaming): ``response.created`` and
``response.in_progress`` (the Response with no output), then per output item ``response.output_item.added``;
for a message ``response.content_part.added``, ``response.output_text.delta``…, ``response.output_text.done``,
``response.content_part.done``; for reasoning the same with ``reasoning_text``; for a function call
``response.function_call_arguments.delta``… and ``.done``; then ``response.output_item.done``; items one after
another. Last, ``response.completed`` (or ``response.incomplete`` when the answer was cut at ``max_output_tokens``
or filtered) with the whole Response and its usage. Every event carries ``sequence_number``, from 0, one apart.

A failure after the start ends with ``response.failed``: the Response with ``status: failed``, its ``error``
(``code`` ``rate_limit_exceeded`` for a 429, else ``server_error``) and the output so far. The first events go out
with the first upstream chunk, never before, so the relay may still fall back. Deltas are rendered from per-block
templates.
"""

from __future__ import annotations

import time
from typing import Any

from .. import TEXT, THINKING, TOOL, Block, ChatStreamTranslator, dumps, json_str
from ._check import ResponsesRequest
from ._response import INCOMPLETE, call_id, echo, envelope, item_id, new_response_id, output_item, usage_fields

_DELTA = {TEXT: "response.output_text.delta", THINKING: "response.reasoning_text.delta",
          TOOL: "response.function_call_arguments.delta"}  # fmt: skip
_HEAD = {kind: b"event: %s\ndata: {\"type\":\"%s\",\"sequence_number\":" % (name.encode(), name.encode())
         for kind, name in _DELTA.items()}  # fmt: skip
_TAIL = {TEXT: b',"logprobs":[]}\n\n', THINKING: b"}\n\n", TOOL: b"}\n\n"}
_PART = {TEXT: "output_text", THINKING: "reasoning_text"}


class ResponsesStream(ChatStreamTranslator):
    """Chat SSE data in (:meth:`feed` / :meth:`feed_chunk`), Responses SSE bytes out; :meth:`end` at the end of the
    upstream body, :meth:`fail` for a failure after the start. ``usage`` is the upstream's, for the relay;
    ``response`` the Response object as it stands (for a relay that stores it)."""

    __slots__ = ("_request", "_response", "_response_id", "_created_at", "_seq", "_items")

    def __init__(
        self, request: ResponsesRequest, *, response_id: str | None = None, created_at: int | None = None
    ) -> None:
        super().__init__()
        self._request = request
        self._response_id = response_id or new_response_id()
        self._created_at = int(time.time()) if created_at is None else created_at
        self._response: dict[str, Any] = {}
        self._seq = 0
        self._items: list[dict[str, Any]] = []

    @property
    def response(self) -> dict[str, Any]:
        return self._response

    def _emit(self, kind: str, **fields: Any) -> None:
        data = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        self._out.append(b"event: " + kind.encode() + b"\ndata: " + dumps(data) + b"\n\n")

    def _begin(self, chunk: dict[str, Any]) -> None:
        model = chunk.get("model")
        model = model if isinstance(model, str) and model else self._request.model or ""
        self._response = envelope(self._response_id, self._created_at, model, echo(self._request), "in_progress")
        self._emit("response.created", response=self._response)
        self._emit("response.in_progress", response=self._response)

    def _opened(self, block: Block) -> None:
        ident = item_id(self._response_id, block)
        index = block.index
        if block.kind is TEXT:
            item: dict[str, Any] = {"id": ident, "type": "message", "status": "in_progress", "role": "assistant",
                                    "content": []}  # fmt: skip
        elif block.kind is THINKING:
            item = {"id": ident, "type": "reasoning", "status": "in_progress", "summary": [], "content": []}
        else:
            item = {"id": ident, "type": "function_call", "status": "in_progress", "call_id": call_id(block),
                    "name": block.name, "arguments": ""}  # fmt: skip
        self._emit("response.output_item.added", output_index=index, item=item)
        mid = b',"item_id":' + json_str(ident) + b',"output_index":%d,' % index
        if block.kind is TOOL:
            block.prefix = mid + b'"delta":'
            return
        part = {"type": _PART[block.kind], "text": ""}
        if block.kind is TEXT:
            part.update(annotations=[], logprobs=[])
        self._emit("response.content_part.added", item_id=ident, output_index=index, content_index=0, part=part)
        block.prefix = mid + b'"content_index":0,"delta":'

    def _delta(self, block: Block, text: str) -> None:
        seq = self._seq
        self._seq = seq + 1
        kind = block.kind
        self._out.append(_HEAD[kind] + b"%d" % seq + block.prefix + json_str(text) + _TAIL[kind])

    def _closed(self, block: Block) -> None:
        cut = self._finish in INCOMPLETE and block.index == len(self._blocks) - 1
        item = output_item(block, self._response_id, "incomplete" if cut else "completed", self._finish == "length")
        self._items.append(item)
        ident, index = item["id"], block.index
        if block.kind is TOOL:
            self._emit("response.function_call_arguments.done", item_id=ident, output_index=index,
                       arguments=item["arguments"])  # fmt: skip
        else:
            part = item["content"][0]
            if block.kind is TEXT:
                self._emit("response.output_text.done", item_id=ident, output_index=index, content_index=0,
                           text=part["text"], logprobs=[])  # fmt: skip
            else:
                self._emit("response.reasoning_text.done", item_id=ident, output_index=index, content_index=0,
                           text=part["text"])  # fmt: skip
            self._emit("response.content_part.done", item_id=ident, output_index=index, content_index=0, part=part)
        self._emit("response.output_item.done", output_index=index, item=item)

    def _completed(self) -> None:
        response = self._response
        reason = INCOMPLETE.get(self._finish or "")
        response["status"] = "incomplete" if reason else "completed"
        response["incomplete_details"] = {"reason": reason} if reason else None
        response["output"] = self._items
        response["usage"] = usage_fields(self._usage)
        self._emit("response.incomplete" if reason else "response.completed", response=response)

    def _failed(self, status: int, code: str, message: str) -> None:
        if not self._started:
            self._started = True
            self._begin({})
        response = self._response
        output = list(self._items)
        if self._open is not None:  # the item being streamed, as far as it came
            output.append(output_item(self._open, self._response_id, "incomplete", truncated=True))
        response["status"] = "failed"
        response["error"] = {"code": "rate_limit_exceeded" if status == 429 else "server_error", "message": message}
        response["output"] = output
        response["usage"] = usage_fields(self._usage)
        self._emit("response.failed", response=response)
