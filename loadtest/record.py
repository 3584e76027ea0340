"""One measured session: the record the client fills and the statistics read.

Times are ``time.monotonic_ns()`` (CLOCK_MONOTONIC), comparable across processes on one host, so the
simulated upstream's per-chunk send stamps can be subtracted from the client's receive times.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class SessionRecord:
    """What one streaming (or non-streaming) chat completion did, as seen by the load generator.

    ``error_kind`` is None exactly when the session completed: HTTP 200, no error event, every
    chunk the upstream announced, and ``[DONE]`` (for streams).
    """

    worker: int = 0
    slot: int = 0
    seq: int = 0  # index of this session within its slot (closed loop) or arrival number (open loop)
    target: str = "relay"  # "relay" or "direct" (the --baseline run against the sim itself)
    stream: bool = True
    intended_ns: int = 0  # when the session was meant to start (open-loop schedule / slot free time)
    start_ns: int = 0  # when the client began work on it (connect or reuse)
    connected_ns: int | None = None  # TCP connect finished; None when a keep-alive connection was reused
    sent_ns: int = 0  # request fully written
    headers_ns: int | None = None  # response status line and headers received
    first_chunk_ns: int | None = None  # first data event (stream) / body (non-stream)
    end_ns: int = 0
    status: int | None = None
    chunks: int = 0  # data events received, [DONE] excluded
    expected_chunks: int | None = None  # what the sim announced in its chunks ("sim": {"of": n})
    done: bool = False  # saw data: [DONE]
    bytes: int = 0  # response body bytes
    gaps_ms: list[float] = field(default_factory=list)  # between consecutive data events
    relay_delay_ms: list[float] = field(default_factory=list)  # receive time - sim send stamp, per chunk
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error_kind: str | None = None  # e.g. "connect", "http_429", "error_event", "missing_chunks", "no_done", "timeout", "reset"
    error_detail: str | None = None
    warmup: bool = False  # started during --warmup: excluded from statistics

    @property
    def ok(self) -> bool:
        return self.error_kind is None

    @property
    def connect_ms(self) -> float | None:
        if self.connected_ns is None:
            return None
        return (self.connected_ns - self.start_ns) / 1e6

    @property
    def ttfc_ms(self) -> float | None:
        """Time to first chunk from the *intended* start: queueing in the client or server is counted."""
        if self.first_chunk_ns is None:
            return None
        return (self.first_chunk_ns - self.intended_ns) / 1e6

    @property
    def ttfc_sent_ms(self) -> float | None:
        """Time to first chunk from the moment the request was fully sent."""
        if self.first_chunk_ns is None:
            return None
        return (self.first_chunk_ns - self.sent_ns) / 1e6

    @property
    def e2e_ms(self) -> float:
        return (self.end_ns - self.intended_ns) / 1e6

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["connect_ms"] = self.connect_ms
        d["ttfc_ms"] = self.ttfc_ms
        d["ttfc_sent_ms"] = self.ttfc_sent_ms
        d["e2e_ms"] = self.e2e_ms
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SessionRecord:
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in d.items() if k in names})
