"""The load shapes of issue 5, as data: what the sim is told, what the load generator is told.

Pure: nothing here starts a process. ``Scenario.scaled`` shrinks the stream counts (not the timing),
so ``--scale 0.1`` is a smoke run of the same shape. ``api``: the protocol the load generator speaks to the
target (``loadtest --api``); the sim speaks each natively, so ``direct`` is its floor in every protocol.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Scenario:
    name: str
    streams: int  # -c: concurrent sessions (closed loop)
    ttft_s: float
    ttft_jitter_s: float
    chunks: int
    interval_s: float
    duration_s: float | None = None  # None: each slot runs once
    ramp_up_s: float | None = None  # None: the load generator's default
    proxy_workers: int = 2  # the same for every proxy: one per core
    sim_workers: int = 1
    goal: str = ""
    api: str = "chat"  # loadtest --api: chat, messages (Anthropic) or responses (OpenAI)

    def scaled(self, factor: float) -> Scenario:
        if factor == 1:
            return self
        return replace(self, streams=max(1, math.ceil(self.streams * factor)))

    def sim_flags(self) -> list[str]:
        return ["--ttft", f"{self.ttft_s:g}", "--ttft-jitter", f"{self.ttft_jitter_s:g}",
                "--chunks", str(self.chunks), "--interval", f"{self.interval_s:.9g}",
                "--workers", str(self.sim_workers)]

    def loadtest_flags(self) -> list[str]:
        flags = ["-c", str(self.streams)]
        if self.duration_s is not None:
            flags += ["--duration", f"{self.duration_s:g}"]
        if self.ramp_up_s is not None:
            flags += ["--ramp-up", f"{self.ramp_up_s:g}"]
        if self.api != "chat":
            flags += ["--api", self.api]
        if self.api == "messages":  # it requires max_tokens, which the sim answers with exactly: the shape's length
            flags += ["--max-tokens", str(self.chunks)]
        return flags

    def with_streams(self, streams: int) -> Scenario:
        """The same shape at another stream count (the capacity search's steps)."""
        return replace(self, streams=streams)

    def session_s(self) -> float:
        """Longest session: TTFT + jitter + every interval; bounds how long a run may take."""
        return self.ttft_s + self.ttft_jitter_s + self.chunks * self.interval_s


# Issue 16: a real token stream, one token per chunk at 30 chunks/s for 300 chunks after a 1-3 s TTFT.
# The per-request set-up is spread over 300 chunks, so CPU per chunk is the chunk path's own cost.
# One proxy worker: the capacity search (bench/capacity.py) pins it to one core and asks how many
# streams that core holds.
TOKEN_RATE = Scenario(
    "token-rate", streams=100, ttft_s=2.0, ttft_jitter_s=1.0, chunks=300, interval_s=1 / 30, proxy_workers=1,
    goal="streams per proxy core with 0 failures and added inter-chunk delay p99 <= 10 ms over direct")

SCENARIOS: dict[str, Scenario] = {s.name: s for s in [
    # 1,000 streams x 20 chunks / 0.5 s is ~2,000 chunks/s: low enough that no process nears a full
    # core, so CPU per chunk is the relay's cost, not queueing.
    Scenario("relay-cost", streams=1_000, ttft_s=1.0, ttft_jitter_s=0.0, chunks=20, interval_s=0.5,
             goal="CPU/chunk <= 3x nginx; TTFC overhead p99 <= nginx + 10 ms"),
    # Issue 5's "plus 100 streams every 0.1 s": fewer streams, 5x the chunk rate per stream.
    Scenario("relay-cost-100", streams=100, ttft_s=1.0, ttft_jitter_s=0.0, chunks=20, interval_s=0.1,
             goal="CPU/chunk <= 3x nginx; TTFC overhead p99 <= nginx + 10 ms"),
    # TTFT uniform 1-3 s, 5 chunks 5 s apart, closed loop for 60 s after a 10 s ramp.
    Scenario("hold", streams=10_000, ttft_s=2.0, ttft_jitter_s=1.0, chunks=5, interval_s=5.0,
             duration_s=60, ramp_up_s=10, sim_workers=2,
             goal="0 failures; TTFC overhead p99 <= 100 ms; <= 20 KB per open stream"),
    # No interval: the proxy is the bottleneck; report chunks/s per proxy core.
    Scenario("ceiling", streams=100, ttft_s=0.0, ttft_jitter_s=0.0, chunks=200, interval_s=0.0,
             duration_s=15, goal="relayed chunks/s per proxy CPU core"),
    TOKEN_RATE,
    # Issue 24: the same token stream in Anthropic Messages and OpenAI Responses. A chunk is an event that carries
    # output (loadtest.protocols), so CPU per chunk compares with token-rate's. Against `moonrelay` (a chat
    # upstream) the relay translates every chunk; against `moonrelay-anthropic` / `moonrelay-responses` (the sim's
    # native route as the upstream) it relays them: native relay vs translation per chunk.
    replace(TOKEN_RATE, name="token-rate-messages", api="messages",
            goal="CPU per chunk, translated (moonrelay) vs relayed natively (moonrelay-anthropic) vs chat"),
    replace(TOKEN_RATE, name="token-rate-responses", api="responses",
            goal="CPU per chunk, translated (moonrelay) vs relayed natively (moonrelay-responses) vs chat"),
]}


def parse(names: str, scale: float) -> list[Scenario]:
    out = []
    for name in filter(None, (n.strip() for n in names.split(","))):
        if name not in SCENARIOS:
            raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
        out.append(SCENARIOS[name].scaled(scale))
    return out
