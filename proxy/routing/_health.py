"""Deployment health in the store: circuit breakers and 429 rests (:mod:`proxy.routing._breaker` decides, this
module reads and writes ``proxy.limits.Store``, so that with a shared store every worker and instance sees the same
states). Nothing here is kept in Python attributes but the settings and the metrics' hooks."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from ..limits import Store
from ..upstreamconfig import UpstreamConfig
from ._breaker import HALF_OPEN_S, Circuit, Outcome, Seen, Step, opens, step, store_names
from ._keypool import keys_wait

log = logging.getLogger("moonrelay")


class Health:
    """The breakers and rests of the configured upstreams (a half-open deployment's probe is a slot in the store,
    which a worker that died with it gives back within ``--state-lease-s``)."""

    def __init__(self, store: Store, configs: Sequence[UpstreamConfig],
                 keys: Mapping[str, Sequence[str]] | None = None,
                 changed: Callable[[str, Circuit, bool], None] | None = None) -> None:  # fmt: skip
        self.store = store
        self.keys = dict(keys or {})  # a rotating key pool's rests (proxy.routing._keypool), by upstream
        self.configs = {c.name: c for c in configs}
        # (deployment, circuit, opened): a circuit this worker saw change; the metrics' gauge and counter
        self.changed = changed

    def watch(self, changed: Callable[[str, Circuit, bool], None]) -> None:
        """Tell ``changed`` of every circuit change from now on (set up after these upstreams were made)."""
        self.changed = changed

    async def look(self, names: Sequence[str]) -> list[Seen]:
        """Each deployment's health now (its keys' rests too), in one store call."""
        wanted: list[str] = []
        for name in names:
            wanted += store_names(name)
            wanted += self.keys.get(name, ())
        rests = await self.store.resting(wanted)
        seen, i = [], 0
        for name in names:
            n = len(self.keys.get(name, ()))
            seen.append(Seen.of(rests[i : i + 4], keys_wait(rests[i + 4 : i + 4 + n])))
            i += 4 + n
        return seen

    async def probe(self, name: str) -> str | None:
        """The half-open deployment's one probe (a lease token), or None when another request holds it."""
        return await self.store.acquire(f"probe:{name}", 1)

    async def end_probe(self, name: str, token: str) -> None:
        await self.store.release(f"probe:{name}", token)

    async def rest(self, name: str, seconds: float) -> None:
        """A 429 on a deployment with one key: it takes no request for ``seconds``."""
        if seconds > 0:
            await self.store.rest(f"rest:{name}", seconds)

    async def settle(self, name: str, result: Outcome, seen: Seen, probe: str | None) -> None:
        """Apply an answer's ``result`` to ``name``'s breaker (``seen``: its health before the request; ``probe``:
        the probe's token if this request was the probe, given back here)."""
        config = self.configs[name]
        store = self.store
        what = step(result, seen, probing=probe is not None)
        if probe is not None:
            await self.end_probe(name, probe)
        if not config.breaker_failures or what is Step.NOTHING:
            return
        window = config.breaker_window_s
        if what is Step.COUNT:
            total = await store.add(f"fail:{name}", window, 1)
            await store.rest(f"failing:{name}", window)
            if opens(total, config.breaker_failures):
                await self._open(name, f"{total} failures in a row")
        elif what is Step.OPEN:
            await self._open(name, "its probe failed")
        else:  # RESET or CLOSE
            total, _ = await store.used(f"fail:{name}", window)
            if total:
                await store.add(f"fail:{name}", window, -total)
            await store.clear(f"failing:{name}")
            if what is Step.CLOSE:
                await store.clear(f"tripped:{name}")
                log.warning("upstream %s: its probe succeeded, circuit closed", name)
                if self.changed is not None:
                    self.changed(name, Circuit.CLOSED, False)

    async def _open(self, name: str, why: str) -> None:
        cooldown = self.configs[name].breaker_cooldown_s
        await self.store.rest(f"open:{name}", cooldown)
        await self.store.rest(f"tripped:{name}", cooldown + HALF_OPEN_S)
        log.warning("upstream %s: circuit open for %.1f s (%s)", name, cooldown, why)
        if self.changed is not None:
            self.changed(name, Circuit.OPEN, True)

    async def report(self) -> dict[str, Seen]:
        """Every upstream's health now (for /metrics and /readyz)."""
        names = list(self.configs)
        return dict(zip(names, await self.look(names), strict=True))
