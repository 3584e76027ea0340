"""One request's plan, pure: its timing and the fault to inject.

Defaults come from :class:`~loadtest.sim._config.SimConfig`, then ``X-Sim-*`` headers, then ``sim_*`` body
fields (the body wins). Faults (``sim_fault`` / ``X-Sim-Fault``):

- ``status:N``: answer status N with the protocol's error body instead of an answer;
- ``stall``: never answer; ``headers-then-stall``: send the response head, then nothing;
- ``drop:K``: close the connection abruptly before timed send K (content chunk K in chat: no final chunk, no
  ``[DONE]``);
- ``malformed:K``: event K of the stream is not JSON (in chat, content chunk K);
- ``drip``: every chunk in pieces of at most 7 bytes, spread over the interval;
- ``error:K``: instead of content chunk K, the protocol's error event (chat ``data: {"error": ...}``, Messages
  ``event: error`` with ``overloaded_error``, Responses ``response.failed``), then the end of the body.

Status faults and error events are rendered in the route's own shape (Moonshot's for chat, Anthropic's for
Messages, OpenAI's for Responses).

Output length: a request's ``max_completion_tokens`` or ``max_tokens`` (Messages: ``max_tokens``, Responses:
``max_output_tokens``) makes the completion exactly that many
tokens long (``ceil(max_tokens / tokens_per_chunk)`` content chunks, the last one carrying the rest, usage saying
so, ``finish_reason`` ``length``), the way benchmark servers run with ``ignore_eos``, so a load generator's output
length distribution reaches the wire; an explicit ``sim_chunks`` / ``X-Sim-Chunks`` wins over it.

What the answer holds: ``sim_reasoning: N`` puts N tokens of reasoning before the text (chat
``reasoning_content``, Messages a ``thinking`` block, Responses a ``reasoning`` item); ``sim_tool_call`` (true,
or a tool's name) makes the answer end with a call of one of the request's tools (the first, or the one named)
even where its ``tool_choice`` lets the model choose; ``sim_tool_pieces: N`` streams the call's arguments in N
pieces. A ``tool_choice`` that demands a call makes one without ``sim_tool_call`` (:mod:`loadtest.sim._tools`).

The behaviours live inline in the send loop (:mod:`loadtest.sim._stream`), so a request
without a fault pays one comparison per chunk and no call.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass

from loadtest.sim._config import SimConfig

__all__ = ["FAULTS", "BadRequest", "Plan", "make_plan", "schedule", "truthy"]

FAULTS = ("status", "stall", "drop", "malformed", "drip", "headers-then-stall", "error")


class BadRequest(Exception):
    """A request the sim answers with 400 invalid_request_error."""


@dataclass(slots=True)
class Plan:
    ttft: float
    ttft_jitter: float
    chunks: int
    interval: float
    interval_jitter: float
    tokens_per_chunk: int
    fault: str | None
    fault_arg: int
    deterministic: bool
    output_tokens: int | None = None  # the request's max_tokens, when it decided the completion's length
    reasoning: int = 0  # tokens of reasoning before the text
    tool_call: str | None = None  # "" (a tool call of the first tool), a tool's name, or None (as tool_choice says)
    tool_pieces: int | None = None  # pieces of a tool call's arguments (None: one per 4 characters)


_OVERRIDES = {
    # body field / header suffix -> (Plan attribute, parser)
    "ttft": ("ttft", float),
    "ttft_jitter": ("ttft_jitter", float),
    "chunks": ("chunks", int),
    "interval": ("interval", float),
    "tokens_per_chunk": ("tokens_per_chunk", int),
    "fault": ("fault", str),
    "deterministic": ("deterministic", None),
    "reasoning": ("reasoning", int),
    "tool_call": ("tool_call", "tool"),
    "tool_pieces": ("tool_pieces", int),
}
CHAT_LENGTH = ("max_completion_tokens", "max_tokens")


def truthy(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def make_plan(
    config: SimConfig, body: Mapping, headers: Mapping[str, str], length_keys: tuple[str, ...] = CHAT_LENGTH
) -> Plan:
    """The request's timing and faults: config defaults, then ``X-Sim-*`` headers, then ``sim_*`` body fields.

    ``length_keys``: the body fields, in order of precedence, that give the answer's length in tokens.
    """
    values: dict[str, object] = {
        "ttft": config.ttft,
        "ttft_jitter": config.ttft_jitter,
        "chunks": config.chunks,
        "interval": config.interval,
        "interval_jitter": config.interval_jitter,
        "tokens_per_chunk": config.tokens_per_chunk,
        "fault": None,
        "deterministic": False,
    }
    for key, (attr, parse) in _OVERRIDES.items():
        raw = headers.get("x-sim-" + key.replace("_", "-"))
        if "sim_" + key in body:
            raw = body["sim_" + key]
        if raw is None:
            continue
        try:
            if parse is None:
                values[attr] = truthy(raw)
            elif parse is str:
                values[attr] = str(raw).strip().lower()
            elif parse == "tool":
                values[attr] = _tool_call(raw)
            elif isinstance(raw, bool):
                raise ValueError("booleans are not numbers")
            else:
                number = parse(raw)
                if parse is float and not math.isfinite(number):
                    raise ValueError("not finite")
                values[attr] = number
        except (TypeError, ValueError):
            raise BadRequest(f"sim_{key}: invalid value {raw!r}") from None
    for attr in ("ttft", "ttft_jitter", "interval", "chunks", "reasoning"):
        if values.get(attr, 0) < 0:
            raise BadRequest(f"sim_{attr}: must not be negative")
    if values["tokens_per_chunk"] < 1:
        raise BadRequest("sim_tokens_per_chunk: must be at least 1")
    if values.get("tool_pieces") is not None and not 1 <= values["tool_pieces"] <= 1_000_000:
        raise BadRequest("sim_tool_pieces: must be from 1 to 1000000")
    if values.get("reasoning", 0) > 1_000_000:
        raise BadRequest("sim_reasoning: too many")
    if "sim_chunks" not in body and "x-sim-chunks" not in headers:
        output = _max_tokens(body, length_keys)
        if output is not None:
            values["output_tokens"] = output
            values["chunks"] = -(-output // values["tokens_per_chunk"])
    if values["chunks"] > 1_000_000:
        raise BadRequest("sim_chunks: too many")
    fault, fault_arg = _parse_fault(values.pop("fault"))
    return Plan(fault=fault, fault_arg=fault_arg, **values)


def _tool_call(raw: object) -> str | None:
    """``sim_tool_call``: true (a call of the first tool), false, or a tool's name."""
    if isinstance(raw, bool):
        return "" if raw else None
    if not isinstance(raw, str):
        raise ValueError("not a boolean or a tool name")
    word = raw.strip().lower()
    if word in ("", "0", "false", "no", "off", "none"):
        return None
    return "" if word in ("1", "true", "yes", "on") else raw.strip()


def _max_tokens(body: Mapping, keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = body.get(key)
        if value is None:
            continue
        if type(value) is not int or value < 1:
            raise BadRequest(f"{key}: must be a positive integer, got {value!r}")
        return value
    return None


def _parse_fault(spec: object) -> tuple[str | None, int]:
    if spec is None or spec in ("", "none"):
        return None, 0
    name, _, arg = str(spec).partition(":")
    if name not in FAULTS:
        raise BadRequest(f"sim_fault: unknown fault {spec!r}; known: {', '.join(FAULTS)}")
    if name in ("status", "drop", "malformed", "error"):
        try:
            number = int(arg)
        except ValueError:
            raise BadRequest(f"sim_fault: {name} needs an integer, e.g. {name}:3") from None
        if number < 0 or (name == "status" and not 200 <= number <= 599):
            raise BadRequest(f"sim_fault: bad argument in {spec!r}")
        return name, number
    return name, 0


def schedule(plan: Plan, start: float, rng: random.Random, count: int | None = None) -> list[float]:
    """Absolute send times of ``count`` timed sends (default ``plan.chunks``; at least one entry)."""
    ttft = plan.ttft
    if plan.ttft_jitter:
        ttft = max(0.0, rng.uniform(ttft - plan.ttft_jitter, ttft + plan.ttft_jitter))
    times = [start + ttft]
    for _ in range((plan.chunks if count is None else count) - 1):
        gap = plan.interval
        if plan.interval_jitter:
            gap = max(0.0, rng.uniform(gap - plan.interval_jitter, gap + plan.interval_jitter))
        times.append(times[-1] + gap)
    return times
