"""``POST /v1/chat/completions``, pure: a request and its plan in, the answer's bytes out (:mod:`~loadtest.sim._stream`
sends them). Moonshot's shapes: usage inside ``choices[0]`` of the final chunk, errors without ``code``, and tool call
ids as Kimi writes them (``functions.NAME:N``, N counting the conversation's earlier calls).
"""

from __future__ import annotations

import time

from loadtest import simcontent
from loadtest.sim._http import rate_limit_headers
from loadtest.sim._plan import CHAT_LENGTH, Plan, truthy
from loadtest.sim._state import Sim
from loadtest.sim._stream import Streamed, Whole
from loadtest.sim._tools import chat_tools, script_for

__all__ = ["LENGTH_KEYS", "key", "error", "reply"]

LENGTH_KEYS = CHAT_LENGTH
ERROR_EVENT = b"data: " + simcontent.error_body(500) + b"\n\n"


def key(headers: dict[str, str]) -> str | None:
    """The API key a chat client presents: ``Authorization: Bearer KEY``."""
    auth = headers.get("authorization", "")
    return auth[7:] if auth.startswith("Bearer ") else None


def error(status: int, message: str | None = None, kind: str | None = None) -> tuple[int, bytes, list]:
    """Moonshot's error response for ``status`` (``kind``: its ``type``, where the status alone does not say)."""
    return status, simcontent.error_body(status, message, kind), rate_limit_headers(status)


def reply(sim: Sim, body: dict, plan: Plan) -> Streamed | Whole:
    model = body.get("model") if isinstance(body.get("model"), str) and body.get("model") else None
    model = model or simcontent.DEFAULT_MODEL
    messages = body.get("messages")
    digest = simcontent.request_hash(model, messages)
    if plan.deterministic:
        completion_id = "chatcmpl-" + digest[:12].hex()
        created = simcontent.DETERMINISTIC_CREATED
    else:
        completion_id = f"chatcmpl-{sim.rng.getrandbits(96):024x}"
        created = int(time.time())
    answer = script_for(digest, plan, simcontent.prompt_tokens(messages), *chat_tools(body))
    tool_id = f"functions.{answer.tool.name}:{_earlier_calls(messages)}" if answer.tool else ""
    if not truthy(body.get("stream", False)):
        return Whole(simcontent.chat_completion(answer, completion_id=completion_id, created=created, model=model,
                                                tool_id=tool_id))
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and truthy(options.get("include_usage"))
    events = simcontent.chat_events(answer, completion_id=completion_id, created=created, model=model,
                                    include_usage=include_usage, tool_id=tool_id)
    content = answer.pieces if answer.reasoning or answer.text or answer.tool else 0
    return Streamed(events, list(range(answer.pieces)), content, done=simcontent.DONE_EVENT, error=ERROR_EVENT)


def _earlier_calls(messages: object) -> int:
    if not isinstance(messages, list):
        return 0
    return sum(len(m["tool_calls"]) for m in messages
               if isinstance(m, dict) and isinstance(m.get("tool_calls"), list))
