"""What a running sim counts and shows, and what its request handlers share.

:class:`SimStats` counts answered requests, chat, Messages and Responses (one process;
:class:`SharedSimStats` keeps the counts of the CLI's worker processes in shared memory); :class:`SimServer` is
what ``serve_sim`` reports when it listens; :class:`Sim` is the state every handler of one serving process is given.
"""

from __future__ import annotations

import collections
import multiprocessing
import random
from dataclasses import dataclass, field

from loadtest.sim._config import SimConfig
from loadtest.timer import DeadlineTimer

__all__ = ["SimStats", "SharedSimStats", "SimServer", "Sim"]

RECENT = 200
CANCELS_KEPT = 100_000
_COUNTERS = ("started", "completed", "cancelled", "open")


class SimStats:
    """Counters of answered requests: started, completed, cancelled (client left first), open (in progress).

    Every started request ends as exactly one of completed or cancelled.
    """

    def __init__(self) -> None:
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self.cancel_ns: collections.deque[int] = collections.deque(maxlen=CANCELS_KEPT)
        # The request's OpenAI ``user`` field, index for index with cancel_ns: a client pairs its close with its cancel.
        self.cancel_users: collections.deque[str | None] = collections.deque(maxlen=CANCELS_KEPT)

    def _add(self, name: str, n: int) -> None:
        self._counts[name] += n

    def on_started(self) -> None:
        self._add("started", 1)
        self._add("open", 1)

    def on_completed(self) -> None:
        self._add("completed", 1)
        self._add("open", -1)

    def on_cancelled(self, ns: int, user: str | None = None) -> None:
        self._add("cancelled", 1)
        self._add("open", -1)
        self.cancel_ns.append(ns)
        self.cancel_users.append(user)

    def snapshot(self) -> dict[str, int]:
        return dict(self._counts)

    def reset(self) -> None:
        """Zero the totals (``open`` is a gauge of requests in progress and keeps its value)."""
        for name in ("started", "completed", "cancelled"):
            self._counts[name] = 0
        self.cancel_ns.clear()
        self.cancel_users.clear()


class SharedSimStats(SimStats):
    """Counters in a shared-memory array, one row per worker process; :meth:`snapshot` sums the rows."""

    def __init__(self, array, row: int, workers: int) -> None:
        super().__init__()
        self._array = array
        self._base = row * len(_COUNTERS)
        self._workers = workers
        self._index = {name: i for i, name in enumerate(_COUNTERS)}

    @classmethod
    def allocate(cls, workers: int, ctx=multiprocessing):
        return ctx.RawArray("q", workers * len(_COUNTERS))

    def _add(self, name: str, n: int) -> None:
        self._array[self._base + self._index[name]] += n

    def snapshot(self) -> dict[str, int]:
        width = len(_COUNTERS)
        return {
            name: sum(self._array[row * width + i] for row in range(self._workers)) for i, name in enumerate(_COUNTERS)
        }

    def reset(self) -> None:
        width = len(_COUNTERS)
        for row in range(self._workers):
            for name in ("started", "completed", "cancelled"):
                self._array[row * width + self._index[name]] = 0
        self.cancel_ns.clear()
        self.cancel_users.clear()


@dataclass
class SimServer:
    """What ``serve_sim`` reports when it listens."""

    url: str  # base URL ending in /v1
    host: str
    port: int
    stats: SimStats
    recent: collections.deque = field(default_factory=lambda: collections.deque(maxlen=RECENT))
    # Pass-through endpoints, watched in-process by tests that prove streaming:
    upload_bytes: int = 0  # body bytes of the current (or last) POST /v1/files read so far
    parts_sent: int = 0  # body parts of the current (or last) file content download sent so far
    downloads_cut: int = 0  # downloads whose client left before the last part
    files: dict[str, int] = field(default_factory=dict)  # uploaded file id -> size in bytes

    @property
    def root(self) -> str:
        """The server's origin, ``scheme://host:port``: an Anthropic client's base URL for ``/v1/messages``."""
        return self.url.removesuffix("/v1")

    @property
    def anthropic_url(self) -> str:
        """The Messages base URL under Moonshot's path (``/anthropic``), as Kimi's Anthropic endpoint is given."""
        return self.root + "/anthropic"


class Sim:
    """What every request handler of one serving process is given: settings, counters, the shared timer."""

    __slots__ = ("config", "server", "stats", "timer", "rng")

    def __init__(self, config: SimConfig, server: SimServer, timer: DeadlineTimer, rng: random.Random) -> None:
        self.config = config
        self.server = server
        self.stats = server.stats
        self.timer = timer
        self.rng = rng
