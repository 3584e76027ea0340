"""A cached answer, whole, and its bytes in a shared store, sans I/O.

An :class:`Entry` is what the client was sent: the status, the headers worth keeping (``content-type``), and
either the JSON body or the stream as its pieces, each one or more whole SSE events as they went out (terminators
included), with when each went out (for optional pacing), the usage and the model that answered.

In a shared store (Redis) an entry is ``MRC`` + one version byte + zlib (level 1: SSE compresses well, for little
CPU) of a JSON header line and the raw bytes after it::

    MRC\\x01 zlib( {"status":200,"headers":[["content-type","text/event-stream"]],"kind":"sse",
                    "lengths":[120,98,...],"offsets_ms":[0,31,...],"usage":{...},"model":"...","stored_at":...}\\n
                    <piece 1><piece 2>... )

:func:`decode` never raises: bytes of another version (older or newer relays), of another program, cut short,
bigger unpacked than the bound, or with a header that does not add up are a miss (None), never an error.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..protocol import Usage

MAGIC = b"MRC"
ENTRY_VERSION = 1
KEPT_HEADERS = frozenset({"content-type"})  # what a replayed answer needs; ids and rate-limit headers are per call
MAX_HEADER_LINE = 1024 * 1024  # the JSON header line: lengths and offsets of up to ~100,000 pieces
_USAGE_FIELDS = tuple(f.name for f in fields(Usage))


@dataclass(frozen=True, slots=True)
class Entry:
    """One complete answer. Exactly one of ``body`` (a JSON answer) and ``pieces`` (a stream) is set;
    ``offsets_ms[i]``: when piece ``i`` went out, in ms after the first."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes | None = None
    pieces: tuple[bytes, ...] | None = None
    offsets_ms: tuple[int, ...] = ()
    usage: Usage | None = None
    model: str | None = None
    stored_at: float = 0.0  # Unix time, for the answer's age

    @property
    def stream(self) -> bool:
        return self.pieces is not None

    @property
    def size(self) -> int:
        """Bytes the answer holds (what the stores' size bounds count)."""
        payload = len(self.body) if self.body is not None else sum(map(len, self.pieces or ()))
        return payload + sum(len(name) + len(value) for name, value in self.headers)


def kept_headers(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The response headers an entry keeps (:data:`KEPT_HEADERS`), names in lowercase."""
    return tuple((name.lower(), value) for name, value in headers if name.lower() in KEPT_HEADERS)


def json_entry(status: int, headers: Iterable[tuple[str, str]], body: bytes, *, usage: Usage | None = None,
               model: str | None = None, stored_at: float = 0.0) -> Entry:  # fmt: skip
    """The entry of a non-streamed answer."""
    return Entry(status, kept_headers(headers), body=body, usage=usage, model=model, stored_at=stored_at)


def encode(entry: Entry) -> bytes:
    payload = [entry.body] if entry.pieces is None else list(entry.pieces)
    header = {
        "status": entry.status, "headers": [list(h) for h in entry.headers],
        "kind": "sse" if entry.stream else "json", "lengths": [len(p) for p in payload],
        "offsets_ms": list(entry.offsets_ms), "usage": None if entry.usage is None else asdict(entry.usage),
        "model": entry.model, "stored_at": entry.stored_at,
    }  # fmt: skip
    raw = json.dumps(header, separators=(",", ":")).encode() + b"\n" + b"".join(payload)  # type: ignore[arg-type]
    return MAGIC + bytes([ENTRY_VERSION]) + zlib.compress(raw, 1)


def decode(data: bytes, max_bytes: int) -> Entry | None:
    """The entry in ``data``, or None: another version, not an entry, or more than ``max_bytes`` of answer."""
    if len(data) < 5 or data[:3] != MAGIC or data[3] != ENTRY_VERSION:
        return None
    try:
        unpack = zlib.decompressobj()
        raw = unpack.decompress(data[4:], max_bytes + MAX_HEADER_LINE)
        if unpack.unconsumed_tail or not unpack.eof:
            return None
        line, sep, payload = raw.partition(b"\n")
        if not sep or len(line) > MAX_HEADER_LINE:
            return None
        entry = _entry(json.loads(line), payload)
        return entry if entry is not None and entry.size <= max_bytes else None
    except (ValueError, TypeError, KeyError, AttributeError, zlib.error):  # UnicodeDecodeError, JSONDecodeError too
        return None


def _entry(header: dict[str, Any], payload: bytes) -> Entry | None:
    status, kind, lengths, offsets = header["status"], header["kind"], header["lengths"], header["offsets_ms"]
    if type(status) is not int or not 100 <= status <= 599 or kind not in ("sse", "json"):
        return None
    if not all(type(n) is int and n >= 0 for n in lengths) or sum(lengths) != len(payload):
        return None
    headers = tuple((str(name), str(value)) for name, value in header["headers"])
    usage = header.get("usage")
    usage = None if usage is None else Usage(**{name: int(usage[name]) for name in _USAGE_FIELDS if name in usage})
    model = header.get("model")
    model = model if isinstance(model, str) else None
    stored_at = float(header.get("stored_at") or 0.0)
    if kind == "json":
        if len(lengths) != 1 or offsets:
            return None
        return Entry(status, headers, body=payload, usage=usage, model=model, stored_at=stored_at)
    if len(offsets) != len(lengths) or not all(type(ms) is int for ms in offsets):
        return None
    pieces, pos = [], 0
    for n in lengths:
        pieces.append(payload[pos : pos + n])
        pos += n
    return Entry(status, headers, pieces=tuple(pieces), offsets_ms=tuple(offsets), usage=usage, model=model,
                 stored_at=stored_at)  # fmt: skip
