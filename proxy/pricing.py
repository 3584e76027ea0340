"""What a request costs in money, sans I/O: the price table of the config file, per model, and the sum.

    [prices."moonshot-v1-8k"]       # price per million tokens, in the table's unit (USD unless you say otherwise)
    input = 0.20
    output = 2.00
    cached_input = 0.05             # optional: prompt tokens read from the provider's prompt cache; default input

    [prices."kimi-*"]               # a glob, as [[upstreams]] models are matched
    input = 0.60
    output = 2.50

A model is priced by its exact name first, then by the first pattern that matches in the file's order, then by
``"*"`` if the table has it; a model no entry prices costs nothing (and a money budget does not count it: the
relay logs the model once). Costs are whole *micro-units* (millionths of the unit): ``tokens × price per million``
is that number exactly, so windows and counters stay integers and ``$20`` is ``20_000_000``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

log = logging.getLogger("moonrelay")

MICROS = 1_000_000  # micro-units per unit of money
_FIELDS = ("input", "output", "cached_input")
_GLOB = frozenset("*?[")
CACHE_LIMIT = 10_000  # model names remembered (they come from clients)


class PriceError(ValueError):
    """A ``[prices]`` entry the relay refuses to start (or reload) with; the message names the model."""


@dataclass(frozen=True, slots=True)
class Price:
    """A model's prices per million tokens."""

    input: float
    output: float
    cached_input: float

    def cost(self, prompt: int, completion: int, cached: int = 0) -> int:
        """Micro-units for ``prompt`` input tokens (``cached`` of them read from a prompt cache) and ``completion``
        output tokens."""
        cached = min(max(cached, 0), prompt)
        return round((prompt - cached) * self.input + cached * self.cached_input + completion * self.output)


class PriceTable:
    """Model name → :class:`Price` (the module docstring's rules); empty when the config has no ``[prices]``."""

    __slots__ = ("_exact", "_patterns", "_cache", "_unpriced")

    def __init__(self, entries: Mapping[str, Price] | None = None) -> None:
        entries = entries or {}
        self._exact = {m: p for m, p in entries.items() if not _GLOB.intersection(m)}
        self._patterns = [(m, p) for m, p in entries.items() if _GLOB.intersection(m) and m != "*"]
        if "*" in entries:
            self._patterns.append(("*", entries["*"]))
        self._cache: dict[str, Price | None] = {}
        self._unpriced: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self._exact or self._patterns)

    def of(self, model: str | None) -> Price | None:
        """The price of ``model``, or None when no entry prices it (logged once per model)."""
        if model is None or not self:
            return None
        try:
            return self._cache[model]
        except KeyError:
            pass
        found = self._exact.get(model)
        if found is None:
            found = next((price for pattern, price in self._patterns if fnmatchcase(model, pattern)), None)
        if len(self._cache) < CACHE_LIMIT:
            self._cache[model] = found
        if found is None and model not in self._unpriced and len(self._unpriced) < 100:
            self._unpriced.add(model)
            log.warning("prices: no entry prices model %r: its requests cost nothing", model[:100])
        return found


def parse_prices(table: Any) -> PriceTable:
    """The config file's ``[prices]`` table as a :class:`PriceTable`; a PriceError names what is wrong."""
    if table is None:
        return PriceTable()
    if not isinstance(table, Mapping):
        raise PriceError("prices: expected a table of models, e.g. [prices.\"moonshot-v1-8k\"]")
    out: dict[str, Price] = {}
    for model, entry in table.items():
        where = f"prices.{model!r}"
        if not isinstance(model, str) or not model.strip() or any(ch.isspace() for ch in model):
            raise PriceError(f"{where}: a model name or pattern without spaces")
        if not isinstance(entry, Mapping):
            raise PriceError(f"{where}: expected a table with input, output (and cached_input) per million tokens")
        unknown = sorted(set(entry) - set(_FIELDS))
        if unknown:
            raise PriceError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(_FIELDS)}")
        values = {}
        for name in _FIELDS:
            value = entry.get(name)
            if value is None:
                if name == "cached_input":
                    continue
                raise PriceError(f"{where}: '{name}' is required (price per million tokens)")
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise PriceError(f"{where}: '{name}' must be a number ≥ 0, got {value!r}")
            values[name] = float(value)
        values.setdefault("cached_input", values["input"])
        out[model] = Price(**values)
    return PriceTable(out)


def price_table(settings: Any) -> PriceTable:
    """The settings' price table (``settings.prices``: the config file's ``[prices]``)."""
    return parse_prices(getattr(settings, "prices", None) or None)


def money(micros: int) -> float:
    """Micro-units as the unit, for a log line or an API answer (6 decimals)."""
    return round(micros / MICROS, 6)


def parse_money(text: str, where: str) -> int:
    """``"$20"``, ``"20"`` or ``"0.5"`` (the table's unit) → micro-units; a ValueError naming ``where``."""
    amount = text.removeprefix("$")
    try:
        value = float(amount)
    except ValueError:
        raise ValueError(f"{where}: {text!r} is not an amount of money, e.g. $20 or $0.50") from None
    if not math.isfinite(value) or value < 0 or not amount or amount.strip() != amount:
        raise ValueError(f"{where}: {text!r} is not an amount of money ≥ 0")
    return round(value * MICROS)
