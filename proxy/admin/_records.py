"""The admin API's client keys as records, sans I/O: what a request body may say (validated the way the keys file
is: proxy/limits/_keys.py), what the store keeps (JSON, never the key: its SHA-256 digest), what the API shows.

A record keeps its fields in the keys file's spelling (``rpm``: ``"60"``, ``budget``: ``"$20/30d"``), so the limits
it gives are the ones a keys-file line with the same fields gives, the ``key_*`` defaults filling in the rest. A
stored record of another format version, or whose fields no longer parse, is skipped with a log line (never a key
let in with limits the relay cannot read).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import InvalidRequest
from ..limits import KEY_FIELDS, ClientKey, KeysFileError, apply_fields, key_id
from ..pricing import money

FORMAT = 1  # a stored record's format version ("v")
_INTS = ("rpm", "tpm", "concurrent")
_KEY = re.compile(r"[\x21-\x7e]{20,256}")  # a key a client sends in a header: printable ASCII, no spaces
WHERE = "admin request"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One managed key: ``id`` (its digest's first 16 hex digits, the counters' name), ``digest`` (SHA-256, hex),
    ``fields`` (the keys file's spelling), ``disabled``, and when it was created and last changed (Unix seconds)."""

    id: str
    digest: str
    fields: dict[str, str] = field(default_factory=dict)
    disabled: bool = False
    created: float = 0.0
    updated: float = 0.0

    def limits(self, base: ClientKey) -> ClientKey:
        """Its identity and limits: ``base`` (the ``key_*`` defaults) with its fields; every request counted for
        its usage. A KeysFileError when a field does not parse."""
        own = replace(base, id=self.id, label=self.id[:8], usage=True)
        return apply_fields(own, self.fields, f"admin key {self.id}")

    def encode(self) -> str:
        return json.dumps({"v": FORMAT, "id": self.id, "digest": self.digest, "fields": self.fields,
                           "disabled": self.disabled, "created": self.created, "updated": self.updated},
                          separators=(",", ":"), sort_keys=True)  # fmt: skip


def decode(raw: str | bytes) -> KeyRecord | None:
    """A stored record, or None when it is not one of this format."""
    try:
        data = json.loads(raw)
        if data["v"] != FORMAT or not isinstance(data["fields"], dict):
            return None
        record = KeyRecord(str(data["id"]), str(data["digest"]), {str(k): str(v) for k, v in data["fields"].items()},
                           bool(data["disabled"]), float(data["created"]), float(data["updated"]))  # fmt: skip
    except (ValueError, TypeError, KeyError):
        return None
    return record if len(record.digest) == 64 and record.id == record.digest[:16] else None


def digest_of(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(slots=True)
class Change:
    """A valid create or update body: the key given (create), the fields to set (``None``: back to the default),
    whether to disable or enable it."""

    key: str | None = None
    fields: dict[str, str | None] = field(default_factory=dict)
    disabled: bool | None = None


def parse_change(body: bytes, *, creating: bool) -> Change:
    """A create (``POST``) or update (``PATCH``) body → :class:`Change`; an InvalidRequest (400) naming what is
    wrong: not a JSON object, an unknown field, a value of the wrong type or one the keys file would refuse."""
    try:
        data = json.loads(body) if body.strip() else ({} if creating else None)
    except ValueError:
        raise InvalidRequest("The body is not valid JSON.", "invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The body must be a JSON object.", "invalid_body")
    allowed = (*KEY_FIELDS, "disabled", *(("key",) if creating else ()))
    change = Change()
    for name, value in data.items():
        if name not in allowed:
            raise InvalidRequest(f"Unknown field {name!r} (expected {', '.join(allowed)}).", "unknown_field")
        if name == "key":
            if not isinstance(value, str) or not _KEY.fullmatch(value):
                raise InvalidRequest("key: 20-256 printable ASCII characters without spaces.", "invalid_field")
            change.key = value
        elif name == "disabled":
            if not isinstance(value, bool):
                raise InvalidRequest("disabled: true or false.", "invalid_field")
            change.disabled = value
        elif value is None:
            change.fields[name] = None
        else:
            change.fields[name] = _spelled(name, value)
    try:  # every field as the keys file would read it: the same errors
        apply_fields(ClientKey(), {k: v for k, v in change.fields.items() if v is not None}, WHERE)
    except KeysFileError as exc:
        raise InvalidRequest(str(exc), "invalid_field") from None
    return change


def _spelled(name: str, value: Any) -> str:
    """A JSON value as the keys file spells it: whole numbers for rpm, tpm and concurrent, a string for name and
    budget (``"$20/30d"``, ``"1000000/1d"``; ``0`` for none), a boolean for cache."""
    if name in _INTS or (name == "budget" and value == 0):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRequest(f"{name}: a whole number ≥ 0.", "invalid_field")
        return str(value)
    if name == "cache":
        if not isinstance(value, bool):
            raise InvalidRequest("cache: true or false.", "invalid_field")
        return "on" if value else "off"
    if not isinstance(value, str):
        raise InvalidRequest(f"{name}: a string.", "invalid_field")
    return value


def new_record(key: str, change: Change, now: float) -> KeyRecord:
    fields = {k: v for k, v in change.fields.items() if v is not None}
    return KeyRecord(key_id(key), digest_of(key), fields, bool(change.disabled), now, now)


def changed(record: KeyRecord, change: Change, now: float) -> KeyRecord:
    fields = {**record.fields, **change.fields}
    disabled = record.disabled if change.disabled is None else change.disabled
    return replace(record, fields={k: v for k, v in fields.items() if v is not None}, disabled=disabled, updated=now)


def _period(seconds: int) -> str:
    return f"{seconds // 86400}d" if seconds % 86400 == 0 else f"{seconds // 3600}h"


def shown(key: ClientKey, source: str, record: KeyRecord | None = None) -> dict[str, Any]:
    """What the API says of a key (never the key): its id, name and limits in force (0: none), where it is kept."""
    if key.money:
        budget: str | None = f"${money(key.money):g}/{_period(key.budget_s)}"
    else:
        budget = f"{key.budget}/{_period(key.budget_s)}" if key.budget else None
    out: dict[str, Any] = {"id": key.id, "name": key.label, "source": source, "rpm": key.rpm, "tpm": key.tpm,
                           "concurrent": key.concurrent, "budget": budget, "cache": key.cache}  # fmt: skip
    if record is not None:
        out.update(disabled=record.disabled, created=record.created, updated=record.updated)
    else:
        out["disabled"] = False
    return out
