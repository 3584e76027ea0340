"""The worker's in-flight chat requests: admission (``--max-streams`` and each upstream's
``max_concurrent``), draining, and who to interrupt.

A request is admitted in the view, after it validated, and released when its ASGI call returns
(:class:`proxy.observability.Observer` counts every call in ``calls`` and calls :meth:`Streams.leave`; a client
key's admission is settled there too):
that is when the last byte went out *or* the client left (quart-trio cancels the call on
disconnect), whatever happened in between. Releasing there instead of in the body's ``aclose``
also covers a response that was never iterated, and costs nothing per chunk. Its concurrency slots (the
upstream's, the client key's) go back earlier, just before the response's last bytes (:meth:`Streams.give_back`).
"""

from __future__ import annotations

from typing import Any

import trio

from ..limits import StoreBudget
from ..state import RequestState
from ..transport import SHUTDOWN


class Streams:
    def __init__(self, max_streams: int = 0) -> None:
        self.limit = max_streams
        self.active = 0  # admitted chat requests
        self.calls = 0  # every HTTP request in flight (what a drain waits for)
        self.bodies: set[Any] = set()  # streaming bodies (SSEBody/NDJSONBody) being sent
        self.waiting: set[trio.CancelScope] = set()  # requests still waiting for the upstream's answer
        self.draining = False
        self._idle: trio.Event | None = None

    def admit(self, state: RequestState) -> bool:
        """Take a slot for this call; False when the worker is full."""
        if self.limit and self.active >= self.limit:
            return False
        self.active += 1
        state.admitted = True
        return True

    async def hold(self, state: RequestState, upstream: Any) -> bool:
        """Take one of ``upstream``'s slots (``Upstream.take``) for this call; False when it is full."""
        lease = await upstream.take()
        if lease is None:
            return False
        state.upstream_slot = upstream
        state.upstream_lease = lease
        return True

    def track_body(self, state: RequestState, body: Any) -> None:
        self.bodies.add(body)
        state.body = body

    async def release(self, state: RequestState) -> None:
        """Give back what the call holds. Runs as the call ends, cancelled or not (a client that left). A client
        key's admission is settled: its slot back (if :meth:`give_back` did not already), its charge
        (proxy/limits/_charge.py) in place of its reserve (shielded)."""
        admission = state.client
        if admission is not None:
            state.client = None
            charge = state.charge
            await admission.settle(charge.tokens() if charge is not None else None)
        body = state.body
        if body is not None:
            state.body = None
            self.bodies.discard(body)
        if state.admitted:
            state.admitted = False
            self.active -= 1
        await self.give_back(state)

    async def give_back(self, state: RequestState, budget: StoreBudget | None = None) -> None:
        """Give back the call's concurrency slots, its client key's and its upstream's, and wait until the store has
        them: before the response's last bytes go out (proxy.observability; a client that waits for each answer
        then never finds its own slot taken, whichever worker or instance serves it next), or as the call ends.
        ``budget``: the call's store budget, whose end starts here. Shielded, bounded by the store's deadline."""
        if budget is not None:
            budget.ending()
        admission = state.client
        if admission is not None:
            await admission.free_slot()
        upstream = state.upstream_slot
        if upstream is not None:
            lease = state.upstream_lease
            state.upstream_slot = state.upstream_lease = None
            with trio.CancelScope(shield=True):
                await upstream.give_back(lease)

    async def wait_idle(self) -> None:
        """Until no HTTP request is in flight."""
        while self.calls:
            self._idle = trio.Event()
            await self._idle.wait()
        self._idle = None

    def stop_all(self) -> None:
        """End what is still in flight: waiting requests answer 503, streams send a final error event."""
        for scope in list(self.waiting):
            scope.cancel()
        for body in list(self.bodies):
            body.interrupt(SHUTDOWN)

    async def leave(self, state: RequestState | None) -> None:
        """The end of an HTTP call (counted in ``calls`` when it began), however it ended: release its slots."""
        try:
            if state is not None:
                await self.release(state)
        finally:
            self.calls -= 1
            if self.calls == 0 and self._idle is not None:
                self._idle.set()
