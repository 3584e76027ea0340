"""How long one request may wait on the store, in all: ``--state-timeout-s`` for every call its admission makes
(its key's concurrency, tpm, budget and rpm checks, the upstream's slot, the deployments' health), however many,
and as much again for its end (its slots given back before its last bytes, its tokens counted), so a slow Redis
costs a request at most twice the setting, not once per call.

The request's :class:`StoreBudget` rides in a context variable that the edge sets per HTTP call
(proxy/observability); the Redis store reads it at each call and deducts the time the call took. A call made
outside any request (lease renewals, the probe while Redis is down) has a deadline of its own.
"""

from __future__ import annotations

from contextvars import ContextVar, Token

_CURRENT: ContextVar[StoreBudget | None] = ContextVar("moonrelay_store_budget", default=None)


class StoreBudget:
    __slots__ = ("left_s", "_end_s")

    def __init__(self, seconds: float) -> None:
        self.left_s = seconds  # what the calls of this phase may still wait
        self._end_s: float | None = seconds  # the end's own budget, until the end begins

    def enter(self) -> Token[StoreBudget | None]:
        """This request's budget for the store calls made in this task (and the tasks it starts) from now on."""
        return _CURRENT.set(self)

    @staticmethod
    def leave(token: Token[StoreBudget | None]) -> None:
        _CURRENT.reset(token)

    def ending(self) -> None:
        """The request's end begins (once): its calls get a fresh budget, whatever the admission spent."""
        if self._end_s is not None:
            self.left_s, self._end_s = self._end_s, None


def current_budget() -> StoreBudget | None:
    return _CURRENT.get()
