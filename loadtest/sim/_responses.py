"""OpenAI's Responses protocol, pure: ``POST /v1/responses``, stateless, and errors in OpenAI's shape.

A stream is the published semantic event sequence, each event with its ``sequence_number``: ``response.created``,
``response.in_progress``, then per output item ``response.output_item.added``, its content part's
``response.content_part.added``, the deltas (``response.output_text.delta``, ``response.reasoning_text.delta`` for
``sim_reasoning``, ``response.function_call_arguments.delta`` for a function call), their ``.done``,
``response.content_part.done`` and ``response.output_item.done``; last ``response.completed`` with usage, or
``response.incomplete`` (``incomplete_details.reason`` ``max_output_tokens``) when ``max_output_tokens`` ended the
answer. Every event's JSON ends with the sim's stamp, ``"sim": {"ns", "seq", "of"}``, ``seq`` equal to its
``sequence_number``. The sim keeps no responses: ``previous_response_id`` is refused.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from loadtest import simcontent
from loadtest.sim._http import rate_limit_headers
from loadtest.sim._plan import BadRequest, Plan, truthy
from loadtest.sim._state import Sim
from loadtest.sim._stream import Streamed, Whole, layout
from loadtest.sim._tools import responses_tools, script_for
from loadtest.simcontent import dumps

__all__ = ["LENGTH_KEYS", "key", "error", "reply"]

LENGTH_KEYS = ("max_output_tokens",)
# OpenAI's error (type, code) by HTTP status; any other 4xx is an invalid_request_error, any 5xx a server_error.
ERROR_TYPES = {
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    404: ("invalid_request_error", "not_found", "Not found."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again in 1s."),
}
MALFORMED_EVENT = b"event: response.output_text.delta\ndata: {not json\n\n"


def key(headers: Mapping[str, str]) -> str | None:
    """The API key an OpenAI client presents: ``Authorization: Bearer KEY``."""
    auth = headers.get("authorization", "")
    return auth[7:] if auth.startswith("Bearer ") else None


def error(status: int, message: str | None = None, kind: str | None = None,
          param: str | None = None) -> tuple[int, bytes, list]:
    """OpenAI's error response: ``{"error": {"message", "type", "param", "code"}}``."""
    default = ("invalid_request_error", None, "Invalid request.") if status < 500 else (
        "server_error", None, "The server had an error while processing your request.")
    known, code, text = ERROR_TYPES.get(status, default)
    body = {"error": {"message": message or text, "type": kind or known, "param": param, "code": code}}
    return status, dumps(body), rate_limit_headers(status)


def _prompt(body: Mapping) -> list:
    """The request's ``instructions`` and ``input`` as chat-like messages, for hashing and counting tokens."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise BadRequest("model: a model is required")
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    elif not isinstance(items, list):
        raise BadRequest("input: a string or a list of input items is required")
    limit = body.get("max_output_tokens")
    if limit is not None and (type(limit) is not int or limit < 1):
        raise BadRequest(f"max_output_tokens: must be a positive integer, got {limit!r}")
    if body.get("previous_response_id") is not None:
        raise BadRequest(f"Previous response with id {body['previous_response_id']!r} not found.")
    messages = [{"role": "system", "content": body["instructions"]}] if isinstance(body.get("instructions"), str) \
        else []
    for item in items:
        if isinstance(item, Mapping) and "content" not in item:
            item = {"content": item.get("output") if isinstance(item.get("output"), str) else item.get("arguments")}
        messages.append(item)
    return messages


def reply(sim: Sim, body: dict, plan: Plan) -> Streamed | Whole:
    messages = _prompt(body)
    model = body["model"]
    digest = simcontent.request_hash(model, messages)
    if plan.deterministic:
        ids = [digest[i : i + 12].hex() for i in range(0, 20, 4)]
        created = simcontent.DETERMINISTIC_CREATED
    else:
        ids = [f"{sim.rng.getrandbits(96):024x}" for _ in range(5)]
        created = int(time.time())
    answer = script_for(digest, plan, simcontent.prompt_tokens(messages), *responses_tools(body))
    response = _Response(body, answer, ids, created)
    if not truthy(body.get("stream", False)):
        return Whole(simcontent.stamped(response.json(response.status, response.output())[:-1], 0, 1, event=None))
    return response.stream(plan)


class _Response:
    """One response's objects and events; ``ids``: hex for the response, message, reasoning and call items."""

    def __init__(self, body: Mapping, answer: simcontent.Script, ids: list[str], created: int) -> None:
        self.answer = answer
        self.id = "resp_" + ids[0]
        self.message_id, self.reasoning_id = "msg_" + ids[1], "rs_" + ids[2]
        self.call_item_id, self.call_id = "fc_" + ids[3], "call_" + ids[4]
        self.status = "incomplete" if answer.stop == "length" else "completed"
        tools = body.get("tools") if isinstance(body.get("tools"), list) else []
        self.tools_json = dumps(tools)
        self.echo = {
            "id": self.id, "object": "response", "created_at": created, "model": body["model"],
            "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
            "parallel_tool_calls": body.get("parallel_tool_calls", True), "previous_response_id": None,
            "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
            "store": body.get("store", True), "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}}, "tool_choice": body.get("tool_choice", "auto"),
            "top_p": body.get("top_p", 1.0), "truncation": body.get("truncation", "disabled"),
            "user": body.get("user"), "metadata": body.get("metadata") or {},
        }

    def json(self, status: str, output: list, error: dict | None = None) -> bytes:
        """The response object; ``tools`` (which agents send by the dozen) serialised once, spliced in."""
        done = status != "in_progress"
        usage = None
        if done and error is None:
            answer = self.answer
            usage = {"input_tokens": answer.prompt_tokens, "input_tokens_details": {"cached_tokens": 0},
                     "output_tokens": answer.output_tokens,
                     "output_tokens_details": {"reasoning_tokens": answer.reasoning_tokens},
                     "total_tokens": answer.prompt_tokens + answer.output_tokens}
        incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
        obj = {**self.echo, "status": status, "error": error, "incomplete_details": incomplete, "output": output,
               "usage": usage}
        return dumps(obj)[:-1] + b',"tools":' + self.tools_json + b"}"

    def _message(self, status: str) -> dict:
        content = [{"type": "output_text", "text": "".join(self.answer.text), "annotations": []}] if status != \
            "in_progress" else []
        return {"id": self.message_id, "type": "message", "status": status, "role": "assistant", "content": content}

    def _reasoning(self, status: str) -> dict:
        content = [{"type": "reasoning_text", "text": "".join(self.answer.reasoning)}] if status != "in_progress" \
            else []
        return {"id": self.reasoning_id, "type": "reasoning", "summary": [], "content": content, "status": status}

    def _call(self, status: str) -> dict:
        call = self.answer.tool
        arguments = call.arguments if call is not None and status != "in_progress" else ""
        return {"id": self.call_item_id, "type": "function_call", "status": status, "arguments": arguments,
                "call_id": self.call_id, "name": call.name if call else ""}

    def output(self) -> list:
        answer = self.answer
        out = []
        if answer.reasoning:
            out.append(self._reasoning("completed"))
        if answer.text:
            out.append(self._message(self.status))
        if answer.tool is not None:
            out.append(self._call("completed"))
        return out

    def stream(self, plan: Plan) -> Streamed:
        answer = self.answer
        blocks = []
        if answer.reasoning:
            blocks.append(self._part_block(len(blocks), self.reasoning_id, self._reasoning, "completed",
                                           b"reasoning_text", answer.reasoning, b'{"type":"reasoning_text","text":""}'))
        if answer.text:
            blocks.append(self._part_block(len(blocks), self.message_id, self._message, self.status, b"output_text",
                                           answer.text, b'{"type":"output_text","text":"","annotations":[]}'))
        if answer.tool is not None:
            blocks.append(self._call_block(len(blocks)))
        in_progress = self.json("in_progress", [])
        preamble = [_ev(b"response.created", b',"response":' + in_progress),
                    _ev(b"response.in_progress", b',"response":' + in_progress)]
        final = b"response.incomplete" if self.status == "incomplete" else b"response.completed"
        tail = [_ev(final, b',"response":' + self.json(self.status, self.output()))]
        specs, firsts, content_end = layout(preamble, blocks, tail)
        of = len(specs)
        events = [simcontent.stamped(b"%b%d%b" % (head, k, rest), k, of, event=b"event: %b\ndata: " % name)
                  for k, (name, head, rest) in enumerate(specs)]
        return Streamed(events, firsts, content_end, malformed=MALFORMED_EVENT,
                        error=self._failed(plan, firsts, content_end))

    def _part_block(self, index: int, item_id: str, item, status: str, kind: bytes, pieces, part: bytes) -> tuple:
        """An item with one content part of ``kind`` (``output_text`` or ``reasoning_text``) streamed in pieces."""
        where = b',"item_id":"%b","output_index":%d,"content_index":0' % (item_id.encode(), index)
        logprobs = b',"logprobs":[]' if kind == b"output_text" else b""
        text = "".join(pieces)
        done_part = dumps({"type": kind.decode(), "text": text, **(
            {"annotations": []} if kind == b"output_text" else {})})
        opening = [_ev(b"response.output_item.added", b',"output_index":%d,"item":%b'
                       % (index, dumps(item("in_progress")))),
                   _ev(b"response.content_part.added", where + b',"part":' + part)]
        deltas = [_ev(b"response.%b.delta" % kind, where + b',"delta":' + dumps(p) + logprobs) for p in pieces]
        closing = [_ev(b"response.%b.done" % kind, where + b',"text":' + dumps(text) + logprobs),
                   _ev(b"response.content_part.done", where + b',"part":' + done_part),
                   _ev(b"response.output_item.done", b',"output_index":%d,"item":%b'
                       % (index, dumps(item(status))))]
        return opening, deltas, closing

    def _call_block(self, index: int) -> tuple:
        call = self.answer.tool
        where = b',"item_id":"%b","output_index":%d' % (self.call_item_id.encode(), index)
        opening = [_ev(b"response.output_item.added", b',"output_index":%d,"item":%b'
                       % (index, dumps(self._call("in_progress"))))]
        deltas = [_ev(b"response.function_call_arguments.delta", where + b',"delta":' + dumps(p)) for p in call.pieces]
        closing = [_ev(b"response.function_call_arguments.done",
                       where + b',"name":' + dumps(call.name) + b',"arguments":' + dumps(call.arguments)),
                   _ev(b"response.output_item.done", b',"output_index":%d,"item":%b'
                       % (index, dumps(self._call("completed"))))]
        return opening, deltas, closing

    def _failed(self, plan: Plan, firsts: list[int], content_end: int) -> bytes:
        """``response.failed`` for the error:K fault, numbered after the events sent before it."""
        if plan.fault != "error":
            return b""
        k = plan.fault_arg
        seq = firsts[k] if k < len(firsts) else content_end
        failed = self.json("failed", [], {"code": "server_error",
                                          "message": "The server had an error while processing your request."})
        return b'event: response.failed\ndata: {"type":"response.failed","sequence_number":%d,"response":%b}\n\n' % (
            seq, failed)


def _ev(name: bytes, rest: bytes) -> tuple[bytes, bytes, bytes]:
    """An event spec: its name, its JSON up to the sequence number, and the rest (no closing brace)."""
    return name, b'{"type":"%b","sequence_number":' % name, rest
