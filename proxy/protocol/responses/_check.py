"""OpenAI Responses request validation, sans I/O: bytes in, a checked request or a 400 out.

What the Responses API reference says of ``POST /v1/responses``
(https://platform.openai.com/docs/api-reference/responses/create): ``input`` a string or a list of items (messages
with a ``role`` and string or part-list ``content``; ``function_call``, ``function_call_output``, ``reasoning`` and
other typed items), ``model`` a string, the sampling ranges (``temperature`` 0 to 2, ``top_p`` 0 to 1),
``max_output_tokens`` a positive integer, ``tools`` typed objects, ``tool_choice`` a mode or an object,
``text.format`` one of ``text``, ``json_object``, ``json_schema`` (with ``name`` and ``schema``).

These checks hold for a native Responses upstream too, so fields and item types this module does not know pass:
refusing what cannot go to a chat-completions upstream is the translator's job (``_request.py``, ``_items.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import (
    invalid,
    load_json,
    optional_bool,
    optional_dict,
    optional_int,
    optional_number,
    optional_str,
    required_str,
    string_list,
)

ROLES = frozenset({"user", "assistant", "system", "developer"})
TOOL_MODES = frozenset({"none", "auto", "required"})
FORMATS = frozenset({"text", "json_object", "json_schema"})


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    """A checked ``POST /v1/responses`` body: its parsed ``data`` and the fields the relay reads. ``model`` is None
    when the client left it out (the relay's default model then serves)."""

    model: str | None
    stream: bool
    store: bool  # the client said ``store: true`` (absent or false: nothing is kept)
    previous_response_id: str | None
    data: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


def parse_responses_request(raw: bytes) -> ResponsesRequest:
    """Check a ``POST /v1/responses`` body; :class:`~proxy.protocol.InvalidRequest` (400) names what is wrong."""
    return check_responses_request(load_json(raw))


def check_responses_request(data: Any) -> ResponsesRequest:
    if not isinstance(data, dict):
        raise invalid("body", "must be a JSON object.")
    model = data.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise invalid("model", "must be a non-empty string.")
    _check_input(data.get("input"))
    optional_str(data, "instructions")
    optional_int(data, "max_output_tokens", 1)
    optional_number(data, "temperature", 0, 2)
    optional_number(data, "top_p", 0, 1)
    for name in ("stream", "store", "parallel_tool_calls", "background"):
        optional_bool(data, name)
    for name in ("previous_response_id", "user", "safety_identifier", "prompt_cache_key"):
        optional_str(data, name)
    string_list(data, "include")
    optional_dict(data, "metadata")
    optional_dict(data, "reasoning")
    _check_tools(data.get("tools"))
    _check_tool_choice(data.get("tool_choice"))
    _check_text(optional_dict(data, "text"))
    return ResponsesRequest(
        model, data.get("stream") is True, data.get("store") is True, data.get("previous_response_id"), data
    )


def _check_input(items: Any) -> None:
    if items is None or isinstance(items, str):
        return
    if not isinstance(items, list):
        raise invalid("input", "must be a string or a list of items.")
    for i, item in enumerate(items):
        path = f"input.{i}"
        if not isinstance(item, dict):
            raise invalid(path, "must be an object.")
        kind = item.get("type", "message" if "role" in item else None)
        if not isinstance(kind, str):
            raise invalid(f"{path}.type", "Field required (a string)." if kind is None else "must be a string.")
        if kind == "message":
            if not isinstance(item.get("role"), str) or item["role"] not in ROLES:
                raise invalid(f"{path}.role", "must be 'user', 'assistant', 'system' or 'developer'.")
            content = item.get("content")
            if isinstance(content, list):
                for j, part in enumerate(content):
                    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                        raise invalid(f"{path}.content.{j}", "must be an object with a type.")
            elif not isinstance(content, str):
                raise invalid(f"{path}.content", "must be a string or a list of content parts.")
        elif kind == "function_call":
            for name in ("call_id", "name", "arguments"):
                required_str(item, name, f"{path}.{name}")
        elif kind == "function_call_output":
            required_str(item, "call_id", f"{path}.call_id")
            output = item.get("output")
            if not isinstance(output, (str, list)):
                raise invalid(f"{path}.output", "must be a string or a list of content parts.")


def _check_tools(tools: Any) -> None:
    if tools is None:
        return
    if not isinstance(tools, list):
        raise invalid("tools", "must be a list.")
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise invalid(f"tools.{i}", "must be an object.")
        if required_str(tool, "type", f"tools.{i}.type") == "function":
            if not required_str(tool, "name", f"tools.{i}.name"):
                raise invalid(f"tools.{i}.name", "must not be empty.")
            optional_dict(tool, "parameters", f"tools.{i}.parameters")
            optional_bool(tool, "strict")


def _check_tool_choice(choice: Any) -> None:
    if choice is None or (isinstance(choice, str) and choice in TOOL_MODES):
        return
    if not isinstance(choice, dict) or not isinstance(choice.get("type"), str):
        raise invalid("tool_choice", "must be 'none', 'auto', 'required' or an object with a type.")
    if choice["type"] == "function":
        required_str(choice, "name", "tool_choice.name")


def _check_text(text: dict[str, Any] | None) -> None:
    if text is None:
        return
    fmt = optional_dict(text, "format", "text.format")
    if fmt is None:
        return
    if not isinstance(fmt.get("type"), str) or fmt["type"] not in FORMATS:
        raise invalid("text.format.type", "must be 'text', 'json_object' or 'json_schema'.")
    if fmt["type"] == "json_schema":
        required_str(fmt, "name", "text.format.name")
        if not isinstance(fmt.get("schema"), dict):
            raise invalid("text.format.schema", "Field required (a JSON schema object).")
