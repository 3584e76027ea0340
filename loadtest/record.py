"""One measured session: the record the client fills and the statistics read.

Times are ``time.monotonic_ns()`` (CLOCK_MONOTONIC), comparable across processes on one host, so the
simulated upstream's per-chunk send stamps can be subtracted from the client's receive times.
"""

from __future__ import annotations

import pickle
import tempfile
from dataclasses import asdict, dataclass, field
from typing import IO, Any


@dataclass(slots=True)
class SessionRecord:
    """What one streaming (or non-streaming) chat completion did, as seen by the load generator.

    Two outcomes (:mod:`loadtest.accounting` and :mod:`loadtest.session` have the exact rules): *completed*
    (``error_kind`` None): the protocol says it ended (HTTP 200, no error event, a finish_reason, ``[DONE]``),
    or *failed*: ``error_kind`` says why. A completed stream is *verified* when the sim's stamps show every chunk
    it announced arrived in seq order, *unverified* when its chunks carried no stamp (a real provider's, or a
    target that re-serialised them), so nothing could check that none was lost.
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
    empty_chunks: list[int] = field(default_factory=list)  # indices of data chunks without an output token
    finish_reason: str | None = None  # the last finish_reason a chunk (or the body) carried
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    # e.g. "connect", "http_429", "error_event", "missing_chunks", "no_done", "timeout", "reset"
    error_kind: str | None = None
    error_detail: str | None = None
    warmup: bool = False  # started during --warmup: excluded from statistics
    unverified: bool = False  # completed, but without the sim's stamps: no lost chunk could have been seen
    resent: int = 0  # times the request went on a fresh connection: the kept-alive one was found closed

    @property
    def completed(self) -> bool:
        """Ended as the protocol says a whole answer ends, with no detected error (verified or not)."""
        return self.error_kind is None

    @property
    def ok(self) -> bool:
        """The same as :attr:`completed`."""
        return self.error_kind is None

    @property
    def verified(self) -> bool:
        """Completed, and the sim's stamps show every chunk it announced arrived, in order."""
        return self.error_kind is None and not self.unverified

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


class SpilledRecords:
    """The records of the sessions a process ran, on disk in batches as they end, read back whole for the report.

    A record and its per-chunk lists are about a kilobyte of objects: a run of a million sessions held them all in
    memory, so the load generator grew with its run (and its collector's full passes with it) while it measured.
    Kept on disk, the run's memory stays flat; the report, after the run, reads them back.
    """

    BATCH = 2000  # records per pickled batch

    def __init__(self) -> None:
        self._batch: list[SessionRecord] = []
        self._file: IO[bytes] | None = None  # an unlinked temporary file, gone when closed
        self.count = 0

    def append(self, rec: SessionRecord) -> None:
        self._batch.append(rec)
        self.count += 1
        if len(self._batch) >= self.BATCH:
            if self._file is None:
                self._file = tempfile.TemporaryFile()
            pickle.dump(self._batch, self._file, pickle.HIGHEST_PROTOCOL)
            self._batch = []

    def read(self) -> list[SessionRecord]:
        """Every record, in the order the sessions ended; the file is closed, the records stay in memory."""
        if self._file is not None:
            records: list[SessionRecord] = []
            self._file.seek(0)
            while True:
                try:
                    records += pickle.load(self._file)
                except EOFError:
                    break
            self._file.close()
            self._file = None
            self._batch = records + self._batch
        return self._batch


@dataclass(slots=True)
class ProcessUsage:
    """CPU and memory of one process that took part in a run (a server child, or a load worker)."""

    role: str  # "relay", "sim", "loadtest", "loadtest-worker"
    pid: int
    cpu_s: float  # user + system CPU seconds over the measured run
    peak_rss_bytes: int
    idle_rss_bytes: int | None = None  # RSS before load, for memory per open stream
    per_process: list[dict[str, Any]] | None = None  # [{pid, cpu_s, peak_fds}] of the tree: worker balance


@dataclass(slots=True)
class RunData:
    """Everything a run measured; the report is a pure function of this.

    Open sessions over time and chunks/s over time are derived from the records (start/end and
    first-chunk time plus gaps), so workers only need to return their records.
    """

    command: list[str]
    config: dict[str, Any]  # the load profile and options: concurrency, rate, duration_s, ramp_up_s, warmup_s, ...
    started_unix: float  # time.time() at start, for the report header
    t0_ns: int  # monotonic start of the measured run
    t_end_ns: int
    records: list[SessionRecord]
    processes: list[ProcessUsage] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    interrupted: bool = False
    slo: dict[str, float] | None = None  # e.g. {"ttfc_ms": 500.0, "e2e_ms": 10000.0}
    fd_limit: tuple[int, int] = (0, 0)
    connect_retries: int = 0
    upstream_peak_open: int | None = None  # embedded mode: the most streams the relay held open at the sim
    cores: int | None = None  # CPUs of the machine the run ran on: the load generator's share is of all of them
    loop_lag_ms: list[float] = field(default_factory=list)  # every load process's event-loop lateness samples
