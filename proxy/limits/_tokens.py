"""A request's tokens in its client key's ``tpm`` and ``budget`` windows: its reserve, held from admission, replaced
by its charge when the call ends (what each is: proxy/limits/_charge.py).

The reserve goes in with one ``add`` per window, whose returned total says whether the window was already at its
limit before it: then it is taken back out and the request refused. The check and the hold are one atomic step in
the store (a Redis script, or this worker's memory), so requests admitted at the same time each see the others'
reserves, on every worker and instance sharing the store. Hence the bound the docs state: a window ends over its
limit by at most the reserve of the last request it admitted, plus whatever requests were charged beyond their
reserves (a stream without ``max_tokens`` that ran past ``--key-reserve-tokens``).

Which window a reserve went in: admission read each window, and when it ends, a moment before. A reserve, a
take-back or a settlement closer than ``EDGE_S`` to that end is not sure of its window, so it never takes tokens
back there: the reserve then stays in the window that is ending (counted over, never under), and the charge goes
whole to the window current at the end of the call.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio

from ._store import Store

EDGE_S = 1.0  # more than a store call takes, and than a shared store's clock may differ from this worker's by


@dataclass(frozen=True, slots=True)
class TokenWindow:
    """One of a key's token windows: its limit's name ("tpm" or "budget"), store name, length, limit, and when the
    window admission read ends (``trio.current_time()`` seconds; None: not read)."""

    limit: str
    name: str
    window_s: float
    cap: int
    ends: float | None = None

    def sure(self, now: float) -> bool:
        """Whether a store call made now lands in the window admission read."""
        return self.ends is not None and now < self.ends - EDGE_S


class TokenHold:
    """The tokens one admitted request holds in its key's windows."""

    __slots__ = ("store", "windows", "_held")

    def __init__(self, store: Store, windows: list[TokenWindow]) -> None:
        self.store = store
        self.windows = windows
        self._held: dict[str, int] = {}  # limit → the reserve added to the window admission read

    async def reserve(self, amount: int) -> tuple[str, int, float] | None:
        """Add ``amount`` to every window; None, or ``(limit, used, seconds to its reset)`` of the first window that
        was already at its limit (every add taken back where that is sure)."""
        if amount <= 0:
            return None
        for window in self.windows:
            now = trio.current_time()
            total = await self.store.add(window.name, window.window_s, amount)
            if window.sure(now):
                self._held[window.limit] = amount
            if total - amount >= window.cap:
                await self._take_back()
                reset_s = window.ends - now if window.ends is not None else window.window_s
                return window.limit, total - amount, max(0.0, reset_s)
        return None

    async def _take_back(self) -> None:
        held, self._held = self._held, {}
        for window in self.windows:
            amount = held.get(window.limit)
            if amount and window.sure(trio.current_time()):
                await self._add(window, -amount)

    async def settle(self, tokens: int | None) -> None:
        """The call ended: ``tokens`` (its charge) replace the reserve in each window (once)."""
        held, self._held = self._held, {}
        for window in self.windows:
            amount = held.get(window.limit, 0)
            add = (tokens or 0) - amount if amount and window.sure(trio.current_time()) else tokens or 0
            if add:
                await self._add(window, add)

    async def _add(self, window: TokenWindow, amount: int) -> None:
        total = await self.store.add(window.name, window.window_s, amount)
        if total < 0:  # the window lost its count meanwhile (a Redis restarted): never below zero
            await self.store.add(window.name, window.window_s, -total)
