"""An Anthropic Messages request as a chat-completions request, sans I/O: a checked request in, a chat body out.

What maps, what is ignored and what is refused (a 400 naming the field: nothing a client sends is dropped without a
word) is tabled in docs/reference.md, "Anthropic Messages and OpenAI Responses". In short: ``system`` and ``system``
turns become system messages; text and image blocks become chat content parts; an assistant turn's ``tool_use``
blocks become its ``tool_calls`` and its ``thinking`` its ``reasoning_content``; a user turn's ``tool_result``
blocks become ``tool`` messages right after that assistant message (the images they hold follow in a user
message, since a chat tool message holds text only). Tool calls and results must pair up as the API requires,
since every chat upstream refuses an unanswered call. Sources: https://docs.anthropic.com/en/api/messages,
https://docs.anthropic.com/en/docs/agents-and-tools/tool-use/implement-tool-use.
"""

from __future__ import annotations

import json
from typing import Any

from .. import refuse_fields, untranslatable
from ._check import MessagesRequest

# Top-level fields: mapped, or ignored because they only steer Anthropic's own prompt cache and capacity.
MAPPED = frozenset({"model", "messages", "max_tokens", "system", "stop_sequences", "stream", "temperature", "top_p",
                    "metadata", "tools", "tool_choice", "thinking", "output_config"})  # fmt: skip
IGNORED = frozenset({"cache_control", "service_tier"})
_BLOCK_FIELDS = {
    "text": frozenset({"type", "text", "cache_control", "citations"}),
    "image": frozenset({"type", "source", "cache_control"}),
    "tool_use": frozenset({"type", "id", "name", "input", "cache_control"}),
    "tool_result": frozenset({"type", "tool_use_id", "content", "is_error", "cache_control"}),
    "thinking": frozenset({"type", "thinking", "signature"}),
}
_TOOL_FIELDS = frozenset({"type", "name", "description", "input_schema", "cache_control", "strict",
                          "eager_input_streaming"})  # fmt: skip
_WHY = "has no chat-completions equivalent."
SEPARATOR = "\n\n"  # between the text blocks of one message or system prompt, which chat carries as one string


def messages_to_chat(request: MessagesRequest, *, count_tokens: bool = False) -> dict[str, Any]:
    """The chat-completions body for a checked Messages request (``count_tokens``: only model, messages and tools,
    for an upstream's token counter). Raises :class:`~proxy.protocol.InvalidRequest` for what cannot be sent."""
    data = request.data
    if "top_k" in data:
        raise untranslatable("top_k", "has no chat-completions equivalent (OpenAI and Moonshot refuse it).")
    refuse_fields(data, MAPPED | IGNORED, "", _WHY)
    messages = _system(data.get("system")) + _turns(data["messages"])
    chat: dict[str, Any] = {"model": request.model, "messages": messages}
    tools = _tools(data.get("tools"))
    if tools:
        chat["tools"] = tools
    _tool_choice(data.get("tool_choice"), chat)
    if count_tokens:
        return chat
    if request.max_tokens < 1:
        raise untranslatable("max_tokens", "0 only pre-warms Anthropic's prompt cache; a chat upstream has none.")
    chat["max_tokens"] = request.max_tokens
    if request.stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    for name in ("temperature", "top_p"):
        if data.get(name) is not None:
            chat[name] = data[name]
    if request.stop_sequences:
        chat["stop"] = list(request.stop_sequences)
    metadata = data.get("metadata")
    if metadata:
        refuse_fields(metadata, frozenset({"user_id"}), "metadata", _WHY)
        if metadata.get("user_id"):
            chat["user"] = metadata["user_id"]
    _thinking(data.get("thinking"), chat)
    _output_config(data.get("output_config"), chat)
    return chat


def _system(system: Any) -> list[dict[str, Any]]:
    if not system:
        return []
    if isinstance(system, list):
        for i, block in enumerate(system):
            refuse_fields(block, _BLOCK_FIELDS["text"], f"system.{i}", _WHY)
        system = SEPARATOR.join(block["text"] for block in system)
    return [{"role": "system", "content": system}]


def _turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages for the Messages turns, consecutive messages of one role first combined into one turn."""
    turns: list[tuple[str, list[tuple[str, dict[str, Any]]]]] = []
    for i, message in enumerate(messages):
        content = message["content"]
        blocks = [(f"messages.{i}", {"type": "text", "text": content})] if isinstance(content, str) else [
            (f"messages.{i}.content.{j}", block) for j, block in enumerate(content)
        ]  # fmt: skip
        if turns and turns[-1][0] == message["role"]:
            turns[-1][1].extend(blocks)
        else:
            turns.append((message["role"], blocks))
    out: list[dict[str, Any]] = []
    calls: list[str] = []  # the tool_use ids of the last assistant turn, which the next turn must answer
    for role, blocks in turns:
        if role == "assistant":
            calls = _assistant(blocks, out)
        elif role == "user":
            _user(blocks, calls, out)
            calls = []
        else:
            _no_calls(calls)
            text = [block["text"] if block.get("type") == "text" else _refuse_block(path, block, "system")
                    for path, block in blocks]  # fmt: skip
            out.append({"role": "system", "content": SEPARATOR.join(text)})
    return out


def _assistant(blocks: list[tuple[str, dict[str, Any]]], out: list[dict[str, Any]]) -> list[str]:
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for path, block in blocks:
        kind = _kind(path, block, "assistant", ("text", "thinking", "tool_use"))
        if kind == "text":
            text.append(block["text"])
        elif kind == "thinking":
            reasoning.append(block["thinking"])
        else:
            arguments = json.dumps(block["input"], ensure_ascii=False, separators=(",", ":"))
            calls.append({"id": block["id"], "type": "function",
                          "function": {"name": block["name"], "arguments": arguments}})  # fmt: skip
    message: dict[str, Any] = {"role": "assistant", "content": SEPARATOR.join(text) if text or not calls else None}
    if reasoning:
        message["reasoning_content"] = SEPARATOR.join(reasoning)
    if calls:
        message["tool_calls"] = calls
    out.append(message)
    return [call["id"] for call in calls]


def _user(blocks: list[tuple[str, dict[str, Any]]], calls: list[str], out: list[dict[str, Any]]) -> None:
    parts: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []  # from tool results: they follow the tool messages
    answered: set[str] = set()
    for path, block in blocks:
        kind = _kind(path, block, "user", ("text", "image", "tool_result"))
        if kind == "tool_result":
            call_id = block["tool_use_id"]
            if call_id not in calls:
                raise untranslatable(f"{path}.tool_use_id", f"unexpected tool_use_id {call_id!r}: each tool_result "
                                     "must answer a tool_use block of the assistant message just before.")  # fmt: skip
            answered.add(call_id)
            content = _tool_result(block, path, images)
            out.append({"role": "tool", "tool_call_id": call_id, "content": content})
        elif kind == "text":
            parts.append({"type": "text", "text": block["text"]})
        else:
            parts.append(_image(block, path))
    _no_calls([c for c in calls if c not in answered])
    parts = images + parts
    if not parts:
        return
    if all(part["type"] == "text" for part in parts):
        out.append({"role": "user", "content": SEPARATOR.join(part["text"] for part in parts)})
    else:
        out.append({"role": "user", "content": parts})


def _tool_result(block: dict[str, Any], path: str, images: list[dict[str, Any]]) -> str:
    content = block.get("content")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        texts = []
        for k, inner in enumerate(content):
            inner_path = f"{path}.content.{k}"
            if _kind(inner_path, inner, "tool_result", ("text", "image")) == "text":
                texts.append(inner["text"])
            else:
                images.append(_image(inner, inner_path))
        text = SEPARATOR.join(texts)
    if block.get("is_error"):
        return f"Error: {text}" if text else "Error"
    return text


def _image(block: dict[str, Any], path: str) -> dict[str, Any]:
    source = block["source"]
    if source["type"] == "base64":
        refuse_fields(source, frozenset({"type", "media_type", "data"}), f"{path}.source", _WHY)
        url = f"data:{source['media_type']};base64,{source['data']}"
    elif source["type"] == "url":
        refuse_fields(source, frozenset({"type", "url"}), f"{path}.source", _WHY)
        url = source["url"]
    else:
        raise untranslatable(f"{path}.source", "a file_id names a file stored at Anthropic; send the image itself.")
    return {"type": "image_url", "image_url": {"url": url}}


def _kind(path: str, block: dict[str, Any], where: str, allowed: tuple[str, ...]) -> str:
    """The block's type, once it is one that ``where`` may hold here and it has no field that cannot be sent."""
    kind = block.get("type")
    if kind not in allowed:
        _refuse_block(path, block, where)
    refuse_fields(block, _BLOCK_FIELDS[kind], path, _WHY)
    if kind == "text" and block.get("citations"):
        raise untranslatable(f"{path}.citations", _WHY)
    return kind


def _no_calls(unanswered: list[str]) -> None:
    if unanswered:
        raise untranslatable("messages", "tool_use ids were found without tool_result blocks immediately after: "
                             f"{', '.join(unanswered)}. Each tool_use block must have a corresponding tool_result "
                             "block in the next message.")  # fmt: skip


def _refuse_block(path: str, block: dict[str, Any], where: str) -> str:
    kind = block.get("type")
    if kind == "redacted_thinking":
        raise untranslatable(path, "redacted_thinking is encrypted for Claude and no other model can read it; "
                             "leave it out of the conversation.")  # fmt: skip
    raise untranslatable(path, f"a {kind!r} block in a {where} message {_WHY}")


def _tools(tools: Any) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools or ()):
        if tool.get("type") not in (None, "custom"):
            raise untranslatable(f"tools.{i}", f"{tool['type']!r} is a tool Anthropic runs or defines; a chat "
                                 "upstream can only call tools given with an input_schema.")  # fmt: skip
        refuse_fields(tool, _TOOL_FIELDS, f"tools.{i}", _WHY)
        function: dict[str, Any] = {"name": tool["name"]}
        if tool.get("description") is not None:
            function["description"] = tool["description"]
        function["parameters"] = tool["input_schema"]
        if tool.get("strict") is not None:
            function["strict"] = tool["strict"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any, chat: dict[str, Any]) -> None:
    if choice is None:
        return
    kind = choice["type"]
    refuse_fields(choice, frozenset({"type", "name", "disable_parallel_tool_use"}), "tool_choice", _WHY)
    if "tools" not in chat:
        if kind in ("any", "tool"):
            raise untranslatable("tool_choice", f"{kind!r} needs tools.")
        return  # auto or none without tools: nothing to choose from
    if kind == "tool":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        chat["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
    if choice.get("disable_parallel_tool_use"):
        chat["parallel_tool_calls"] = False


def _thinking(thinking: Any, chat: dict[str, Any]) -> None:
    """``enabled``/``disabled`` as ``thinking: {"type": ...}``, the switch Moonshot's Kimi and DeepSeek read; the
    budget has no chat field (``max_tokens`` still bounds thinking and text together); ``adaptive`` leaves the
    upstream's default."""
    if thinking is None:
        return
    refuse_fields(thinking, frozenset({"type", "budget_tokens", "display"}), "thinking", _WHY)
    if thinking["type"] in ("enabled", "disabled"):
        chat["thinking"] = {"type": thinking["type"]}


def _output_config(config: Any, chat: dict[str, Any]) -> None:
    if config is None:
        return
    if not isinstance(config, dict):
        raise untranslatable("output_config", "must be an object.")
    refuse_fields(config, frozenset({"format", "effort"}), "output_config", _WHY)
    fmt = config.get("format")
    if fmt is not None:
        if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
            raise untranslatable("output_config.format", "only {'type': 'json_schema', 'schema': {...}} maps.")
        chat["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": fmt["schema"], "strict": True},
        }
    if config.get("effort") is not None:
        chat["reasoning_effort"] = config["effort"]
