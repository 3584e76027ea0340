"""What the simulated upstream says, sans I/O: deterministic content and precomputed response bytes.

Everything here is pure: a request body in, bytes out. The server (:mod:`loadtest.sim`) only splices
the send-time stamp into the bytes built here, so a chunk send costs one bytes concatenation instead
of one ``json.dumps``.

A chunk's bytes are split around its stamp: ``prefix + b"%d" % time.monotonic_ns() + suffix``. The
``"sim"`` object is the last key of every chunk, so the stamp is the only part that changes::

    data: {"id":...,"choices":[...],"sim":{"ns":  <stamp>  ,"seq":3,"of":21}}\\n\\n
    `------------------ prefix ------------------'         `----- suffix -----'
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "DEFAULT_MODEL",
    "DETERMINISTIC_CREATED",
    "BALANCE",
    "DONE_EVENT",
    "MALFORMED_EVENT",
    "MODELS",
    "Script",
    "Stamped",
    "ToolCall",
    "chat_completion",
    "chat_events",
    "completion",
    "dumps",
    "embeddings",
    "error_body",
    "error_type",
    "file_object",
    "file_part",
    "models_body",
    "prompt_tokens",
    "request_hash",
    "script",
    "split_text",
    "stamped",
    "stream_events",
    "token_count",
    "tokens",
    "tool_arguments",
]

DEFAULT_MODEL = "moonshot-v1-8k"
MODELS = ("moonshot-v1-8k", "moonshot-v1-32k", "moonshot-v1-128k")
DETERMINISTIC_CREATED = 1700000000
DONE_EVENT = b"data: [DONE]\n\n"
MALFORMED_EVENT = b"data: {not json\n\n"

# A fixed vocabulary: the same request hash always picks the same words.
VOCABULARY = tuple(
    """the moon orbits earth at a mean distance of about three hundred eighty four thousand kilometres
    its surface is covered in regolith craters maria and highlands formed by ancient impacts and lava
    tides rise twice a day because gravity pulls the oceans toward it while earth turns beneath light
    from the sun reflects off the lunar surface so we see phases new crescent quarter gibbous and full
    astronauts walked there in nineteen sixty nine collecting rocks that tell the story of the early
    solar system water ice may hide in shadowed polar craters where temperatures stay cold forever
    future missions plan bases rovers telescopes and fuel depots to support travel deeper into space""".split()
)

_ERROR_TYPES = {
    400: ("invalid_request_error", "Invalid request: the request could not be processed"),
    401: ("invalid_authentication_error", "Invalid Authentication"),
    403: ("exceeded_current_quota_error", "Your account is suspended, please check your plan and billing details"),
    404: ("resource_not_found_error", "Not found the model or Permission denied"),
    429: (
        "rate_limit_reached_error",
        "Your account reached max request per minute: 3, please try again after 1 seconds",
    ),
    500: ("server_error", "Internal server error"),
}


def dumps(obj: object) -> bytes:
    """Compact JSON, as the upstream sends it."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def error_type(status: int) -> str:
    """Moonshot's error ``type`` for an HTTP status (``server_error`` for any status we do not know)."""
    return _ERROR_TYPES.get(status, ("server_error", ""))[0]


def error_body(status: int, message: str | None = None, kind: str | None = None) -> bytes:
    """A Moonshot-style error body: ``{"error": {"message", "type"}}``, without ``code`` (``kind``: the ``type``,
    where the status alone does not say it)."""
    known, default = _ERROR_TYPES.get(status, ("server_error", f"Upstream error {status}"))
    return dumps({"error": {"message": message or default, "type": kind or known}})


def models_body(created: int = DETERMINISTIC_CREATED, models: Sequence[str] = MODELS) -> bytes:
    return dumps(
        {
            "object": "list",
            "data": [{"id": m, "object": "model", "created": created, "owned_by": "moonshot"} for m in models],
        }
    )


def _message_texts(messages: object) -> list[str]:
    texts: list[str] = []
    if not isinstance(messages, list):
        return texts
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                    texts.append(part["text"])
    return texts


def request_hash(model: str, messages: object) -> bytes:
    """SHA-256 of the model and the messages: what the content is derived from."""
    canonical = json.dumps([model, messages], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).digest()


def prompt_tokens(messages: object) -> int:
    """A deterministic estimate: whitespace words (CJK text counts per character) plus 3 per message."""
    total = 0
    count = len(messages) if isinstance(messages, list) else 0
    for text in _message_texts(messages):
        words = text.split()
        total += sum(max(1, sum(1 for ch in w if ord(ch) > 0x2E80)) for w in words)
    return max(1, total + 3 * count)


def tokens(digest: bytes, count: int) -> list[str]:
    """``count`` words from the vocabulary, the same for the same digest; each after the first has a leading space."""
    rng = random.Random(digest)
    words = [rng.choice(VOCABULARY) for _ in range(count)]
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


@dataclass(frozen=True, slots=True)
class Stamped:
    """One event's bytes, split around the send stamp."""

    prefix: bytes
    suffix: bytes

    def render(self, ns: int) -> bytes:
        return self.prefix + b"%d" % ns + self.suffix


def _stamped(obj: dict, seq: int, of: int, *, sse: bool) -> Stamped:
    body = dumps(obj)
    assert body.endswith(b"}")
    return stamped(body[:-1], seq, of, event=b"data: " if sse else None)


def stamped(head: bytes, seq: int, of: int, *, event: bytes | None = b"data: ") -> Stamped:
    """An event from ``head``, a JSON object's bytes without its closing brace: the stamp goes in as its last key.

    ``event``: what comes before the JSON (``data: ``, or ``event: NAME\ndata: ``); None for a bare body.
    """
    tail = b',"seq":%d,"of":%d}}' % (seq, of)
    if event is None:
        return Stamped(head + b',"sim":{"ns":', tail)
    return Stamped(event + head + b',"sim":{"ns":', tail + b"\n\n")


def _chunk_contents(words: list[str], chunks: int, per_chunk: int) -> list[str]:
    return ["".join(words[k * per_chunk : (k + 1) * per_chunk]) for k in range(chunks)]


# -- what the simulated model says, whatever the protocol ----------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call of a request's tool: its name and its arguments (a JSON object), streamed in ``pieces``."""

    name: str
    arguments: str
    pieces: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Script:
    """What the simulated model answers, before any protocol shapes it: reasoning, then text, then a tool call,
    each in the pieces the stream sends one per timed send."""

    reasoning: tuple[str, ...]
    text: tuple[str, ...]
    tool: ToolCall | None
    prompt_tokens: int
    output_tokens: int  # reasoning and text tokens, plus one per piece of the tool call's arguments
    stop: str  # "stop" (done), "length" (max_tokens reached) or "tool" (the answer is a tool call)
    reasoning_tokens: int = 0  # of output_tokens

    @property
    def pieces(self) -> int:
        """How many timed sends the stream makes (at least one, for the end of an empty answer)."""
        return max(1, len(self.reasoning) + len(self.text) + (len(self.tool.pieces) if self.tool else 0))


def script(
    digest: bytes,
    *,
    chunks: int,
    tokens_per_chunk: int,
    prompt: int,
    output_tokens: int | None = None,
    reasoning_tokens: int = 0,
    tool: tuple[str, object] | None = None,
    forced: bool = False,
    tool_pieces: int | None = None,
) -> Script:
    """The answer to a request whose content hashes to ``digest``.

    Text: ``chunks`` pieces of ``tokens_per_chunk`` words. ``reasoning_tokens`` words of reasoning come first,
    ``tokens_per_chunk`` a piece. ``output_tokens`` (a request's ``max_tokens``): reasoning and text are exactly
    that many words together (reasoning first, the text has the rest; the last piece of each carries its
    remainder). ``tool`` (name, JSON schema of its arguments): the answer ends with a call of it, whose arguments fit
    the schema and are streamed in ``tool_pieces`` pieces (default one per 4 characters, as a tokenizer would cut
    them), counted as one output token each; ``forced`` (the request demanded a tool call): no text before it.
    """
    if output_tokens is not None:
        reasoning_tokens = min(reasoning_tokens, output_tokens)
        text_tokens = output_tokens - reasoning_tokens
        chunks = -(-text_tokens // tokens_per_chunk)
    else:
        text_tokens = chunks * tokens_per_chunk
    if tool is not None and forced:
        text_tokens = 0
    text = _chunk_contents(tokens(digest, text_tokens), chunks, tokens_per_chunk) if text_tokens else []
    reasoning: list[str] = []
    if reasoning_tokens:
        words = tokens(digest + b"reasoning", reasoning_tokens)
        reasoning = _chunk_contents(words, -(-reasoning_tokens // tokens_per_chunk), tokens_per_chunk)
    call = None
    if tool is not None:
        arguments = tool_arguments(tool[1], digest, min_length=tool_pieces or 0)
        wanted = tool_pieces or -(-len(arguments) // 4)
        call = ToolCall(tool[0], arguments, tuple(split_text(arguments, wanted)))
    stop = "tool" if call else ("length" if output_tokens is not None else "stop")
    output = text_tokens + reasoning_tokens + (len(call.pieces) if call else 0)
    return Script(tuple(reasoning), tuple(text), call, prompt, output, stop, reasoning_tokens)


def split_text(text: str, n: int) -> list[str]:
    """``text`` in ``n`` pieces of nearly equal length (no empty piece: at most ``len(text)`` pieces, at least one)."""
    n = max(1, min(n, len(text)))
    size, extra = divmod(len(text), n)
    pieces, at = [], 0
    for i in range(n):
        end = at + size + (1 if i < extra else 0)
        pieces.append(text[at:end])
        at = end
    return pieces


_SCHEMA_DEPTH = 6


def tool_arguments(schema: object, digest: bytes, *, min_length: int = 0) -> str:
    """Compact JSON arguments that fit a tool's JSON schema, the same for the same digest.

    Each property the schema requires (every property when it lists none) gets a value of its type: the first
    ``enum`` value, a word of the vocabulary, a small number, ``true``, a one-item array, a nested object. When the
    JSON is shorter than ``min_length`` (a request that wants its arguments in more pieces), the first free string
    value (not an ``enum``) grows by words until it is long enough.
    """
    rng = random.Random(digest + b"tool")
    schema = schema if isinstance(schema, Mapping) else {}
    value = _fit({"type": "object", **schema}, rng, 0)  # arguments are an object, whether the schema says so or not
    if not isinstance(value, dict):
        value = {"value": value}
    text = dumps(value).decode()
    properties = schema.get("properties") if isinstance(schema.get("properties"), Mapping) else {}
    free = [k for k, v in value.items() if isinstance(v, str)
            and not (isinstance(properties.get(k), Mapping) and {"enum", "const"} & properties[k].keys())]
    key = free[0] if free else None
    while key is not None and len(text) < min_length:
        value[key] += " " + rng.choice(VOCABULARY)
        text = dumps(value).decode()
    return text


def _fit(schema: Mapping, rng: random.Random, depth: int) -> object:
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options and isinstance(options[0], Mapping):
            return _fit(options[0], rng, depth)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and isinstance(schema.get("properties"), Mapping)):
        if depth >= _SCHEMA_DEPTH:
            return {}
        properties = schema.get("properties")
        if not isinstance(properties, Mapping):
            return {}
        required = schema.get("required")
        names = [n for n in required if n in properties] if isinstance(required, list) and required else properties
        return {name: _fit(properties[name] if isinstance(properties[name], Mapping) else {}, rng, depth + 1)
                for name in names}
    if kind == "array":
        items = schema.get("items")
        return [_fit(items, rng, depth + 1)] if isinstance(items, Mapping) and depth < _SCHEMA_DEPTH else []
    if kind == "integer":
        return rng.randrange(1, 100)
    if kind == "number":
        return rng.randrange(1, 1000) / 10
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return rng.choice(VOCABULARY)


# -- chat completions -----------------------------------------------------------------------------------


def stream_events(
    *,
    completion_id: str,
    created: int,
    model: str,
    words: list[str],
    chunks: int,
    tokens_per_chunk: int,
    prompt: int,
    include_usage: bool,
    output_tokens: int | None = None,
) -> list[Stamped]:
    """Every data event of a stream of plain text (``words`` in ``chunks`` chunks), in order; see :func:`chat_events`.

    ``output_tokens`` (a request's ``max_tokens``) is the completion's length when given: ``words`` holds that many,
    the last chunk carries what is left over, and ``finish_reason`` is ``length``, as a model stopped by
    ``max_tokens`` says.
    """
    text_tokens = chunks * tokens_per_chunk if output_tokens is None else output_tokens
    answer = Script((), tuple(_chunk_contents(words, chunks, tokens_per_chunk)), None, prompt, text_tokens,
                    "stop" if output_tokens is None else "length")
    return chat_events(answer, completion_id=completion_id, created=created, model=model,
                       include_usage=include_usage)


_FINISH = {"stop": "stop", "length": "length", "tool": "tool_calls"}


def _chat_usage(answer: Script) -> dict:
    return {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.output_tokens,
            "total_tokens": answer.prompt_tokens + answer.output_tokens}


def chat_events(
    answer: Script, *, completion_id: str, created: int, model: str, include_usage: bool, tool_id: str = ""
) -> list[Stamped]:
    """Every data event of a chat stream, in order ([DONE] excluded: it is :data:`DONE_EVENT`): one per piece, then
    the final one.

    Pieces: ``reasoning_content`` deltas (as Moonshot's thinking models send them), ``content`` deltas, then the
    tool call (its ``id``, ``type`` and function ``name`` with the first piece of its ``arguments``, then the rest
    of the arguments piece by piece); the first delta has ``role``. The final event has ``finish_reason`` (``stop``,
    ``length`` or ``tool_calls``) and Moonshot's ``usage`` inside ``choices[0]``; with ``include_usage`` the final
    event has no usage and one more event carries it at the top level, as OpenAI sends it.

    Bytes from templates: the chunk's skeleton is serialised once, each delta's text once.
    """
    deltas = [b'{"reasoning_content":%b}' % dumps(piece) for piece in answer.reasoning]
    deltas += [b'{"content":%b}' % dumps(piece) for piece in answer.text]
    call = answer.tool
    if call is not None:
        deltas.append(b'{"tool_calls":[{"index":0,"id":%b,"type":"function","function":{"name":%b,"arguments":%b}}]}'
                      % (dumps(tool_id), dumps(call.name), dumps(call.pieces[0])))
        deltas += [b'{"tool_calls":[{"index":0,"function":{"arguments":%b}}]}' % dumps(p) for p in call.pieces[1:]]
    if deltas:
        deltas[0] = b'{"role":"assistant",' + deltas[0][1:]
    of = len(deltas) + (2 if include_usage else 1)
    base = dumps({"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model})[:-1]
    head = base + b',"choices":[{"index":0,"delta":'
    events = [stamped(head + delta + b',"finish_reason":null}]', k, of) for k, delta in enumerate(deltas)]
    final: dict = {"index": 0, "delta": {}, "finish_reason": _FINISH[answer.stop]}
    if not include_usage:
        final["usage"] = _chat_usage(answer)
    events.append(stamped(base + b',"choices":[' + dumps(final) + b"]", len(deltas), of))
    if include_usage:
        events.append(stamped(base + b',"choices":[],"usage":' + dumps(_chat_usage(answer)), len(deltas) + 1, of))
    return events


def completion(
    *,
    completion_id: str,
    created: int,
    model: str,
    words: list[str],
    chunks: int,
    tokens_per_chunk: int,
    prompt: int,
    output_tokens: int | None = None,
) -> Stamped:
    """The non-streaming ``chat.completion`` body of plain text: the same text the stream would have sent."""
    completion_tokens = chunks * tokens_per_chunk if output_tokens is None else output_tokens
    answer = Script((), ("".join(words[:completion_tokens]),), None, prompt, completion_tokens,
                    "stop" if output_tokens is None else "length")
    return chat_completion(answer, completion_id=completion_id, created=created, model=model)


def chat_completion(answer: Script, *, completion_id: str, created: int, model: str, tool_id: str = "") -> Stamped:
    """The non-streaming ``chat.completion`` body: the message the stream would have sent, whole."""
    content = "".join(answer.text) if answer.text or answer.tool is None else None
    message: dict = {"role": "assistant", "content": content}
    if answer.reasoning:
        message["reasoning_content"] = "".join(answer.reasoning)
    if answer.tool is not None:
        function = {"name": answer.tool.name, "arguments": answer.tool.arguments}
        message["tool_calls"] = [{"id": tool_id, "type": "function", "function": function}]
    obj = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": _FINISH[answer.stop]}],
        "usage": _chat_usage(answer),
    }
    return _stamped(obj, 0, 1, sse=False)


# -- the other endpoints (what a relay passes through) ------------------------------------------------

EMBEDDING_DIMENSIONS = 8
# Moonshot's GET /v1/users/me/balance
BALANCE = dumps(
    {
        "code": 0,
        "data": {"available_balance": 49.58894, "voucher_balance": 46.58893, "cash_balance": 3.00001},
        "scode": "0x0",
        "status": True,
    }
)


def embeddings(model: object, inputs: object) -> bytes:
    """OpenAI's embeddings list: a deterministic vector per input (the same text, the same vector)."""
    if not isinstance(model, str) or not model:
        raise ValueError("'model' is required")
    texts = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError("'input' must be a string or a list of strings")
    data = []
    for i, text in enumerate(texts):
        digest = hashlib.sha256(f"{model}\n{text}".encode()).digest()
        vector = [round((b - 127.5) / 127.5, 6) for b in digest[:EMBEDDING_DIMENSIONS]]
        data.append({"object": "embedding", "index": i, "embedding": vector})
    tokens = sum(prompt_tokens([{"content": t}]) - 3 for t in texts)
    return dumps(
        {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    )


def token_count(messages: object) -> bytes:
    """Moonshot's ``POST /v1/tokenizers/estimate-token-count`` answer for these messages."""
    if not isinstance(messages, list):
        raise ValueError("'messages' is required and must be a list")
    return dumps({"code": 0, "data": {"total_tokens": prompt_tokens(messages)}, "scode": "0x0", "status": True})


def file_object(file_id: str, size: int, start: bytes, sha256: str, created_at: int) -> bytes:
    """Moonshot's file object for an upload of ``size`` body bytes; ``start`` is the body's beginning, where a
    multipart body names the file (``filename="..."``) and may carry a ``purpose`` field."""
    name = re.search(rb'filename="([^"\r\n]*)"', start)
    purpose = re.search(rb'name="purpose"\r\n\r\n([^\r\n]*)', start)
    return dumps(
        {
            "id": file_id,
            "object": "file",
            "bytes": size,
            "created_at": created_at,
            "filename": name.group(1).decode("utf-8", "replace") if name else "upload",
            "purpose": purpose.group(1).decode("utf-8", "replace") if purpose else "file-extract",
            "status": "ok",
            "status_details": "",
            "sim": {"sha256": sha256},
        }
    )


def file_part(file_id: str, k: int) -> bytes:
    """Part ``k`` of a file's content, as ``GET /v1/files/{id}/content`` streams it."""
    return f"{file_id} part {k}: {' '.join(VOCABULARY[k % len(VOCABULARY) :][:8])}\n".encode()
