"""Client keys and their limits, sans I/O: the keys file's lines and the settings' defaults.

A keys file holds one key per line, then optional ``field=value`` pairs separated by spaces::

    # name: the key's name in logs and metric labels (else its fingerprint)
    sk-web-7f3a  name=web  rpm=60  tpm=40000  concurrent=5  budget=1000000/1d
    sk-batch-91c2  name=batch  budget=20000000/30d
    sk-admin-0d4e  rpm=0
    sk-team-5a1b  name=team  budget=$20/30d  cache=on

``rpm``: requests per minute; ``tpm``: tokens per minute; ``concurrent``: requests in flight at once; ``budget``:
tokens per period (``N/h``, ``N/d``, ``N/Nh`` or ``N/Nd``: hours or days), or money per period (``$20/30d``, in the
unit of the config's ``[prices]``: proxy/pricing.py); ``cache``: ``on`` gives the key a response cache of its own
(proxy/cache). A field a line leaves out takes the
settings' default (``key_rpm``, ``key_tpm``, ``key_concurrent``, ``key_budget``); ``0`` means no limit, also to lift
a default for one key. Windows are fixed and aligned to the Unix epoch (UTC): a minute starts at :00, a day at
00:00 UTC, a 30-day budget every 30 days since 1970-01-01 (not calendar months), so every worker and instance
agrees on when a window resets.

Parsing is strict: an unknown field, a field given twice, a number that is not a whole number ≥ 0, a budget
without its period, a key given twice or a name given to two keys is an error naming the line (never the key).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace

from ..pricing import parse_money

FIELDS = ("name", "rpm", "tpm", "concurrent", "budget", "cache")
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")  # a metric label value and a log field: short, plain
_PERIOD = re.compile(r"(\d*)([hd])")
_HOUR_S, _DAY_S = 3600, 86400
MINUTE_S = 60


class KeysFileError(ValueError):
    """A keys file (or a ``key_*`` setting) that does not parse; the message names the line, never the key."""


@dataclass(frozen=True, slots=True)
class ClientKey:
    """One client key's identity and limits (0: none). ``id``: a digest prefix, the store's name for its counters;
    ``label``: its ``name=``, else its fingerprint, what logs and metric labels show."""

    id: str = ""
    label: str = ""
    rpm: int = 0
    tpm: int = 0
    concurrent: int = 0
    budget: int = 0  # tokens per period
    budget_s: int = _DAY_S  # the budget's period
    money: int = 0  # a budget in money instead: micro-units per period (proxy/pricing.py)
    cache: bool = False  # answers cached for this key alone (cache=on)
    usage: bool = False  # its requests, tokens and cost counted in the store (the admin API reads them)

    @property
    def limited(self) -> bool:
        return bool(self.rpm or self.tpm or self.concurrent or self.budget or self.money or self.usage)

    @property
    def counts_tokens(self) -> bool:
        """Whether responses' usage must be counted for this key (a stream must then carry it)."""
        return bool(self.tpm or self.budget or self.money or self.usage)


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def parse_budget(text: str, where: str) -> tuple[int, int, int]:
    """``"1000000/1d"`` → (tokens, 0, period seconds); ``"$20/30d"`` → (0, micro-units, period); ``"0"`` → none."""
    amount, slash, period = text.partition("/")
    if amount.startswith("$"):
        try:
            money = parse_money(amount, f"budget={text!r}")
        except ValueError as exc:
            raise KeysFileError(f"{where}: {exc}") from None
        if not slash:
            raise KeysFileError(f"{where}: budget needs a period, e.g. budget={amount}/30d (h, d, Nh or Nd)")
        return 0, money, _period(period, where)
    tokens = _whole(amount, "budget", where)
    if not slash:
        if tokens == 0:
            return 0, 0, _DAY_S
        raise KeysFileError(f"{where}: budget needs a period, e.g. budget={tokens}/1d (h, d, Nh or Nd)")
    return tokens, 0, _period(period, where)


def _period(period: str, where: str) -> int:
    match = _PERIOD.fullmatch(period)
    count = int(match.group(1) or 1) if match else 0
    if not count:
        raise KeysFileError(f"{where}: budget period {period!r}: expected h, d, Nh or Nd (N ≥ 1)")
    return count * (_HOUR_S if match.group(2) == "h" else _DAY_S)  # type: ignore[union-attr]


def _whole(text: str, field: str, where: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise KeysFileError(f"{where}: {field}={text!r}: expected a whole number ≥ 0")
    return int(text)


def defaults(rpm: int = 0, tpm: int = 0, concurrent: int = 0, budget: str = "0") -> ClientKey:
    """The limits every key gets unless its line says otherwise (the ``key_*`` settings)."""
    for name, value in (("key_rpm", rpm), ("key_tpm", tpm), ("key_concurrent", concurrent)):
        if not isinstance(value, int) or value < 0:
            raise KeysFileError(f"{name}: expected a whole number ≥ 0, got {value!r}")
    tokens, money, period = parse_budget(str(budget), "key_budget")
    return ClientKey(rpm=rpm, tpm=tpm, concurrent=concurrent, budget=tokens, budget_s=period, money=money)


def with_defaults(key: str, base: ClientKey) -> ClientKey:
    """A key given without fields (``api_keys``): the defaults, under its own id and fingerprint."""
    digest = key_id(key)
    return replace(base, id=digest, label=digest[:8])


def parse_line(line: str, base: ClientKey, where: str) -> tuple[str, ClientKey]:
    """One keys-file line (already stripped, not a comment) → the key and its limits."""
    key, *pairs = line.split()
    if "=" in key and key.partition("=")[0] in FIELDS:
        raise KeysFileError(f"{where}: a line starts with its key, then the fields")
    fields: dict[str, str] = {}
    for pair in pairs:
        field, eq, value = pair.partition("=")
        if not eq or field not in FIELDS:
            raise KeysFileError(f"{where}: unknown field {field!r} (expected {', '.join(FIELDS)})")
        if field in fields:
            raise KeysFileError(f"{where}: {field} given twice")
        fields[field] = value
    return key, apply_fields(with_defaults(key, base), fields, where)


def apply_fields(limits: ClientKey, fields: dict[str, str], where: str) -> ClientKey:
    """``limits`` with ``fields`` (``FIELDS``' names, the keys file's spelling of each value) applied; a
    KeysFileError naming ``where`` and the field for a value that does not parse (the admin API's bodies too)."""
    changes: dict[str, object] = {}
    for field, value in fields.items():
        if field == "name":
            if not _NAME.fullmatch(value):
                raise KeysFileError(f"{where}: name={value!r}: 1-64 letters, digits, '.', '_' or '-'")
            changes["label"] = value
        elif field == "budget":
            changes["budget"], changes["money"], changes["budget_s"] = parse_budget(value, where)
        elif field == "cache":
            if value not in ("on", "off"):
                raise KeysFileError(f"{where}: cache={value!r}: expected on or off")
            changes["cache"] = value == "on"
        else:
            changes[field] = _whole(value, field, where)
    return replace(limits, **changes)  # type: ignore[arg-type]


def parse_keys_file(text: str, base: ClientKey = ClientKey(), source: str = "keys file") -> list[tuple[str, ClientKey]]:
    """Every key of a keys file with its limits; blank lines and ``#`` comments skipped."""
    out: list[tuple[str, ClientKey]] = []
    keys: set[str] = set()
    names: set[str] = set()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source} line {number}"
        key, limits = parse_line(line, base, where)
        if key in keys:
            raise KeysFileError(f"{where}: this key is already on an earlier line")
        if limits.label in names:
            raise KeysFileError(f"{where}: name {limits.label!r} is already another key's")
        keys.add(key)
        names.add(limits.label)
        out.append((key, limits))
    return out
