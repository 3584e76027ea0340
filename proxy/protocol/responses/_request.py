"""An OpenAI Responses request as a chat-completions request, sans I/O: a checked request in, a chat body out.

The relay is stateless: a request that needs a response store (``previous_response_id``, or ``store: true``, which
promises that the response can be fetched or continued later) raises :class:`StoreRequired`. A relay with a store
catches it, loads the earlier response's items and calls :func:`responses_to_chat` again with them as ``history``
and ``store=True``; without one, the route answers it as the 400 it is. ``store`` left out is taken as false: the
relay keeps nothing, and says ``"store": false`` in its response.

The field table (mapped, ignored with a reason, refused) is in docs/reference.md, "Anthropic Messages and OpenAI
Responses"; the items are mapped in ``_items.py``.
"""

from __future__ import annotations

from typing import Any

from .. import InvalidRequest, refuse_fields, untranslatable
from ._check import ResponsesRequest
from ._items import items_to_messages

MAPPED = frozenset({"model", "input", "instructions", "max_output_tokens", "temperature", "top_p", "tools",
                    "tool_choice", "parallel_tool_calls", "text", "reasoning", "stream", "store",
                    "previous_response_id", "include", "truncation", "background", "user", "safety_identifier",
                    "prompt_cache_key", "prompt_cache_retention", "service_tier"})  # fmt: skip
# Ignored: ``metadata`` is only echoed in the response; ``stream_options`` only asks for obfuscation padding.
IGNORED = frozenset({"metadata", "stream_options"})
PASSED = ("user", "safety_identifier", "prompt_cache_key", "prompt_cache_retention", "service_tier")  # same in chat
# ``include`` values ask for more of the output; these name outputs a translated response never has (hosted tools,
# encrypted reasoning: its reasoning comes as text), so there is nothing to add. Logprobs would be: refused.
INCLUDE_IGNORED = frozenset({"reasoning.encrypted_content", "file_search_call.results", "web_search_call.results",
                             "web_search_call.action.sources", "code_interpreter_call.outputs",
                             "computer_call_output.output.image_url", "message.input_image.image_url"})  # fmt: skip
_WHY = "has no chat-completions equivalent."


class StoreRequired(InvalidRequest):
    """The request needs the relay's response store: ``previous_response_id`` or ``store: true``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", "store_required", 400)
        self.field = field


def responses_to_chat(
    request: ResponsesRequest, *, history: list[dict[str, Any]] | None = None, store: bool = False
) -> dict[str, Any]:
    """The chat-completions body for a checked Responses request. ``history``: the input and output items of the
    response named by ``previous_response_id``, from the relay's store; ``store``: the relay can keep this one.
    Raises :class:`StoreRequired`, or :class:`~proxy.protocol.InvalidRequest` for what cannot be sent."""
    data = request.data
    refuse_fields(data, MAPPED | IGNORED, "", _WHY)
    if request.previous_response_id is not None and history is None:
        raise StoreRequired("previous_response_id", "this relay keeps no responses (it is stateless): send the "
                            "whole conversation in input instead.")  # fmt: skip
    if request.store and not store:
        raise StoreRequired("store", "this relay keeps no responses (it is stateless): send store: false.")
    if data.get("background"):
        raise untranslatable("background", "background responses need a response store.")
    if data.get("truncation") not in (None, "disabled"):
        raise untranslatable("truncation", "only 'disabled' maps: a chat upstream does not drop input items.")
    for i, value in enumerate(data.get("include") or ()):
        if value not in INCLUDE_IGNORED:
            raise untranslatable(f"include.{i}", f"{value!r} {_WHY}")
    if data.get("input") is None:
        raise untranslatable("input", "is required (stored prompts are not served).")
    items = data["input"]
    if history:
        items = history + ([{"role": "user", "content": items}] if isinstance(items, str) else items)
    messages = items_to_messages(items)
    if data.get("instructions"):
        messages.insert(0, {"role": "system", "content": data["instructions"]})
    chat: dict[str, Any] = {"messages": messages}
    if request.model is not None:
        chat["model"] = request.model
    if request.stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    if data.get("max_output_tokens") is not None:
        chat["max_tokens"] = data["max_output_tokens"]
    for name in ("temperature", "top_p") + PASSED:
        if data.get(name) is not None:
            chat[name] = data[name]
    _tools(data, chat)
    _text(data.get("text"), chat)
    _reasoning(data.get("reasoning"), chat)
    return chat


def _tools(data: dict[str, Any], chat: dict[str, Any]) -> None:
    tools = []
    for i, tool in enumerate(data.get("tools") or ()):
        if tool["type"] != "function":
            raise untranslatable(f"tools.{i}", f"{tool['type']!r} is a tool OpenAI hosts; a chat upstream can only "
                                 "call function tools.")  # fmt: skip
        refuse_fields(tool, frozenset({"type", "name", "description", "parameters", "strict"}), f"tools.{i}", _WHY)
        function: dict[str, Any] = {"name": tool["name"]}
        for name in ("description", "parameters", "strict"):
            if tool.get(name) is not None:
                function[name] = tool[name]
        tools.append({"type": "function", "function": function})
    choice = data.get("tool_choice")
    if not tools:
        if choice not in (None, "auto", "none"):
            raise untranslatable("tool_choice", "names a tool, but no tools are given.")
        return
    chat["tools"] = tools
    if isinstance(choice, str):
        chat["tool_choice"] = choice
    elif choice is not None:
        if choice["type"] != "function":
            raise untranslatable("tool_choice", f"{choice['type']!r} {_WHY}")
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    if data.get("parallel_tool_calls") is not None:
        chat["parallel_tool_calls"] = data["parallel_tool_calls"]


def _text(text: Any, chat: dict[str, Any]) -> None:
    if text is None:
        return
    refuse_fields(text, frozenset({"format", "verbosity"}), "text", _WHY)
    fmt = text.get("format")
    if fmt is not None and fmt["type"] == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif fmt is not None and fmt["type"] == "json_schema":
        refuse_fields(fmt, frozenset({"type", "name", "schema", "strict", "description"}), "text.format", _WHY)
        schema = {key: fmt[key] for key in ("name", "schema", "strict", "description") if fmt.get(key) is not None}
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    if text.get("verbosity") is not None:
        chat["verbosity"] = text["verbosity"]


def _reasoning(reasoning: Any, chat: dict[str, Any]) -> None:
    """``effort`` as chat's ``reasoning_effort``; a summary is not made (the upstream's reasoning comes whole, as
    ``reasoning_text``), so ``summary`` asks for nothing more."""
    if reasoning is None:
        return
    refuse_fields(reasoning, frozenset({"effort", "summary", "generate_summary"}), "reasoning", _WHY)
    if reasoning.get("effort") is not None:
        chat["reasoning_effort"] = reasoning["effort"]
