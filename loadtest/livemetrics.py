"""``--metrics-bind HOST:PORT``: the live progress of a run as a Prometheus endpoint, so a dashboard can watch it.

What the progress line shows, read from :class:`~loadtest.progress.LiveStats` at scrape time (nothing is
computed per session for it)::

    loadtest_open_sessions                     gauge      sessions in progress
    loadtest_planned_sessions                  gauge      sessions the run (or this shard) will start, when known
    loadtest_sessions_total{outcome}           counter    ended sessions: completed, unverified, failed
    loadtest_errors_total{kind}                counter    failed sessions by error kind (connect, timeout, bad_seq...)
    loadtest_ttfc_seconds                      histogram  time to first chunk from the intended start
    loadtest_chunk_gap_seconds                 histogram  gaps between a stream's chunks
    loadtest_info{phase}                       gauge 1    the phase now running (relay, direct)

TTFC and gaps are observed when a session ends (as the progress line's TTFC is), in fixed buckets
(:data:`~loadtest.progress.TTFC_BOUNDS_MS`, :data:`~loadtest.progress.GAP_BOUNDS_MS`) so that the worker
processes' counts add up exactly; every metric carries ``const_labels`` (``shard="0/2"`` for a shard). The
exposition is prometheus-client's; the server is a few lines of trio + h11 in the run's own nursery, so it
starts before the load (port 0: the kernel picks; ``task_status.started`` reports the URL) and stops with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial

import h11
import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from loadtest.progress import Buckets, LiveStats
from wire import url_host

__all__ = ["LiveCollector", "render", "serve_metrics"]

REQUEST_TIMEOUT_S = 10.0
MAX_REQUEST_BYTES = 16384


class LiveCollector:
    """A prometheus-client collector that reads a :class:`LiveStats` whenever it is scraped."""

    def __init__(self, live: LiveStats, const_labels: Mapping[str, str] | None = None) -> None:
        self.live = live
        self.names = sorted(const_labels or {})
        self.values = [str((const_labels or {})[k]) for k in self.names]

    def _family(self, cls, name: str, doc: str, value: float | None = None, labels: Iterable[str] = ()) -> Metric:
        family = cls(name, doc, labels=[*self.names, *labels])
        if value is not None:
            family.add_metric(self.values, value)
        return family

    def _histogram(self, name: str, doc: str, hist: Buckets) -> Metric:
        family = HistogramMetricFamily(name, doc, labels=self.names)
        cumulative, buckets = 0, []
        for bound, n in zip([*hist.bounds, None], hist.counts, strict=True):
            cumulative += n
            buckets.append(("+Inf" if bound is None else floatToGoString(bound / 1000), cumulative))
        family.add_metric(self.values, buckets, hist.sum / 1000)
        return family

    def collect(self) -> Iterable[Metric]:
        live = self.live
        yield self._family(GaugeMetricFamily, "loadtest_open_sessions", "Sessions in progress", live.open)
        if live.planned is not None:
            yield self._family(GaugeMetricFamily, "loadtest_planned_sessions", "Sessions the run will start",
                               live.planned)
        ended = self._family(CounterMetricFamily, "loadtest_sessions", "Ended sessions by outcome",
                             labels=["outcome"])
        for outcome, n in (("completed", live.completed), ("unverified", live.unverified), ("failed", live.failed)):
            ended.add_metric([*self.values, outcome], n)
        yield ended
        errors = self._family(CounterMetricFamily, "loadtest_errors", "Failed sessions by error kind",
                              labels=["kind"])
        for kind, n in sorted(live.errors.items()):
            errors.add_metric([*self.values, kind], n)
        yield errors
        yield self._histogram("loadtest_ttfc_seconds", "Time to first chunk from the intended start",
                              live.ttfc_hist)
        yield self._histogram("loadtest_chunk_gap_seconds", "Gaps between consecutive chunks of a stream",
                              live.gap_hist)
        info = self._family(GaugeMetricFamily, "loadtest_info", "The phase now running", labels=["phase"])
        info.add_metric([*self.values, live.phase or "relay"], 1)
        yield info


def render(live: LiveStats, const_labels: Mapping[str, str] | None = None) -> bytes:
    """The text exposition of ``live``, as the endpoint serves it."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LiveCollector(live, const_labels))  # type: ignore[arg-type]
    return generate_latest(registry)


async def _respond(stream: trio.SocketStream, live: LiveStats, const_labels: Mapping[str, str] | None) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
    with trio.move_on_after(REQUEST_TIMEOUT_S):
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(MAX_REQUEST_BYTES))
                continue
            if not isinstance(event, h11.Request):
                return
            break
        path = event.target.split(b"?", 1)[0]
        if event.method in (b"GET", b"HEAD") and path == b"/metrics":
            status, ctype, body = 200, CONTENT_TYPE_LATEST, render(live, const_labels)
        else:
            status, ctype, body = 404, "text/plain", b"loadtest serves GET /metrics\n"
        head = [("content-type", ctype), ("content-length", str(len(body))), ("connection", "close")]
        data = conn.send(h11.Response(status_code=status, headers=head))
        if event.method != b"HEAD":
            data += conn.send(h11.Data(data=body))
        await stream.send_all(data + conn.send(h11.EndOfMessage()))


async def _handle(live: LiveStats, const_labels: Mapping[str, str] | None, stream: trio.SocketStream) -> None:
    try:
        await _respond(stream, live, const_labels)
    except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass  # a scraper that left or spoke nonsense: nothing to tell it
    finally:
        await trio.aclose_forcefully(stream)


async def serve_metrics(
    live: LiveStats, host: str, port: int, *, const_labels: Mapping[str, str] | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``GET /metrics`` until cancelled; ``task_status.started(url)`` once listening (port 0: the real one)."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, partial(_handle, live, const_labels), port,
                                                host=host))
        bound = listeners[0].socket.getsockname()[1]
        task_status.started(f"http://{url_host(host)}:{bound}/metrics")
