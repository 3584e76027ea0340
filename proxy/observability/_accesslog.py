"""One JSON access-log line per request, sans I/O: request ids, key prefixes, usage and errors from a body's tail.

Everything here is pure: the ASGI shell (:mod:`proxy.observability`) hands in header values and the last
bytes a response sent, and gets back the fields of the line. Nothing here sees a whole stream: usage
is read from the *tail* of the body (the last two non-empty sends), where both shapes put it:

    Moonshot:  data: {..."choices":[{..."finish_reason":"stop","usage":{...}}]}   (the final chunk)
    OpenAI:    data: {..."choices":[],"usage":{...}}                            (stream_options.include_usage)
    either, not streamed:  {..."usage":{...}}                                   (the whole body)

and so is the error that ends a stream that broke: chat's ``data: {"error": ...}``, the Responses ``error`` event
or ``response.failed``.

Secrets never reach a line: a client key is cut to a prefix of at most 8 characters (half of a short
key), and upstream keys are never seen here at all.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..auth import bearer_token

LOGGER = "moonrelay.access"

# An id a client may choose: short, printable, no spaces or quotes (it is echoed in a header).
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
KEY_PREFIX_CHARS = 8

# Error codes the relay itself answers with (see proxy/protocol/_errors.py): not upstream errors.
RELAY_CODES = frozenset(
    {"relay_overloaded", "shutting_down", "invalid_api_key", "request_too_large", "unsupported_media_type"}
)


def request_id(header: str | None) -> str:
    """The client's ``X-Request-Id`` when it is a sane token, else a fresh one."""
    if header and _CLIENT_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


def key_prefix(authorization: str | None) -> str | None:
    """The first characters of a bearer token: 8 at most, and never more than half of it."""
    token = bearer_token(authorization)
    if token is None:
        return None
    return token[: min(KEY_PREFIX_CHARS, len(token) // 2)] or None


def model_from_body(raw: bytes) -> str | None:
    """The ``model`` a JSON request body names (None for anything else). Called once, after the response."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    model = data.get("model") if isinstance(data, dict) else None
    return model if isinstance(model, str) and model else None


def _usage_of(obj: Any) -> dict | None:
    if not isinstance(obj, dict):
        return None
    usage = obj.get("usage")
    if isinstance(usage, dict):
        return usage
    choices = obj.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        usage = choices[0].get("usage")  # Moonshot puts a stream's usage in its final choice
        if isinstance(usage, dict):
            return usage
    return None


def cached_of(usage: dict) -> int:
    """Cached prompt tokens, wherever the provider writes them (OpenAI, Moonshot, DeepSeek)."""
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    for value in (cached, usage.get("cached_tokens"), usage.get("prompt_cache_hit_tokens")):
        if type(value) is int and value > 0:
            return value
    return 0


def _error_of(obj: Any) -> dict | None:
    """The error a body's JSON ends with: OpenAI's ``{"error": {...}}``, or a Responses stream's last event (its
    ``error`` event, or ``response.failed``: how the relay ends a stream that broke after it started)."""
    if not isinstance(obj, dict):
        return None
    error = obj.get("error")
    if isinstance(error, dict):
        return error
    kind = obj.get("type")
    if kind == "error" and isinstance(obj.get("code"), str):
        code = obj["code"]
        return {"type": "upstream_error" if code.startswith("upstream_") else "server_error", "code": code}
    if kind == "response.failed" and isinstance(obj.get("response"), dict) and obj["response"].get("error"):
        return {"type": "upstream_error", "code": "upstream_error"}  # the failure's cause is not in the event
    return None


@dataclass
class Tail:
    """What the last bytes of a response say: token usage and an error, when they are there."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None  # usage's total_tokens, else prompt + completion (what client limits count)
    cached_tokens: int = 0  # of the prompt's, read from the provider's prompt cache (what the price table counts)
    error_type: str | None = None
    error_code: str | None = None


def scan_tail(tail: bytes, *, whole_json: bool) -> Tail:
    """Usage and error from the end of a body: a whole JSON document, or the last SSE/NDJSON lines.

    ``tail`` may start mid-line; lines that do not parse are skipped.
    """
    out = Tail()
    objects: list[Any] = []
    if whole_json:
        try:
            objects.append(json.loads(tail))
        except (ValueError, UnicodeDecodeError):
            return out
    else:
        for line in reversed(tail.split(b"\n")):
            if b'"usage"' not in line and b'"error"' not in line:
                continue
            if line.startswith(b"data:"):
                line = line[5:]
            try:
                objects.append(json.loads(line))
            except (ValueError, UnicodeDecodeError):
                continue
    for obj in objects:
        usage = _usage_of(obj)
        if usage is not None and out.prompt_tokens is None:
            prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
            out.prompt_tokens = prompt if isinstance(prompt, int) else None
            out.completion_tokens = completion if isinstance(completion, int) else None
            out.cached_tokens = cached_of(usage)
            total = usage.get("total_tokens")
            if isinstance(total, int):
                out.total_tokens = total
            elif out.prompt_tokens is not None or out.completion_tokens is not None:
                out.total_tokens = (out.prompt_tokens or 0) + (out.completion_tokens or 0)
        error = _error_of(obj)
        if error is not None and out.error_type is None:
            out.error_type = str(error.get("type")) if error.get("type") is not None else None
            out.error_code = str(error.get("code")) if error.get("code") is not None else None
    return out


def upstream_error_kind(status: int, tail: Tail) -> str | None:
    """What went wrong upstream, as a short label, or None when nothing did (or the relay refused).

    Transport failures are mapped by the relay to ``type: upstream_error`` (before the answer or as
    a stream's last event); an upstream's own 429 and 5xx are passed through with their status.
    """
    if tail.error_type == "upstream_error":
        return tail.error_code or "upstream_error"
    if tail.error_code in RELAY_CODES:
        return None
    if status == 429 or status >= 500:
        return f"http_{status}"
    return None


@dataclass
class AccessRecord:
    """One request as the access log tells it."""

    request_id: str
    method: str
    route: str
    upstream: str
    client_key: str | None = None
    model: str | None = None
    status: int = 0
    ttfc_ms: float | None = None
    duration_ms: float = 0.0
    chunks: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    completed: bool = False
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        fields = {
            "request_id": self.request_id,
            "method": self.method,
            "route": self.route,
            "model": self.model,
            "upstream": self.upstream,
            "status": self.status,
            "ttfc_ms": None if self.ttfc_ms is None else round(self.ttfc_ms, 2),
            "duration_ms": round(self.duration_ms, 2),
            "chunks": self.chunks,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "client_key": self.client_key,
            "completed": self.completed,  # False: the client left (or the relay stopped) before the end
        }
        if self.error is not None:
            fields["error"] = self.error
        fields.update(self.extra)
        return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (a redirected or captured stderr included)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging must never break a response
            self.handleError(record)


def access_logger() -> logging.Logger:
    """``moonrelay.access``: INFO lines of JSON to stderr, not propagated (the line is the message)."""
    logger = logging.getLogger(LOGGER)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger
