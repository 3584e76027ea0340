"""Where the gateway's limits and upstream health are counted: one small interface, two homes.

- :class:`LocalStore`: this worker's memory, the default. Nothing is shared: each worker and each instance counts
  alone, as the relay always did, and no Redis is needed.
- ``RedisStore`` (``--state redis://HOST:PORT/DB``): one Redis for every worker and every instance; each operation is
  one atomic script, and slots are leases the store renews while they are held, so the slots of a worker that
  crashed come back by themselves (after ``--state-lease-s``: the store, not its callers, sets every lease's TTL).

Three primitives cover every limit the relay keeps:

- **slots** (concurrency caps: an upstream account's 1,000 concurrent requests, a client key's concurrent streams):
  ``acquire`` / ``release`` / ``renew`` / ``held`` — a counting semaphore whose holders are leases;
- **windows** (requests or tokens per minute, a token budget per period): ``hit`` / ``add`` / ``used`` — fixed windows
  aligned to the Unix epoch, so every instance agrees on when a window starts and ends;
- **rests** (a 429'd key or deployment, an open circuit): ``rest`` / ``resting`` / ``clear`` — "not before" marks.

A circuit breaker is composed of them. Names are the caller's plain strings (``"slots:upstream:moonshot"``); a store
may prefix them. Seconds everywhere.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Window:
    """One window's verdict: whether the hit fit, the window's total (after the hit when it fit), when it ends."""

    allowed: bool
    used: int
    limit: int
    reset_s: float  # seconds until this window ends and a new one starts at 0


class StoreUnavailable(Exception):
    """The store did not answer in time or refused the connection (what a failover store reacts to)."""


class Store(Protocol):
    shared: bool  # whether other workers and instances see the same counts

    async def acquire(self, name: str, limit: int) -> str | None:
        """A slot under ``name`` when fewer than ``limit`` are held; its lease token, or None when all are taken.
        The store keeps the lease while its holder lives (a shared store renews it; one that dies with its holder
        needs not)."""
        ...

    async def release(self, name: str, token: str) -> None:
        """Give a slot back, free for others once this returns; a lapsed or unknown token is ignored."""
        ...

    async def held(self, name: str) -> int:
        """Slots held under ``name`` now (lapsed leases not counted)."""
        ...

    async def hit(self, name: str, window_s: float, limit: int, cost: int = 1) -> Window:
        """Add ``cost`` to the current window of ``name`` if the total stays within ``limit``; refused otherwise
        (nothing added)."""
        ...

    async def add(self, name: str, window_s: float, amount: int) -> int:
        """Add ``amount`` to the current window whatever the limit (tokens counted after a response); the new total."""
        ...

    async def used(self, name: str, window_s: float) -> tuple[int, float]:
        """The current window's total and the seconds until it ends."""
        ...

    async def rest(self, name: str, seconds: float) -> None:
        """Mark ``name`` resting for ``seconds`` from now (a longer rest already set is kept)."""
        ...

    async def resting(self, names: Sequence[str]) -> list[float]:
        """For each name, the seconds its rest still lasts (0.0: not resting)."""
        ...

    async def clear(self, name: str) -> None:
        """End ``name``'s rest now."""
        ...


def window_bounds(now: float, window_s: float) -> tuple[int, float]:
    """The index of the epoch-aligned window that holds ``now`` and the seconds until it ends."""
    index = math.floor(now / window_s)
    return index, (index + 1) * window_s - now


class LocalStore:
    """The store in this worker's memory (the default). ``clock``: wall-clock seconds, for the epoch-aligned
    windows (tests pass a fake one). Leases never lapse here: they die with the process that holds them."""

    shared = False

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._slots: dict[str, set[str]] = {}
        self._windows: dict[str, tuple[int, int]] = {}  # name → (window index, total)
        self._rests: dict[str, float] = {}  # name → rests until (clock seconds)
        self._tokens = itertools.count(1)

    async def acquire(self, name: str, limit: int) -> str | None:
        held = self._slots.setdefault(name, set())
        if len(held) >= limit:
            return None
        token = f"l{next(self._tokens)}"
        held.add(token)
        return token

    async def release(self, name: str, token: str) -> None:
        held = self._slots.get(name)
        if held is not None:
            held.discard(token)
            if not held:
                del self._slots[name]

    async def held(self, name: str) -> int:
        return len(self._slots.get(name, ()))

    def _current(self, name: str, window_s: float) -> tuple[int, int, float]:
        index, reset_s = window_bounds(self.clock(), window_s)
        seen = self._windows.get(name)
        total = seen[1] if seen is not None and seen[0] == index else 0
        return index, total, reset_s

    async def hit(self, name: str, window_s: float, limit: int, cost: int = 1) -> Window:
        index, total, reset_s = self._current(name, window_s)
        if total + cost > limit:
            return Window(False, total, limit, reset_s)
        self._windows[name] = (index, total + cost)
        return Window(True, total + cost, limit, reset_s)

    async def add(self, name: str, window_s: float, amount: int) -> int:
        index, total, _ = self._current(name, window_s)
        self._windows[name] = (index, total + amount)
        return total + amount

    async def used(self, name: str, window_s: float) -> tuple[int, float]:
        _, total, reset_s = self._current(name, window_s)
        return total, reset_s

    async def rest(self, name: str, seconds: float) -> None:
        until = self.clock() + seconds
        if until > self._rests.get(name, -math.inf):
            self._rests[name] = until

    async def resting(self, names: Sequence[str]) -> list[float]:
        now = self.clock()
        rests = self._rests
        return [max(0.0, rests.get(name, now) - now) for name in names]

    async def clear(self, name: str) -> None:
        self._rests.pop(name, None)
