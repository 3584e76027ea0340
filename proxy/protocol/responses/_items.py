"""Responses ``input`` items as chat-completions messages, sans I/O.

    message (user)              → user message: input_text → text part, input_image → image_url part
    message (system, developer) → system message (the role every chat upstream knows)
    message (assistant)         → assistant message: output_text and refusal parts as its text
    function_call               → a tool call of the assistant message it follows (consecutive calls: one message)
    function_call_output        → tool message (its text; images it holds follow in a user message)
    reasoning                   → reasoning_content of the assistant message that follows it

Every ``function_call`` must be answered by a ``function_call_output`` before the next message, and every output
must answer a call, as the Responses API and every chat upstream require. An ``item_reference``, hosted-tool items,
files and encrypted-only reasoning cannot be translated and are refused (a 400 naming the item).
"""

from __future__ import annotations

from typing import Any

from .. import refuse_fields, untranslatable

SEPARATOR = "\n\n"  # between the text parts of one message, which chat carries as one string
_WHY = "has no chat-completions equivalent."
_FIELDS = {
    "message": frozenset({"type", "role", "content", "id", "status"}),
    "function_call": frozenset({"type", "call_id", "name", "arguments", "id", "status"}),
    "function_call_output": frozenset({"type", "call_id", "output", "id", "status"}),
    "reasoning": frozenset({"type", "id", "summary", "content", "encrypted_content", "status"}),
}
_TEXT = frozenset({"input_text", "output_text", "text"})


class _Conversation:
    """The chat messages built so far, and what the next item must answer or may join."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.open_calls: list[str] = []  # function_call ids not answered yet
        self.reasoning: list[str] = []  # for the next assistant message
        self.images: list[dict[str, Any]] = []  # from function_call_output items, for a user message after them

    def assistant(self) -> dict[str, Any]:
        """The assistant message an assistant item joins: the last message if it is one, else a new one."""
        last = self.messages[-1] if self.messages else None
        if last is None or last["role"] != "assistant":
            last = {"role": "assistant", "content": None}
            self.messages.append(last)
        if self.reasoning:
            last["reasoning_content"] = SEPARATOR.join(self.reasoning)
            self.reasoning = []
        return last

    def settle(self, path: str) -> None:
        """Before a message: every call answered, the images of tool outputs placed."""
        if self.open_calls:
            raise untranslatable(path, f"no function_call_output answers the call {self.open_calls[0]!r}; each "
                                 "function_call must be answered before the next message.")  # fmt: skip
        if self.images:
            self.messages.append({"role": "user", "content": self.images})
            self.images = []


def items_to_messages(items: Any) -> list[dict[str, Any]]:
    """Chat messages for a request's ``input`` (a string or checked items)."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    conversation = _Conversation()
    for i, item in enumerate(items):
        path = f"input.{i}"
        kind = item.get("type", "message")
        if kind not in _FIELDS:
            if kind == "item_reference":
                raise untranslatable(path, "an item_reference names an item in a response store; send the item.")
            raise untranslatable(path, f"a {kind!r} item {_WHY}")
        refuse_fields(item, _FIELDS[kind], path, _WHY)
        if kind == "message":
            _message(item, path, conversation)
        elif kind == "function_call":
            if conversation.images or (conversation.messages and conversation.messages[-1]["role"] == "tool"):
                conversation.settle(path)  # a call after outputs starts a new assistant turn
            message = conversation.assistant()
            message.setdefault("tool_calls", []).append(
                {
                    "id": item["call_id"],
                    "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]},
                }  # fmt: skip
            )
            conversation.open_calls.append(item["call_id"])
        elif kind == "function_call_output":
            call_id = item["call_id"]
            if call_id not in conversation.open_calls:
                raise untranslatable(f"{path}.call_id", f"no function_call with call_id {call_id!r} comes before "
                                     "this output (or it was answered already).")  # fmt: skip
            conversation.open_calls.remove(call_id)
            content = _output(item["output"], path, conversation.images)
            conversation.messages.append({"role": "tool", "tool_call_id": call_id, "content": content})
        elif text := _reasoning(item, path):
            conversation.reasoning.append(text)
    conversation.settle(f"input.{len(items)}")
    return conversation.messages


def _message(item: dict[str, Any], path: str, conversation: _Conversation) -> None:
    role = item["role"]
    content = item["content"]
    if role == "assistant":
        if conversation.open_calls or conversation.images:
            conversation.settle(path)
        text = content if isinstance(content, str) else _assistant_text(content, path)
        message = conversation.assistant()
        message["content"] = text if message["content"] is None else message["content"] + SEPARATOR + text
        return
    conversation.settle(path)
    if role in ("system", "developer"):
        text = content if isinstance(content, str) else SEPARATOR.join(_texts(content, path))
        conversation.messages.append({"role": "system", "content": text})
        return
    if isinstance(content, str):
        conversation.messages.append({"role": "user", "content": content})
        return
    parts = _parts(content, path)
    if all(part["type"] == "text" for part in parts):
        conversation.messages.append({"role": "user", "content": SEPARATOR.join(p["text"] for p in parts)})
    else:
        conversation.messages.append({"role": "user", "content": parts})


def _parts(content: list[dict[str, Any]], path: str) -> list[dict[str, Any]]:
    parts = []
    for j, part in enumerate(content):
        kind = part["type"]
        if kind in _TEXT:
            parts.append({"type": "text", "text": _text(part, f"{path}.content.{j}")})
        elif kind == "input_image":
            parts.append(_image(part, f"{path}.content.{j}"))
        else:
            raise untranslatable(f"{path}.content.{j}", f"a {kind!r} part {_WHY}")
    return parts


def _texts(content: list[dict[str, Any]], path: str) -> list[str]:
    out = []
    for j, part in enumerate(content):
        if part["type"] not in _TEXT:
            raise untranslatable(f"{path}.content.{j}", f"a {part['type']!r} part in this message {_WHY}")
        out.append(_text(part, f"{path}.content.{j}"))
    return out


def _assistant_text(content: list[dict[str, Any]], path: str) -> str:
    out = []
    for j, part in enumerate(content):
        if part["type"] == "refusal" and isinstance(part.get("refusal"), str):
            out.append(part["refusal"])
        elif part["type"] in _TEXT:
            refuse_fields(part, frozenset({"type", "text", "annotations", "logprobs"}), f"{path}.content.{j}", _WHY)
            out.append(_text(part, f"{path}.content.{j}"))
        else:
            raise untranslatable(f"{path}.content.{j}", f"a {part['type']!r} part in an assistant message {_WHY}")
    return SEPARATOR.join(out)


def _text(part: dict[str, Any], path: str) -> str:
    text = part.get("text")
    if not isinstance(text, str):
        raise untranslatable(f"{path}.text", "must be a string.")
    return text


def _image(part: dict[str, Any], path: str) -> dict[str, Any]:
    url = part.get("image_url")
    if not isinstance(url, str):
        raise untranslatable(path, "a file_id names a file stored at OpenAI; send the image_url (or a data URL).")
    refuse_fields(part, frozenset({"type", "image_url", "detail", "file_id"}), path, _WHY)
    image: dict[str, Any] = {"url": url}
    if part.get("detail") is not None:
        image["detail"] = part["detail"]
    return {"type": "image_url", "image_url": image}


def _output(output: Any, path: str, images: list[dict[str, Any]]) -> str:
    if isinstance(output, str):
        return output
    texts = []
    for j, part in enumerate(output):
        part_path = f"{path}.output.{j}"
        if not isinstance(part, dict):
            raise untranslatable(part_path, "must be an object.")
        kind = part.get("type")
        if isinstance(kind, str) and kind in _TEXT:
            texts.append(_text(part, part_path))
        elif kind == "input_image":
            images.append(_image(part, part_path))
        else:
            raise untranslatable(part_path, f"a {part.get('type')!r} part in a function_call_output {_WHY}")
    return SEPARATOR.join(texts)


def _reasoning(item: dict[str, Any], path: str) -> str:
    """The reasoning's text: its ``reasoning_text`` content, else its summary."""
    for key in ("content", "summary"):
        parts = item.get(key)
        if not isinstance(parts, list):
            continue
        texts = [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]
        if texts:
            return SEPARATOR.join(texts)
    if item.get("encrypted_content"):
        raise untranslatable(path, "this reasoning item holds only encrypted_content, which only its issuer can "
                             "read; leave it out of the input.")  # fmt: skip
    return ""
