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
    "Stamped",
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
    "stream_events",
    "token_count",
    "tokens",
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


def error_body(status: int, message: str | None = None) -> bytes:
    """A Moonshot-style error body: ``{"error": {"message", "type"}}``, without ``code``."""
    kind, default = _ERROR_TYPES.get(status, ("server_error", f"Upstream error {status}"))
    return dumps({"error": {"message": message or default, "type": kind}})


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
    head = body[:-1] + b',"sim":{"ns":'
    tail = b',"seq":%d,"of":%d}}' % (seq, of)
    if sse:
        return Stamped(b"data: " + head, tail + b"\n\n")
    return Stamped(head, tail)


def _chunk_contents(words: list[str], chunks: int, per_chunk: int) -> list[str]:
    return ["".join(words[k * per_chunk : (k + 1) * per_chunk]) for k in range(chunks)]


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
    """Every data event of a stream, in order ([DONE] excluded: it is :data:`DONE_EVENT`).

    ``chunks`` content events (the first with ``role``), then the final event with ``finish_reason``
    ``stop`` and Moonshot's ``usage`` inside ``choices[0]``; with ``include_usage`` the final event has
    no usage and one more event carries it at the top level, as OpenAI sends it. ``output_tokens`` (a request's
    ``max_tokens``) is the completion's length when given: ``words`` holds that many, the last chunk carries what is
    left over, and ``finish_reason`` is ``length``, as a model stopped by ``max_tokens`` says.
    """
    of = chunks + (2 if include_usage else 1)
    base = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}
    completion_tokens = chunks * tokens_per_chunk if output_tokens is None else output_tokens
    usage = {"prompt_tokens": prompt, "completion_tokens": completion_tokens}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    events = []
    for k, text in enumerate(_chunk_contents(words, chunks, tokens_per_chunk)):
        delta = {"role": "assistant", "content": text} if k == 0 else {"content": text}
        choice = {"index": 0, "delta": delta, "finish_reason": None}
        events.append(_stamped({**base, "choices": [choice]}, k, of, sse=True))
    final: dict = {"index": 0, "delta": {}, "finish_reason": "stop" if output_tokens is None else "length"}
    if not include_usage:
        final["usage"] = usage
    events.append(_stamped({**base, "choices": [final]}, chunks, of, sse=True))
    if include_usage:
        events.append(_stamped({**base, "choices": [], "usage": usage}, chunks + 1, of, sse=True))
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
    """The non-streaming ``chat.completion`` body: the same text the stream would have sent."""
    completion_tokens = chunks * tokens_per_chunk if output_tokens is None else output_tokens
    obj = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(words[:completion_tokens])},
                "finish_reason": "stop" if output_tokens is None else "length",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
        },
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
