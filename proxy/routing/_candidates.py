"""One chat request's upstreams, in the order it may try them, and what their answers do to their health.

    the model's deployments   (one chosen by weight among the usable ones, then the others, heavier first)
    then their ``fallbacks``  (in config order, each once)

A candidate is skipped when its circuit is open, it rests after a 429 (the deployment, or every key of its pool),
it is half-open and another request holds its probe, or its ``max_concurrent`` is full. Health is read once per
request, in one store call, and only when the request has somewhere else to go: a lone upstream neither consults
nor feeds a breaker (there is no other to send to: the relay behaves as it did before, its retries decide; like a
pool of one key never rests).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import trio

from ..errors import Refused
from ..protocol import Limited
from ..state import RequestState
from ._attempts import Rests
from ._balance import order as balance_order
from ._breaker import Circuit, Outcome, Seen
from ._breaker import outcome as breaker_outcome
from ._keypool import rest_seconds
from ._router import the_model
from ._upstream import Upstream, Upstreams

log = logging.getLogger("moonrelay")

RELEASE_TIMEOUT_S = 2.0  # giving a probe back after a cancelled request must not hang the cancellation


class Candidates:
    """The upstreams one request may try (see the module docstring); :meth:`next` moves the request's
    ``max_concurrent`` slot to the next usable one; :meth:`settle` applies its answer to its breaker; ``rests``:
    the keys and deployments the request may still rest (proxy.routing.Rests)."""

    __slots__ = ("upstreams", "order", "seen", "current", "probe", "rests", "_i", "_wait", "_open", "_full")

    def __init__(self, upstreams: Upstreams | None, order: Sequence[Upstream], seen: dict[str, Seen] | None) -> None:
        self.upstreams = upstreams
        self.order = list(order)
        self.seen = seen  # None: a lone upstream, health not consulted
        self.current: Upstream | None = None
        self.probe: str | None = None  # the probe's token while the current candidate is being probed
        self.rests = Rests()
        self._i = 0
        self._wait = math.inf  # the shortest wait among the skipped ones
        self._open = False  # some candidate was skipped for its circuit (else: rests)
        self._full: Upstream | None = None  # the first skipped at its max_concurrent

    @classmethod
    def lone(cls, upstream: Upstream) -> Candidates:
        """One upstream already chosen (its slot, if any, taken by the caller)."""
        candidates = cls(None, [upstream], None)
        candidates.current = upstream
        candidates._i = 1
        return candidates

    @classmethod
    async def plan(cls, upstreams: Upstreams, deployments: Sequence[Upstream]) -> Candidates:
        names = {d.name for d in deployments}
        fallbacks: list[Upstream] = []
        for d in deployments:
            for name in d.config.fallbacks:
                if name not in names:
                    names.add(name)
                    fallbacks.append(upstreams.by_name[name])
        everyone = [*deployments, *fallbacks]
        if len(everyone) == 1:
            return cls(upstreams, everyone, None)
        seen = dict(zip(names_of(everyone), await upstreams.health.look(names_of(everyone)), strict=True))
        if len(deployments) > 1:
            weights = [d.config.weight for d in deployments]
            balancer = upstreams.balancer(deployments)
            first = balancer.pick([seen[d.name].usable for d in deployments])
            deployments = [deployments[i] for i in balance_order(weights, first if first is not None else 0)]
        return cls(upstreams, [*deployments, *fallbacks], seen)

    @property
    def first(self) -> Upstream:
        return self.order[0]

    async def next(self, state: RequestState) -> Upstream | None:
        """The next candidate that may take the request now, its slot taken and the request's previous one given
        back (``state`` names it for the log and metrics); None when none is left."""
        health = self.upstreams.health if self.upstreams is not None else None
        while self._i < len(self.order):
            upstream = self.order[self._i]
            self._i += 1
            probe = None
            if self.seen is not None and health is not None:
                seen = self.seen[upstream.name]
                if not seen.usable:
                    self._skipped(seen.wait_s, seen.circuit is Circuit.OPEN)
                    continue
                if seen.circuit is Circuit.HALF_OPEN:
                    probe = await health.probe(upstream.name)
                    if probe is None:
                        self._skipped(1.0, True)
                        continue
            lease = await upstream.take()
            if lease is None:
                if probe is not None:
                    await health.end_probe(upstream.name, probe)  # type: ignore[union-attr]
                if self._full is None:
                    self._full = upstream
                log.warning("upstream %s skipped, at its max_concurrent", upstream.name)
                continue
            held, held_lease = state.upstream_slot, state.upstream_lease
            state.upstream_slot, state.upstream_lease = upstream, lease
            if held is not None:
                with trio.CancelScope(shield=True):  # taken and given in one step, cancelled or not
                    await held.give_back(held_lease)
            state.upstream = upstream.name
            self.current, self.probe = upstream, probe
            if probe is not None:
                log.warning("upstream %s: half-open, this request is its probe", upstream.name)
            return upstream
        return None

    def _skipped(self, wait_s: float, circuit_open: bool) -> None:
        self._wait = min(self._wait, wait_s)
        self._open = self._open or circuit_open

    def refusal(self, model: str) -> Refused:
        """Why the request for ``model`` could go nowhere (:meth:`next` found no candidate at its first call)."""
        if self._full is not None and self._wait == math.inf:
            return at_its_limit(self._full, model)
        wait = max(1, math.ceil(self._wait)) if self._wait != math.inf else 1
        why = "unavailable (circuit open)" if self._open else "rate limited"
        log.info("model %r: every upstream (%s) is %s", model, ", ".join(names_of(self.order)), why)
        code, status = ("upstream_circuit_open", 503) if self._open else ("upstream_rate_limited", 429)
        return Refused(f"Every upstream for {the_model(model)} is {why}; retry in {wait} s.", code, status,
                       retry_after=wait)  # fmt: skip

    async def settle(self, status: int | None, retry_after: str | None = None, *, neutral: bool = False,
                     limited: Limited | None = None) -> None:  # fmt: skip
        """The current candidate answered ``status`` (None: a transport error before the first byte; ``neutral``:
        no verdict, e.g. every key rested): its breaker counts it; a 429 about the account (``limited``) rests a
        one-key deployment, if the request may still rest one."""
        upstream, probe = self.current, self.probe
        self.probe = None
        if self.seen is None or upstream is None or self.upstreams is None:
            return
        health = self.upstreams.health
        result = Outcome.NEUTRAL if neutral else breaker_outcome(status)
        await health.settle(upstream.name, result, self.seen[upstream.name], probe)
        if limited is Limited.ACCOUNT and not upstream.keys.rotating and self.rests.take():
            seconds = rest_seconds(retry_after)
            await health.rest(upstream.name, seconds)
            log.info("upstream %s answered 429; it rests %.1f s", upstream.name, seconds)

    async def abandon(self) -> None:
        """The request ended without a verdict (cancelled): give its probe back."""
        upstream, probe = self.current, self.probe
        self.probe = None
        if probe is not None and upstream is not None and self.upstreams is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(RELEASE_TIMEOUT_S):
                await self.upstreams.health.end_probe(upstream.name, probe)


def names_of(upstreams: Sequence[Upstream]) -> list[str]:
    return [u.name for u in upstreams]


def at_its_limit(upstream: Upstream, model: str | None) -> Refused:
    """The 429 for a request whose upstream has no ``max_concurrent`` slot left: the client hears of its model, the
    log of the upstream and its cap."""
    where = "across the relays sharing --state" if upstream.store.shared else "on this relay worker"
    log.info("upstream %s is at its max_concurrent of %d %s", upstream.name, upstream.config.max_concurrent, where)
    return Refused(f"The upstream for {the_model(model)} is at its limit of concurrent requests {where}; "
                   "retry shortly.", "upstream_concurrency_limit")  # fmt: skip
