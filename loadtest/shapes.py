"""Load shapes: the closed loop (``--concurrency``) and the open loop (``--rate``), for one process's share.

:class:`LoadConfig` is what to send and how (pickled to worker processes as it is); :class:`WorkerLoad`
runs one process's share of one phase in one nursery that owns every session: slots ``worker,
worker + W, ...`` of the closed loop, or rate ``R / W`` of the open loop. Running the phases, in this
process or in several, is :mod:`loadtest.runner`'s and :mod:`loadtest.workers`' business.

With ``--shard i/N`` (:mod:`loadtest.shards`) the run's load is split into ``N * W`` lanes: process ``w`` of
shard ``i`` is lane ``i * W + w`` of ``N * W`` (every shard runs the same ``--workers W``), and a lane is what
``worker`` means below. Request ``k`` of a lane is the run's request ``k * lanes + lane``
(:mod:`loadtest.workload`), so the run sends requests ``0, 1, 2, ...`` however it is split.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import trio

from loadtest.apirequest import MESSAGES_MAX_TOKENS, api_request
from loadtest.client import Endpoint, now_ns
from loadtest.looplag import LoopLag
from loadtest.progress import LiveStats
from loadtest.record import SessionRecord, SpilledRecords
from loadtest.session import ConnectionSlot, RequestSpec, RetryCounter, run_session
from loadtest.workload import Workload

__all__ = ["LoadConfig", "WorkerLoad"]


@dataclass
class LoadConfig:
    """What to send and how: everything a worker process needs (pickled to it)."""

    url: str
    concurrency: int = 1
    requests: int | None = None
    duration_s: float | None = None
    rate: float | None = None
    max_concurrency: int | None = None
    ramp_up_s: float = 0.0
    warmup_s: float = 0.0
    keepalive: bool = True
    timeout_s: float = 120.0
    stream: bool = True
    ndjson: bool = False
    model: str = "moonshot-v1-8k"
    prompts: list[list[dict[str, Any]]] = field(default_factory=lambda: [[{"role": "user", "content": "Hello"}]])
    max_tokens: int | None = None
    seed: int = 0
    api_key: str | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)
    baseline_url: str | None = None  # --baseline: the same load against this URL first, as target "direct"
    workload: Workload | None = None  # what each session asks; None: the prompts above, max_tokens, seed
    shard: int = 0  # --shard i/N: this process runs lanes of shard i of N (loadtest.shards)
    shards: int = 1
    api: str = "chat"  # the protocol: chat, messages or responses (loadtest.apirequest, loadtest.protocols)
    tool_call: bool = False  # every request offers a tool and demands a call of it
    messages_max_tokens: int = MESSAGES_MAX_TOKENS  # Messages' max_tokens where the workload sets no length

    def the_workload(self) -> Workload:
        return self.workload or Workload.of_messages(self.prompts, max_tokens=self.max_tokens, seed=self.seed)

    def describe(self) -> dict[str, Any]:
        """The config as recorded in result.json (the dataset summarised, not copied)."""
        d = asdict(replace(self, prompts=[], workload=None))
        d["prompts"] = len(self.workload.prompts or []) if self.workload else len(self.prompts)
        d["workload"] = self.the_workload().describe()
        d["api_key"] = "set" if self.api_key else None
        d["mode"] = "open" if self.rate else "closed"
        return d

    def share(self, total: int | None, worker: int, workers: int) -> int | None:
        if total is None:
            return None
        return total // workers + (1 if worker < total % workers else 0)


class WorkerLoad:
    """One process's share of one phase: slots ``worker, worker + W, ...`` of the closed loop, or
    rate ``R / W`` of the open loop (a sum of independent Poisson processes is Poisson with rate R)."""

    def __init__(
        self, cfg: LoadConfig, *, target: str, url: str, worker: int = 0, workers: int = 1,
        live: LiveStats | None = None,
    ) -> None:
        self.cfg = cfg
        self.target = target
        self.endpoint = Endpoint.from_url(url)
        self.worker = cfg.shard * workers + worker  # the lane (see the module docstring)
        self.workers = cfg.shards * workers
        self.live = live if live is not None else LiveStats()
        self.ended = SpilledRecords()  # the sessions that ended (on disk as they accumulate)
        self.lag = LoopLag()  # this process's event-loop lateness while the load ran
        self.retries = RetryCounter()
        self.interrupted = False
        self._scope: trio.CancelScope | None = None
        self._specs: dict[int, RequestSpec] = {}
        self._workload = cfg.the_workload()
        self._sent = 0  # requests this lane has started
        self._tickets = cfg.share(cfg.requests, self.worker, self.workers)

    @property
    def records(self) -> list[SessionRecord]:
        """Every session's record (read back from disk: once the run is over)."""
        return self.ended.read()

    def interrupt(self) -> None:
        self.interrupted = True
        if self._scope is not None:
            self._scope.cancel()

    # -- request choice ----------------------------------------------------------------------------

    def _spec(self) -> RequestSpec:
        cfg = self.cfg
        req = self._workload.request(self._sent * self.workers + self.worker)
        self._sent += 1
        spec = self._specs.get(req.key) if req.key is not None else None
        if spec is None:
            spec = api_request(
                cfg.api, self.endpoint, model=cfg.model, messages=req.messages, max_tokens=req.max_tokens,
                stream=cfg.stream, ndjson=cfg.ndjson, api_key=cfg.api_key, extra=cfg.extra_body,
                tool_call=cfg.tool_call, default_max_tokens=cfg.messages_max_tokens,
            )
            if req.key is not None:
                self._specs[req.key] = spec
        return spec

    # -- clock -------------------------------------------------------------------------------------

    def _clock(self, t0_ns: int) -> None:
        # trio's clock and CLOCK_MONOTONIC tick together; one offset converts between them.
        self._offset = trio.current_time() - time.monotonic_ns() / 1e9
        self._t0_ns = t0_ns
        self._warmup_end_ns = t0_ns + int(self.cfg.warmup_s * 1e9)
        self._end_ns = None if self.cfg.duration_s is None else self._warmup_end_ns + int(self.cfg.duration_s * 1e9)

    def _trio_time(self, ns: int) -> float:
        return ns / 1e9 + self._offset

    # -- sessions ----------------------------------------------------------------------------------

    async def _one(self, rec: SessionRecord, slot: ConnectionSlot) -> None:
        live = self.live
        live.started()
        try:
            await run_session(
                self.endpoint, self._spec(), rec, slot,
                timeout_s=self.cfg.timeout_s, keepalive=self.cfg.keepalive, retries=self.retries,
            )
        finally:
            live.session_ended(rec)
            self.ended.append(rec)  # an interrupted session too: run_session marked it

    def _ticket(self, first: bool) -> bool:
        """May a closed-loop slot start another session now?"""
        if self._tickets is not None:
            if self._tickets <= 0:
                return False
            self._tickets -= 1
            return True
        if self._end_ns is not None:
            return now_ns() < self._end_ns
        return first

    async def _slot(self, index: int, start_ns: int) -> None:
        # A slot already due goes straight on (a checkpoint only if cancelled): trio.sleep_until on a past
        # deadline wakes each slot by a cancellation, a scheduler pass before any of them starts its session
        # (results/PERF-LOG.md, "load generator: first chunks read late").
        if start_ns > now_ns():
            await trio.sleep_until(self._trio_time(start_ns))
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
        slot = ConnectionSlot()
        intended = start_ns
        seq = 0
        try:
            while self._ticket(seq == 0):
                rec = SessionRecord(
                    worker=self.worker, slot=index, seq=seq, target=self.target, intended_ns=intended,
                    warmup=intended < self._warmup_end_ns,
                )
                await self._one(rec, slot)
                intended = rec.end_ns  # the slot is free again: the next session is due now
                seq += 1
        finally:
            slot.close()

    async def _closed_loop(self, nursery: trio.Nursery) -> None:
        n = self.cfg.concurrency
        ramp_ns = int(self.cfg.ramp_up_s * 1e9)
        for index in range(self.worker, n, self.workers):
            start = self._t0_ns + (ramp_ns * index // n if n > 1 else 0)
            nursery.start_soon(self._slot, index, start)

    async def _arrival(self, seq: int, intended_ns: int, cap: trio.Semaphore, pool: list[ConnectionSlot]) -> None:
        async with cap:
            slot = pool.pop() if pool else ConnectionSlot()
            rec = SessionRecord(
                worker=self.worker, slot=-1, seq=seq, target=self.target, intended_ns=intended_ns,
                warmup=intended_ns < self._warmup_end_ns,
            )
            try:
                await self._one(rec, slot)
            finally:
                if slot.conn is not None:
                    pool.append(slot)

    async def _open_loop(self, nursery: trio.Nursery, pool: list[ConnectionSlot]) -> None:
        cfg = self.cfg
        assert cfg.rate
        rate = cfg.rate / self.workers
        cap_total = cfg.max_concurrency or cfg.concurrency
        cap = trio.Semaphore(max(1, self.cfg.share(cap_total, self.worker, self.workers) or 1))
        arrivals = self._rng_arrivals = random.Random(f"{cfg.seed}/{self.worker}/arrivals")
        t = self._t0_ns
        seq = 0
        while True:
            if self._tickets is not None:
                if self._tickets <= 0:
                    break
            elif self._end_ns is None:
                break
            t += int(arrivals.expovariate(rate) * 1e9)
            if self._end_ns is not None and t >= self._end_ns:
                break
            if self._tickets is not None:
                self._tickets -= 1
            await trio.sleep_until(self._trio_time(t))
            nursery.start_soon(self._arrival, seq, t, cap, pool)
            seq += 1

    async def run(self, t0_ns: int) -> None:
        """Run this share of the load from ``t0_ns``; returns when every session ended or on interrupt."""
        self._clock(t0_ns)
        pool: list[ConnectionSlot] = []
        with trio.CancelScope() as self._scope:
            if self.interrupted:  # interrupted before it began (a shard waiting for its start)
                self._scope.cancel()
            try:
                async with trio.open_nursery() as watching:
                    watching.start_soon(self.lag.run)
                    async with trio.open_nursery() as nursery:
                        if self.cfg.rate:
                            await self._open_loop(nursery, pool)
                        else:
                            await self._closed_loop(nursery)
                    watching.cancel_scope.cancel()
            finally:
                for slot in pool:
                    slot.close()
