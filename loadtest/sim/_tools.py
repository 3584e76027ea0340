"""Which tool an answer calls, if any, pure: each protocol's ``tools`` and ``tool_choice``, and ``sim_tool_call``.

The three protocols declare function tools and the caller's choice differently; each reader here brings them to one
form, (name, JSON schema) pairs and a choice of ``auto``, ``none``, ``required`` or a tool's name, and :func:`pick`
decides. A real model calls a tool when it likes; the sim calls one only when asked: by a ``tool_choice`` that
demands a call (``required``, Messages' ``any``, or a named tool; the answer is then the call alone, as a forced
model answers) or by ``sim_tool_call`` where the choice is ``auto`` (text first, then the call). ``none`` never calls.
"""

from __future__ import annotations

from collections.abc import Mapping

from loadtest import simcontent
from loadtest.sim._plan import BadRequest, Plan

__all__ = ["chat_tools", "messages_tools", "responses_tools", "pick", "script_for"]

Tools = list[tuple[str, object]]


def _named(entry: object, where: str) -> Mapping:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str) or not entry["name"]:
        raise BadRequest(f"{where}: each tool needs a name")
    return entry


def _list(body: Mapping) -> list:
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise BadRequest("tools: must be a list")
    return tools


def chat_tools(body: Mapping) -> tuple[Tools, str | tuple[str, str]]:
    """Chat completions: ``{"type": "function", "function": {"name", "parameters"}}``; ``tool_choice`` ``auto``,
    ``none``, ``required`` or ``{"type": "function", "function": {"name"}}``."""
    tools = []
    for entry in _list(body):
        if isinstance(entry, Mapping) and entry.get("type", "function") == "function":
            function = _named(entry.get("function"), "tools")
            tools.append((function["name"], function.get("parameters")))
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping):
        function = choice.get("function")
        if choice.get("type") != "function" or not isinstance(function, Mapping):
            raise BadRequest("tool_choice: expected {\"type\": \"function\", \"function\": {\"name\": ...}}")
        return tools, ("name", _named(function, "tool_choice")["name"])
    return tools, _word(choice, ("auto", "none", "required"))


def messages_tools(body: Mapping) -> tuple[Tools, str | tuple[str, str]]:
    """Anthropic Messages: client tools ``{"name", "input_schema"}`` (server tools, which have another ``type``, are
    not the model's to call here); ``tool_choice`` ``{"type": "auto" | "any" | "tool" | "none"}``."""
    tools = []
    for entry in _list(body):
        if isinstance(entry, Mapping) and entry.get("type", "custom") == "custom":
            tool = _named(entry, "tools")
            tools.append((tool["name"], tool.get("input_schema")))
    choice = body.get("tool_choice")
    if choice is None:
        return tools, "auto"
    if not isinstance(choice, Mapping) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise BadRequest("tool_choice: expected {\"type\": \"auto\" | \"any\" | \"tool\" | \"none\"}")
    if choice["type"] == "tool":
        return tools, ("name", _named(choice, "tool_choice")["name"])
    return tools, "required" if choice["type"] == "any" else choice["type"]


def responses_tools(body: Mapping) -> tuple[Tools, str | tuple[str, str]]:
    """OpenAI Responses: function tools ``{"type": "function", "name", "parameters"}`` (built-in tools are not
    simulated); ``tool_choice`` ``auto``, ``none``, ``required`` or ``{"type": "function", "name"}``."""
    tools = []
    for entry in _list(body):
        if isinstance(entry, Mapping) and entry.get("type") == "function":
            tool = _named(entry, "tools")
            tools.append((tool["name"], tool.get("parameters")))
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping):
        if choice.get("type") != "function":
            raise BadRequest("tool_choice: only function tools are simulated")
        return tools, ("name", _named(choice, "tool_choice")["name"])
    return tools, _word(choice, ("auto", "none", "required"))


def _word(choice: object, words: tuple[str, ...]) -> str:
    if choice is None:
        return "auto"
    if choice not in words:
        raise BadRequest(f"tool_choice: expected one of {', '.join(words)} or a named function")
    return choice


def pick(tools: Tools, choice: str | tuple[str, str], wanted: str | None) -> tuple[str, object, bool] | None:
    """(name, schema, forced) of the tool the answer calls, or None. ``wanted``: the plan's ``tool_call``."""
    by_name = dict(tools)
    if isinstance(choice, tuple):
        name = choice[1]
        if name not in by_name:
            raise BadRequest(f"tool_choice: no tool named {name!r} in tools")
        return name, by_name[name], True
    if choice == "none" or (choice == "auto" and wanted is None):
        return None
    if not tools:
        what = "tool_choice" if choice == "required" else "sim_tool_call"
        raise BadRequest(f"{what}: the request has no function tools to call")
    if wanted:
        if wanted not in by_name:
            raise BadRequest(f"sim_tool_call: no tool named {wanted!r} in tools")
        name = wanted
    else:
        name = tools[0][0]
    return name, by_name[name], choice == "required"


def script_for(
    digest: bytes, plan: Plan, prompt: int, tools: Tools, choice: str | tuple[str, str]
) -> simcontent.Script:
    """What the model answers a request (content hashed to ``digest``, ``prompt`` tokens long), per its plan and
    its tools."""
    tool = pick(tools, choice, plan.tool_call)
    return simcontent.script(
        digest,
        chunks=plan.chunks,
        tokens_per_chunk=plan.tokens_per_chunk,
        prompt=prompt,
        output_tokens=plan.output_tokens,
        reasoning_tokens=plan.reasoning,
        tool=tool[:2] if tool else None,
        forced=bool(tool and tool[2]),
        tool_pieces=plan.tool_pieces,
    )
