"""Anthropic's Messages protocol, pure: ``POST /v1/messages`` (also under Moonshot's base path, ``/anthropic``), its
``count_tokens`` and ``models`` routes, and errors in its shape.

A stream is the published event sequence: ``message_start`` (usage with ``input_tokens``), then per block
``content_block_start``, its deltas and ``content_block_stop`` (a ``ping`` after the first block's start), then
``message_delta`` (``stop_reason``, cumulative usage) and ``message_stop``. Blocks, in order: ``thinking`` (for
``sim_reasoning``; ``thinking_delta`` pieces, a ``signature_delta`` last), ``text`` (``text_delta``), ``tool_use``
(``input_json_delta`` pieces). Every event's JSON ends with the sim's stamp, ``"sim": {"ns", "seq", "of"}``, ``seq``
counting every event of the stream: a field the protocol does not define, which clients ignore as they do any
field added to a response (the official SDK's models allow extra fields).

Event bytes come from byte templates (one ``json.dumps`` per piece of text, none per event skeleton).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Mapping, Sequence

from loadtest import simcontent
from loadtest.sim._http import rate_limit_headers
from loadtest.sim._plan import BadRequest, Plan, truthy
from loadtest.sim._state import Sim
from loadtest.sim._stream import Streamed, Whole, layout
from loadtest.sim._tools import messages_tools, script_for
from loadtest.simcontent import dumps

__all__ = ["COUNT_TOKENS_PATHS", "LENGTH_KEYS", "PATHS", "key", "error", "reply", "count_tokens", "models_body"]

PATHS = ("/v1/messages", "/anthropic/v1/messages")
COUNT_TOKENS_PATHS = ("/v1/messages/count_tokens", "/anthropic/v1/messages/count_tokens")
LENGTH_KEYS = ("max_tokens",)
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use"}
# Anthropic's error types by HTTP status (any other 4xx is an invalid_request_error, any other 5xx an api_error).
ERROR_TYPES = {
    400: ("invalid_request_error", "Invalid request"),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timeout"),
    529: ("overloaded_error", "Overloaded"),
}
ERROR_EVENT = b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
MALFORMED_EVENT = b"event: content_block_delta\ndata: {not json\n\n"


def key(headers: Mapping[str, str]) -> str | None:
    """The API key an Anthropic client presents: ``x-api-key``, or ``Authorization: Bearer``."""
    if "x-api-key" in headers:
        return headers["x-api-key"]
    auth = headers.get("authorization", "")
    return auth[7:] if auth.startswith("Bearer ") else None


def error(status: int, message: str | None = None, kind: str | None = None) -> tuple[int, bytes, list]:
    """Anthropic's error response: ``{"type": "error", "error": {"type", "message"}, "request_id"}``, and the
    ``request-id`` header every response carries."""
    known, default = ERROR_TYPES.get(status, ("invalid_request_error" if status < 500 else "api_error", ""))
    request_id = "req_sim" + secrets.token_hex(10)
    body = dumps({"type": "error", "error": {"type": kind or known, "message": message or default or
                                                        f"Error {status}"}, "request_id": request_id})
    return status, body, [("request-id", request_id), *rate_limit_headers(status, moonshot=False)]


def _prompt_of(body: Mapping) -> tuple[object, object]:
    """(``messages``, ``system``) of a request, checked as the API checks them."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: a non-empty list of messages is required")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise BadRequest("model: Field required")
    system = body.get("system")
    if system is not None and not isinstance(system, (str, list)):
        raise BadRequest("system: must be a string or a list of text blocks")
    return messages, system


def _prompt_tokens(messages: object, system: object) -> int:
    return simcontent.prompt_tokens(([{"role": "system", "content": system}] if system else []) + messages)


def count_tokens(body: Mapping) -> bytes:
    """``POST /v1/messages/count_tokens``: ``{"input_tokens": N}``, as the sim counts a prompt."""
    messages, system = _prompt_of(body)
    return dumps({"input_tokens": _prompt_tokens(messages, system)})


def models_body(models: Sequence[str]) -> bytes:
    """``GET /anthropic/v1/models``: Anthropic's model list."""
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(simcontent.DETERMINISTIC_CREATED))
    data = [{"type": "model", "id": m, "display_name": m, "created_at": created} for m in models]
    return dumps({"data": data, "has_more": False, "first_id": models[0] if models else None,
                             "last_id": models[-1] if models else None})


def reply(sim: Sim, body: dict, plan: Plan) -> Streamed | Whole:
    messages, system = _prompt_of(body)
    max_tokens = body.get("max_tokens")
    if type(max_tokens) is not int or max_tokens < 1:
        raise BadRequest("max_tokens: a positive integer is required")
    model = body["model"]
    digest = simcontent.request_hash(model, [system, messages])
    if plan.deterministic:
        message_id, tool_id = "msg_" + digest[:12].hex(), "toolu_" + digest[12:24].hex()
    else:
        message_id = f"msg_{sim.rng.getrandbits(96):024x}"
        tool_id = f"toolu_{sim.rng.getrandbits(96):024x}"
    answer = script_for(digest, plan, _prompt_tokens(messages, system), *messages_tools(body))
    if not truthy(body.get("stream", False)):
        return _message(answer, message_id, model, tool_id)
    return _stream(answer, message_id, model, tool_id)


def _signature(thinking: str) -> str:
    return base64.b64encode(hashlib.sha256(thinking.encode()).digest()).decode()


def _message(answer: simcontent.Script, message_id: str, model: str, tool_id: str) -> Whole:
    content: list[dict] = []
    if answer.reasoning:
        thinking = "".join(answer.reasoning)
        content.append({"type": "thinking", "thinking": thinking, "signature": _signature(thinking)})
    if answer.text:
        content.append({"type": "text", "text": "".join(answer.text)})
    if answer.tool is not None:
        arguments = json.loads(answer.tool.arguments)
        content.append({"type": "tool_use", "id": tool_id, "name": answer.tool.name, "input": arguments})
    obj = {
        "id": message_id, "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": STOP_REASONS[answer.stop], "stop_sequence": None,
        "usage": {"input_tokens": answer.prompt_tokens, "output_tokens": answer.output_tokens},
    }
    return Whole(simcontent.stamped(dumps(obj)[:-1], 0, 1, event=None))


def _delta(index: int, kind: bytes, field: bytes, piece: str) -> tuple[bytes, bytes]:
    return (b"content_block_delta", b'{"type":"content_block_delta","index":%d,"delta":{"type":"%b","%b":%b}'
            % (index, kind, field, dumps(piece)))


def _start(index: int, block: bytes) -> tuple[bytes, bytes]:
    return b"content_block_start", b'{"type":"content_block_start","index":%d,"content_block":%b' % (index, block)


def _stop(index: int) -> tuple[bytes, bytes]:
    return b"content_block_stop", b'{"type":"content_block_stop","index":%d' % index


def _stream(answer: simcontent.Script, message_id: str, model: str, tool_id: str) -> Streamed:
    start = {"id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
             "stop_reason": None, "stop_sequence": None,
             "usage": {"input_tokens": answer.prompt_tokens, "output_tokens": 1}}
    preamble = [(b"message_start", b'{"type":"message_start","message":%b' % dumps(start))]
    blocks = []
    if answer.reasoning:
        i = len(blocks)
        closing = [(b"content_block_delta", b'{"type":"content_block_delta","index":%d,"delta":{"type":'
                    b'"signature_delta","signature":"%b"}' % (i, _signature("".join(answer.reasoning)).encode())),
                   _stop(i)]
        blocks.append(([_start(i, b'{"type":"thinking","thinking":"","signature":""}')],
                       [_delta(i, b"thinking_delta", b"thinking", p) for p in answer.reasoning], closing))
    if answer.text:
        i = len(blocks)
        blocks.append(([_start(i, b'{"type":"text","text":""}')],
                       [_delta(i, b"text_delta", b"text", p) for p in answer.text], [_stop(i)]))
    if answer.tool is not None:
        i = len(blocks)
        block = b'{"type":"tool_use","id":%b,"name":%b,"input":{}}' % (dumps(tool_id), dumps(answer.tool.name))
        blocks.append(([_start(i, block)],
                       [_delta(i, b"input_json_delta", b"partial_json", p) for p in answer.tool.pieces],
                       [_stop(i)]))
    ping = (b"ping", b'{"type":"ping"')
    if blocks:
        blocks[0][0].append(ping)
    else:
        preamble.append(ping)
    tail = [
        (b"message_delta", b'{"type":"message_delta","delta":{"stop_reason":"%b","stop_sequence":null},'
         b'"usage":{"input_tokens":%d,"output_tokens":%d}'
         % (STOP_REASONS[answer.stop].encode(), answer.prompt_tokens, answer.output_tokens)),
        (b"message_stop", b'{"type":"message_stop"'),
    ]
    specs, firsts, content_end = layout(preamble, blocks, tail)
    of = len(specs)
    events = [simcontent.stamped(head, k, of, event=b"event: %b\ndata: " % name)
              for k, (name, head) in enumerate(specs)]
    return Streamed(events, firsts, content_end, malformed=MALFORMED_EVENT, error=ERROR_EVENT)
