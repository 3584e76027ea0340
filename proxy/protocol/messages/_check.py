"""Anthropic Messages request validation, sans I/O: bytes in, a checked request or a 400 out.

What the Messages API reference requires of ``POST /v1/messages`` (https://docs.anthropic.com/en/api/messages):
``model``, ``max_tokens`` and a non-empty ``messages`` list; each message a ``role`` (``user`` or ``assistant``;
``system`` as the current SDK also sends) and ``content`` (a string or content blocks, each with a ``type``);
non-empty content except in a final assistant message (a prefill); the sampling ranges (``temperature`` and
``top_p`` from 0 to 1). Consecutive turns of one role are one turn, as the API combines them.

These checks hold for a native Messages upstream too, so fields and block types this module does not know pass:
refusing what cannot go to a chat-completions upstream is the translator's job (``_request.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import (
    invalid,
    is_int,
    load_json,
    optional_bool,
    optional_dict,
    optional_int,
    optional_number,
    optional_str,
    required_str,
    string_list,
)

ROLES = frozenset({"user", "assistant", "system"})
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
TOOL_CHOICES = frozenset({"auto", "any", "tool", "none"})
THINKING = frozenset({"enabled", "disabled", "adaptive"})


@dataclass(frozen=True, slots=True)
class MessagesRequest:
    """A checked ``POST /v1/messages`` body: its parsed ``data`` and the fields the relay reads."""

    model: str
    stream: bool
    max_tokens: int
    stop_sequences: tuple[str, ...] = ()
    data: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


def parse_messages_request(raw: bytes) -> MessagesRequest:
    """Check a ``POST /v1/messages`` body; :class:`~proxy.protocol.InvalidRequest` (400) names what is wrong."""
    return check_messages_request(load_json(raw))


def check_messages_request(data: Any, *, count_tokens: bool = False) -> MessagesRequest:
    """Check a parsed body (``count_tokens``: a ``/v1/messages/count_tokens`` body, which has no ``max_tokens``)."""
    if not isinstance(data, dict):
        raise invalid("body", "must be a JSON object.")
    model = required_str(data, "model", "model")
    if not model:
        raise invalid("model", "must not be empty.")
    max_tokens = data.get("max_tokens")
    if not count_tokens:
        if max_tokens is None:
            raise invalid("max_tokens", "Field required.")
        if not is_int(max_tokens) or max_tokens < 0:
            raise invalid("max_tokens", "must be a non-negative integer.")
    _check_messages(data.get("messages"))
    _check_system(data.get("system"))
    stop = string_list(data, "stop_sequences")
    optional_bool(data, "stream")
    optional_number(data, "temperature", 0, 1)
    optional_number(data, "top_p", 0, 1)
    optional_int(data, "top_k", 0)
    metadata = optional_dict(data, "metadata")
    if metadata is not None:
        optional_str(metadata, "user_id", "metadata.user_id")
    _check_tools(data.get("tools"))
    _check_tool_choice(data.get("tool_choice"))
    _check_thinking(data.get("thinking"), max_tokens)
    return MessagesRequest(model, data.get("stream") is True, max_tokens or 0, tuple(stop), data)


def _check_messages(messages: Any) -> None:
    if messages is None:
        raise invalid("messages", "Field required.")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages", "must be a non-empty list.")
    last = len(messages) - 1
    for i, message in enumerate(messages):
        path = f"messages.{i}"
        if not isinstance(message, dict):
            raise invalid(path, "must be an object.")
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise invalid(f"{path}.role", "must be 'user' or 'assistant' (or 'system').")
        content = message.get("content")
        if isinstance(content, str):
            if not content and not (i == last and role == "assistant"):
                raise invalid(path, "all messages must have non-empty content except for the optional final "
                              "assistant message.")  # fmt: skip
            continue
        if not isinstance(content, list):
            raise invalid(f"{path}.content", "must be a string or a list of content blocks.")
        if not content and not (i == last and role == "assistant"):
            raise invalid(path, "all messages must have non-empty content except for the optional final "
                          "assistant message.")  # fmt: skip
        for j, block in enumerate(content):
            check_block(block, f"{path}.content.{j}", role)


def check_block(block: Any, path: str, role: str) -> None:
    """One content block of a ``role`` message (or, with role ``tool_result``, of a tool result's content)."""
    if not isinstance(block, dict):
        raise invalid(path, "must be an object.")
    kind = required_str(block, "type", f"{path}.type")
    if kind == "text":
        required_str(block, "text", f"{path}.text")
    elif kind == "image":
        source = block.get("source")
        if not isinstance(source, dict):
            raise invalid(f"{path}.source", "Field required.")
        source_type = source.get("type")
        if source_type == "base64":
            if not isinstance(source.get("media_type"), str) or source["media_type"] not in IMAGE_TYPES:
                raise invalid(f"{path}.source.media_type", f"must be one of {', '.join(sorted(IMAGE_TYPES))}.")
            required_str(source, "data", f"{path}.source.data")
        elif source_type == "url":
            required_str(source, "url", f"{path}.source.url")
        elif source_type != "file":
            raise invalid(f"{path}.source.type", "must be 'base64', 'url' or 'file'.")
    elif kind == "tool_use":
        if role != "assistant":
            raise invalid(path, "tool_use blocks belong in assistant messages.")
        required_str(block, "id", f"{path}.id")
        required_str(block, "name", f"{path}.name")
        if not isinstance(block.get("input"), dict):
            raise invalid(f"{path}.input", "must be an object.")
    elif kind == "tool_result":
        if role != "user":
            raise invalid(path, "tool_result blocks belong in user messages.")
        required_str(block, "tool_use_id", f"{path}.tool_use_id")
        optional_bool(block, "is_error")
        content = block.get("content")
        if isinstance(content, list):
            for k, inner in enumerate(content):
                check_block(inner, f"{path}.content.{k}", "tool_result")
        elif content is not None and not isinstance(content, str):
            raise invalid(f"{path}.content", "must be a string or a list of content blocks.")
    elif kind == "thinking":
        if role != "assistant":
            raise invalid(path, "thinking blocks belong in assistant messages.")
        required_str(block, "thinking", f"{path}.thinking")
        optional_str(block, "signature", f"{path}.signature")


def _check_system(system: Any) -> None:
    if system is None or isinstance(system, str):
        return
    if not isinstance(system, list):
        raise invalid("system", "must be a string or a list of text blocks.")
    for i, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise invalid(f"system.{i}", "must be a text block.")
        required_str(block, "text", f"system.{i}.text")


def _check_tools(tools: Any) -> None:
    if tools is None:
        return
    if not isinstance(tools, list):
        raise invalid("tools", "must be a list.")
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise invalid(f"tools.{i}", "must be an object.")
        if not required_str(tool, "name", f"tools.{i}.name"):
            raise invalid(f"tools.{i}.name", "must not be empty.")
        if tool.get("type") in (None, "custom"):
            schema = tool.get("input_schema")
            if not isinstance(schema, dict):
                raise invalid(f"tools.{i}.input_schema", "Field required (a JSON schema object).")
            optional_str(tool, "description", f"tools.{i}.description")


def _check_tool_choice(choice: Any) -> None:
    if choice is None:
        return
    if not isinstance(choice, dict) or not isinstance(choice.get("type"), str) or choice["type"] not in TOOL_CHOICES:
        raise invalid("tool_choice", "must be an object whose type is 'auto', 'any', 'tool' or 'none'.")
    if choice["type"] == "tool":
        required_str(choice, "name", "tool_choice.name")
    optional_bool(choice, "disable_parallel_tool_use")


def _check_thinking(thinking: Any, max_tokens: Any) -> None:
    if thinking is None:
        return
    if not isinstance(thinking, dict) or not isinstance(thinking.get("type"), str) or thinking["type"] not in THINKING:
        raise invalid("thinking", "must be an object whose type is 'enabled', 'disabled' or 'adaptive'.")
    if thinking["type"] == "enabled":
        budget = thinking.get("budget_tokens")
        if not is_int(budget) or budget < 1024:
            raise invalid("thinking.budget_tokens", "must be an integer of at least 1024.")
        if is_int(max_tokens) and budget >= max_tokens:
            raise invalid("thinking.budget_tokens", "must be less than max_tokens.")
