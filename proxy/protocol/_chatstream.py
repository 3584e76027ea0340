"""Chat-completions chunks in, content blocks out, sans I/O: the part the Messages and Responses stream translators
share (each subclass renders the blocks as its protocol's events).

A chat stream mixes reasoning (``delta.reasoning_content``), text (``delta.content``) and tool calls
(``delta.tool_calls``, fragments keyed by ``index``). Both protocols want blocks that open, stream and close one at
a time, so:

- at most one block is open, and a fragment of the open block goes out at once;
- a fragment of anything else closes the open block and opens its own, if the open block is finished: text and
  reasoning always are (more of them later opens a new block), a tool call when its arguments so far are a whole
  JSON value (nothing can follow a complete value);
- otherwise (an upstream that interleaves tool calls) that fragment and everything else but the open block is held
  until the stream ends; then the held blocks go out whole, in the order they first appeared.

Every upstream we know sends tool calls one after another, so the first rule streams each live; the second keeps
an interleaving upstream correct. The blocks close with the finish reason. Usage is taken wherever it comes (top
level, or ``choices[0]`` as Moonshot sends it); the stream completes when it has come with or after the finish
reason, else at ``[DONE]`` or at the end of the body (:meth:`end`); a body that ends before a finish reason or
``[DONE]`` is a failure.
"""

from __future__ import annotations

import json
from typing import Any

from ._chatblocks import CLOSED, HELD, NEW, OPEN, TEXT, THINKING, TOOL, Block, arguments, matched_stop
from ._tokens import Usage, usage_from_chat

_loads = json.loads
_decode = json.JSONDecoder().raw_decode


class _Malformed(Exception):
    """The upstream's stream broke the chat protocol: the client's stream ends with an error."""


class ChatStreamTranslator:
    """Feed it each upstream event's data (:meth:`feed`) or parsed chunk (:meth:`feed_chunk`); each call returns the
    client's bytes for it (often ``b""``). :meth:`end` when the upstream body ends, :meth:`fail` when it fails.

    Subclasses render: ``_begin(chunk)`` (the first chunk), ``_opened(block)``, ``_delta(block, text)``,
    ``_closed(block)``, ``_completed()``, ``_failed(status, code, message)``, appending bytes to ``self._out``.
    """

    __slots__ = ("_out", "_blocks", "_open", "_tools", "_held", "_holding", "_started", "_done", "_finish",
                 "_matched", "_usage", "_usage_final", "_saw_done")  # fmt: skip

    def __init__(self) -> None:
        self._out: list[bytes] = []
        self._blocks: list[Block] = []  # opened, in output order
        self._open: Block | None = None
        self._tools: dict[int, Block] = {}  # chat tool-call index -> its block
        self._held: list[Block] = []
        self._holding = False
        self._started = False
        self._done = False
        self._finish: str | None = None
        self._matched: str | None = None
        self._usage: Usage | None = None
        self._usage_final = False  # the usage came with or after the finish reason
        self._saw_done = False

    @property
    def usage(self) -> Usage | None:
        """The upstream's usage, once it has come."""
        return self._usage

    @property
    def done(self) -> bool:
        """Whether the client's stream has ended (completed or failed): later calls return ``b""``."""
        return self._done

    @property
    def finish_reason(self) -> str | None:
        return self._finish

    def feed(self, payload: bytes) -> bytes:
        """One upstream event's data: a chunk's JSON, or ``[DONE]``."""
        if self._done:
            return b""
        if payload == b"[DONE]":
            self._saw_done = True
            self._out = []
            self._complete()
            return b"".join(self._out)
        try:  # str then raw_decode: json.loads(bytes) would detect the encoding and regex-match the end each time
            text = payload.decode()
            chunk, end = _decode(text)
            if end != len(text) and not text[end:].isspace():
                chunk = None
        except ValueError:  # UnicodeDecodeError too; or leading whitespace, which raw_decode does not skip
            try:
                chunk = _loads(payload)
            except ValueError:
                chunk = None
        if not isinstance(chunk, dict):
            return self.fail(502, "upstream_malformed", "The upstream sent an event that is not a JSON object.")
        return self.feed_chunk(chunk)

    def feed_chunk(self, chunk: dict[str, Any]) -> bytes:
        if self._done:
            return b""
        out = self._out = []
        choices = chunk.get("choices")
        if "error" in chunk and not choices:
            return self._upstream_error(chunk["error"])
        if not self._started:
            self._started = True
            self._begin(chunk)
        try:
            self._chunk(chunk, choices)
        except _Malformed as exc:
            self._done = True
            self._failed(502, "upstream_malformed", str(exc))
        return out[0] if len(out) == 1 else b"".join(out)

    def _chunk(self, chunk: dict[str, Any], choices: Any) -> None:
        if choices and type(choices) is list and type(choices[0]) is dict:
            choice = choices[0]
            delta = choice.get("delta")
            if delta and type(delta) is dict:
                # One pass over what the delta holds (usually one field) instead of a lookup per field it might hold.
                for key, value in delta.items():
                    if not value:
                        continue
                    if key == "content" or key == "refusal":
                        if type(value) is str:
                            self._fragment(TEXT, value)
                    elif key == "reasoning_content" or key == "reasoning":
                        if type(value) is str:
                            self._fragment(THINKING, value)
                    elif key == "tool_calls" and type(value) is list:
                        for call in value:
                            self._tool_fragment(call)
            reason = choice.get("finish_reason")
            if reason and type(reason) is str:
                self._finish = reason
                self._matched = matched_stop(choice)
                self._usage_final = False
                self._settle()
            usage = choice.get("usage")
            if usage and type(usage) is dict:
                self._take_usage(usage)
        usage = chunk.get("usage")
        if usage and type(usage) is dict:
            self._take_usage(usage)
        if self._usage_final:
            self._complete()

    def end(self) -> bytes:
        """The upstream body ended without a transport error."""
        if self._done:
            return b""
        if self._finish is None and not self._saw_done:
            return self.fail(502, "upstream_incomplete", "The upstream's stream ended before the answer was complete.")
        self._out = []
        self._complete()
        return b"".join(self._out)

    def fail(self, status: int, code: str, message: str) -> bytes:
        """The stream's last bytes for a failure after it started (the relay's error: status, code, message)."""
        if self._done:
            return b""
        self._done = True
        self._out = []
        self._failed(status, code, message)
        return b"".join(self._out)

    # -- the block rules (module docstring) ---------------------------------------------------------------------

    def _fragment(self, kind: str, text: str) -> None:
        block = self._open
        if block is not None and block.kind is kind:
            block.parts.append(text)
            self._delta(block, text)
            return
        if not self._holding and block is not None and not self._finished(block):
            self._holding = True
        if self._holding:
            self._held_of(kind).parts.append(text)
            return
        if block is not None:
            self._close(block)
        block = Block(kind)
        self._start(block)
        block.parts.append(text)
        self._delta(block, text)

    def _tool_fragment(self, call: Any) -> None:
        if type(call) is not dict:
            return
        index = call.get("index")
        if type(index) is not int:
            index = 0
        fn = call.get("function")
        name = args = None
        if type(fn) is dict:
            name, args = fn.get("name"), arguments(fn.get("arguments"))
        block = self._tools.get(index)
        if block is None:
            call_id = call.get("id")
            block = self._tools[index] = Block(TOOL, call_id if type(call_id) is str and call_id else None)
        elif block.call_id is None and type(call.get("id")) is str and call["id"]:
            block.call_id = call["id"]
        state = block.state
        if state == CLOSED:
            if args and not args.isspace():
                raise _Malformed("The upstream sent arguments for a tool call after they formed a whole value.")
            return
        if args:
            block.parts.append(args)
        if state == OPEN:
            if args:
                self._delta(block, args)
            return
        if state == HELD:
            return
        if not block.name and name and type(name) is str:
            block.name = name
        if not block.name:
            return  # opens once its name has come
        if not self._holding and self._open is not None and not self._finished(self._open):
            self._holding = True
        if self._holding:
            block.state = HELD
            self._held.append(block)
            return
        if self._open is not None:
            self._close(self._open)
        self._start(block)
        if block.parts:
            self._delta(block, "".join(block.parts))

    def _finished(self, block: Block) -> bool:
        if block.kind is not TOOL:
            return True
        if block.checked != len(block.parts):
            block.checked = len(block.parts)
            try:
                _loads("".join(block.parts))
                block.complete = True
            except ValueError:
                block.complete = False
        return block.complete

    def _held_of(self, kind: str) -> Block:
        for block in reversed(self._held):
            if block.kind is kind:
                return block
        block = Block(kind)
        block.state = HELD
        self._held.append(block)
        return block

    def _start(self, block: Block) -> None:
        block.index = len(self._blocks)
        block.state = OPEN
        self._blocks.append(block)
        self._open = block
        self._opened(block)

    def _close(self, block: Block) -> None:
        if block.kind is TOOL and self._finish != "length" and not self._finished(block) and block.text.strip():
            raise _Malformed(f"The upstream's arguments for the tool call {block.name!r} are not valid JSON.")
        block.state = CLOSED
        self._open = None
        self._closed(block)

    def _take_usage(self, usage: dict[str, Any]) -> None:
        self._usage = usage_from_chat(usage)
        if self._finish is not None:
            self._usage_final = True

    def _complete(self) -> None:
        try:
            self._complete_blocks()
        except _Malformed as exc:
            self._failed(502, "upstream_malformed", str(exc))
        self._done = True

    def _complete_blocks(self) -> None:
        if self._done:
            return
        if not self._started:
            self._started = True
            self._begin({})
        self._settle()
        self._completed()

    def _settle(self) -> None:
        """The content is over: close the open block, then send the held ones whole."""
        if self._open is not None:
            self._close(self._open)
        for block in self._held:
            if block.kind is TOOL and not block.name:
                continue
            self._start(block)
            if block.parts:
                self._delta(block, "".join(block.parts))
            self._close(block)
        self._held = []
        if any(b.state == NEW for b in self._tools.values()):
            raise _Malformed("The upstream streamed a tool call without a name.")

    def _upstream_error(self, error: Any) -> bytes:
        """An error object in the stream (``data: {"error": {...}}``), as OpenAI-compatible upstreams send one."""
        kind = message = None
        if isinstance(error, dict):
            kind, message = error.get("type") or error.get("code"), error.get("message")
        kind = kind if isinstance(kind, str) else "upstream_error"
        status = 429 if "rate_limit" in kind else 503 if "overload" in kind else 502
        return self.fail(status, kind, message if isinstance(message, str) else "The upstream failed mid-stream.")

    # -- rendering, by the subclass --------------------------------------------------------------------------------

    def _begin(self, chunk: dict[str, Any]) -> None:
        raise NotImplementedError

    def _opened(self, block: Block) -> None:
        raise NotImplementedError

    def _delta(self, block: Block, text: str) -> None:
        raise NotImplementedError

    def _closed(self, block: Block) -> None:
        raise NotImplementedError

    def _completed(self) -> None:
        raise NotImplementedError

    def _failed(self, status: int, code: str, message: str) -> None:
        raise NotImplementedError
