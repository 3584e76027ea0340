"""Chat request validation, sans I/O: bytes in, a request to forward or an error out.

The relay forwards the client's bytes untouched whenever it can; it only re-serialises the body
when it must add the default model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidRequest


def check_content_type(mimetype: str, *, allow_text: bool = False) -> None:
    """Accept JSON (or no content type at all); ``allow_text`` also admits a browser fetch's text/plain."""
    if not mimetype or mimetype == "application/json" or mimetype.endswith("+json"):
        return
    if allow_text and mimetype == "text/plain":
        return
    raise InvalidRequest(
        f"Content type {mimetype!r} is not supported; send the body as application/json.",
        "unsupported_media_type",
        415,
    )


@dataclass(frozen=True, slots=True)
class ChatRequest:
    body: bytes  # what goes upstream
    stream: bool
    model: str
    data: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)  # the parsed body


def load_json(raw: bytes) -> Any:
    """The request body's JSON value; :class:`InvalidRequest` for bytes that are not UTF-8 JSON."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest("Request body is not valid UTF-8.", "invalid_encoding") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"Request body is not valid JSON: {exc.msg} at position {exc.pos}.", "invalid_json"
        ) from exc


def parse_chat_request(raw: bytes, default_model: str) -> ChatRequest:
    return check_chat_object(load_json(raw), raw, default_model)


def check_chat_object(data: Any, raw: bytes | None, default_model: str) -> ChatRequest:
    if not isinstance(data, dict):
        raise InvalidRequest("Request body must be a JSON object.", "invalid_json")
    messages = data.get("messages")
    if not isinstance(messages, list):
        raise InvalidRequest("'messages' is required and must be a list.", "invalid_messages")
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean.", "invalid_stream")
    model = data.get("model")
    if model is None:
        data = {**data, "model": default_model}
        model, raw = default_model, None
    elif not isinstance(model, str) or not model:
        raise InvalidRequest("'model' must be a non-empty string.", "invalid_model")
    if raw is None:
        raw = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    return ChatRequest(body=raw, stream=stream, model=model, data=data)
