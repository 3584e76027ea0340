"""JSON as the bytes of an event, for translated streams: compact, UTF-8, and safe for any Python string.

``ensure_ascii=False`` keeps Chinese text at 3 bytes a character instead of 6; a lone surrogate (valid in a JSON
string, not encodable as UTF-8) falls back to ASCII escapes, so no upstream text can break a stream.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Any

_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_compact_ascii = json.JSONEncoder(separators=(",", ":")).encode


def dumps(obj: Any) -> bytes:
    """``obj`` as compact JSON bytes."""
    try:
        return _compact(obj).encode()
    except UnicodeEncodeError:
        return _compact_ascii(obj).encode()


def json_str(text: str) -> bytes:
    """``text`` as a JSON string literal, in bytes (the per-chunk case: no encoder object, no container)."""
    try:
        return encode_basestring(text).encode()
    except UnicodeEncodeError:
        return encode_basestring_ascii(text).encode()
