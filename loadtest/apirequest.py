"""Each protocol's request for one prompt, sans I/O: ``--api chat|messages|responses``.

A workload (:mod:`loadtest.workload`) gives chat-shaped messages and an output length; here they become the
body, route and headers of the protocol's request, as its published API reference writes them:

- **chat**: ``POST {url}/chat/completions`` (:func:`loadtest.session.build_request`), ``max_tokens``;
- **messages** (Anthropic): ``POST {url}/messages`` with ``model``, ``max_tokens`` (required: the workload's
  length, else ``default_max_tokens``), ``messages`` (system turns become the top-level ``system``; text parts
  text blocks), ``stream``; headers ``x-api-key`` and ``anthropic-version: 2023-06-01``;
- **responses** (OpenAI): ``POST {url}/responses`` with ``model``, ``input`` (one user message as a string, else
  input messages), ``stream``, ``max_output_tokens``; ``Authorization: Bearer``.

``tool_call``: every request offers one function tool (:data:`TOOL`) and demands a call of it, in the protocol's
own words (chat and Responses ``tool_choice: "required"``, Messages ``{"type": "any"}``): a tool-calling load any
provider serves, whose answers stream the call's arguments. ``extra`` (the sim's ``sim_*`` overrides with
``--url``) goes into every body as it is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from loadtest.client import Endpoint
from loadtest.protocols import APIS
from loadtest.session import RequestSpec, build_request

__all__ = ["ANTHROPIC_VERSION", "APIS", "MESSAGES_MAX_TOKENS", "TOOL", "api_request", "check_messages"]

ANTHROPIC_VERSION = b"2023-06-01"
# What Messages' max_tokens is when the workload sets no length (Anthropic's own examples ask for 1024).
MESSAGES_MAX_TOKENS = 1024
TOOL = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city, e.g. Paris"},
                       "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
    },
}
_ROUTES = {"messages": "/messages", "responses": "/responses"}
_SYSTEM_ROLES = ("system", "developer")


def _text(content: Any, where: str) -> str | list[str]:
    """A chat message's content: a string, or its text parts (anything else has no place in a text load)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError(f"{where}: only text content can be sent as another protocol (got {part!r:.60})")
            texts.append(part["text"])
        return texts
    raise ValueError(f"{where}: content must be a string or a list of text parts")


def _messages_body(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Chat-shaped messages as Messages' ``system`` and ``messages``."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for k, m in enumerate(messages):
        role, content = m.get("role"), _text(m.get("content"), f"message {k}")
        if role in _SYSTEM_ROLES:
            system += [content] if isinstance(content, str) else content
        elif role in ("user", "assistant"):
            turns.append({"role": role, "content": content if isinstance(content, str)
                          else [{"type": "text", "text": t} for t in content]})
        else:
            raise ValueError(f"message {k}: the Messages protocol has no role {role!r}")
    if not turns:
        raise ValueError("the Messages protocol needs a user message")
    out: dict[str, Any] = {"messages": turns}
    if system:
        out["system"] = "\n\n".join(system)
    return out


def _responses_input(messages: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Chat-shaped messages as Responses' ``input``: one user message as its text, else input messages."""
    if len(messages) == 1 and messages[0].get("role") == "user" and isinstance(messages[0].get("content"), str):
        return messages[0]["content"]
    items = []
    for k, m in enumerate(messages):
        role, content = m.get("role"), _text(m.get("content"), f"message {k}")
        if role not in ("user", "assistant", *_SYSTEM_ROLES):
            raise ValueError(f"message {k}: the Responses protocol has no role {role!r} for an input message")
        if not isinstance(content, str):
            kind = "output_text" if role == "assistant" else "input_text"
            content = [{"type": kind, "text": t} for t in content]
        items.append({"role": role, "content": content})
    return items


def check_messages(api: str, messages: list[dict[str, Any]]) -> None:
    """Raise ValueError when ``messages`` cannot be sent in ``api``'s protocol (checked once, before a run)."""
    if api == "messages":
        _messages_body(messages)
    elif api == "responses":
        _responses_input(messages)


def _tools(api: str) -> dict[str, Any]:
    if api == "chat":
        return {"tools": [{"type": "function", "function": TOOL}], "tool_choice": "required"}
    if api == "messages":
        tool = {"name": TOOL["name"], "description": TOOL["description"], "input_schema": TOOL["parameters"]}
        return {"tools": [tool], "tool_choice": {"type": "any"}}
    return {"tools": [{"type": "function", **TOOL}], "tool_choice": "required"}


def api_request(
    api: str,
    endpoint: Endpoint,
    *,
    model: str,
    messages: list[dict[str, Any]],
    max_tokens: int | None,
    stream: bool,
    ndjson: bool = False,
    api_key: str | None = None,
    extra: dict[str, Any] | None = None,
    tool_call: bool = False,
    default_max_tokens: int = MESSAGES_MAX_TOKENS,
) -> RequestSpec:
    """The request for one prompt in ``api``'s protocol (see the module docstring)."""
    if api not in APIS:
        raise ValueError(f"unknown API {api!r}; known: {', '.join(APIS)}")
    if api == "chat":
        more = {**_tools(api), **(extra or {})} if tool_call else extra
        return build_request(endpoint, model=model, messages=messages, max_tokens=max_tokens, stream=stream,
                             ndjson=ndjson, api_key=api_key, extra=more)
    payload: dict[str, Any] = {"model": model}
    auth: list[tuple[bytes, bytes]] = []
    if api == "messages":
        payload["max_tokens"] = max_tokens if max_tokens is not None else default_max_tokens
        payload.update(_messages_body(messages))
        auth.append((b"anthropic-version", ANTHROPIC_VERSION))
        if api_key:
            auth.append((b"x-api-key", api_key.encode()))
    else:
        payload["input"] = _responses_input(messages)
        if max_tokens is not None:
            payload["max_output_tokens"] = max_tokens
        if api_key:
            auth.append((b"authorization", b"Bearer " + api_key.encode()))
    payload["stream"] = stream
    if tool_call:
        payload.update(_tools(api))
    if extra:
        payload.update(extra)
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = [
        (b"host", endpoint.host_header),
        (b"content-type", b"application/json"),
        (b"accept", b"text/event-stream" if stream else b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *auth,
    ]
    return RequestSpec((endpoint.base_path + _ROUTES[api]).encode(), tuple(headers), body, stream, api=api)
