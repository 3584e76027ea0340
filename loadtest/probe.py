"""A raw probe: one request at a time from a process of its own, to tell the target's latency from the load
generator's.

During a sweep step, ``python -m loadtest.probe SPEC`` (SPEC: a pickled ``(LoadConfig, url)``) sends the
step's request again and again, one at a time, each on a fresh connection, and times its first data event
from the moment it meant to send (and, when that event carries the sim's stamp, from the moment the sim sent
it); it leaves as soon as that event arrived (the target sees a client that left) and prints one JSON line per
probe: ``{"ttfc_ms": ..., "first_delay_ms": ...}`` or ``{"error": "..."}``. Its event loop has nothing
else to do, so its TTFC is what the target gives; when the load generator's own TTFC is far above it, the load
generator is the limit (:func:`loadtest.sweep.limit_warnings`). It stops at the end of its stdin. In Messages and
Responses (``--api``) the event it waits for is the first that carries output, the TTFC of :mod:`loadtest.protocols`.

:func:`check_route` is a probe of another kind, before a run in Messages or Responses: does the target serve the
protocol's route at all (a relay that does not answers 404 at once)?
"""

from __future__ import annotations

import json
import pickle
import sys

import trio

from loadtest.accounting import ERROR_DETAIL_BYTES, sim_send_ns
from loadtest.apirequest import api_request
from loadtest.client import ClientError, Endpoint, now_ns, open_connection
from loadtest.protocols import carries_output
from loadtest.session import RequestSpec
from loadtest.shapes import LoadConfig
from loadtest.ssereader import SSEReader

__all__ = ["INTERVAL_S", "ROUTE_CHECK_S", "RouteMissing", "check_route", "probe_once", "main"]

INTERVAL_S = 0.5  # between one probe's end and the next one's start
TIMEOUT_S = 30.0
ROUTE_CHECK_S = 5.0  # a route the target does not serve is refused at once; a slower head is an answer starting
_PROTOCOL = {"messages": "Anthropic Messages", "responses": "OpenAI Responses"}


class RouteMissing(Exception):
    """The target answered 404 or 405 to the protocol's route: it does not serve it (the message says so)."""


def _spec(cfg: LoadConfig, endpoint: Endpoint) -> RequestSpec:
    return api_request(cfg.api, endpoint, model=cfg.model, messages=cfg.prompts[0], max_tokens=cfg.max_tokens,
                       stream=cfg.stream, ndjson=cfg.ndjson, api_key=cfg.api_key, extra=cfg.extra_body,
                       tool_call=cfg.tool_call, default_max_tokens=cfg.messages_max_tokens)


async def check_route(cfg: LoadConfig, url: str, *, embedded: bool = False) -> None:
    """Raise :class:`RouteMissing` when ``url`` answers 404 or 405 to one request of ``cfg``'s protocol (Messages or
    Responses; nothing is sent for chat).

    ``embedded``: ``url`` is the embedded default's relay. Where it does not serve the route the run is refused, not
    sent to the simulator's native route instead: the embedded default measures through the relay, and numbers
    taken without it would be reported as the relay's.

    One request on a connection of its own, closed as soon as the answer's head arrived (or after
    :data:`ROUTE_CHECK_S`): a relay without the route says so at once, and the run would otherwise be a wall of
    ``http_404`` failures. Anything else (200, 4xx, a slow head, no connection) is the run's to judge.
    """
    if cfg.api == "chat":
        return  # the route every target here serves
    endpoint = Endpoint.from_url(url)
    spec = _spec(cfg, endpoint)
    try:
        conn = await open_connection(endpoint)
    except ClientError:
        return
    try:
        with trio.move_on_after(ROUTE_CHECK_S):
            await conn.send_request(spec.request, spec.data)
            response = await conn.receive_response()
            if response.status_code not in (404, 405):
                return
            body = b""
            with trio.move_on_after(1.0):
                ended = False
                while not ended and len(body) < ERROR_DETAIL_BYTES:
                    data, ended = await conn.receive_body()
                    body += data
            said = body[:ERROR_DETAIL_BYTES].decode("utf-8", "replace").strip()
            if embedded:
                raise RouteMissing(
                    f"the embedded relay does not serve the {_PROTOCOL[cfg.api]} route yet (POST {spec.path.decode()} "
                    f"answered {response.status_code}); nothing was measured. To load the simulator's native route, "
                    "start it (python -m loadtest.sim --bind 127.0.0.1:8118) and pass --url http://127.0.0.1:8118/v1; "
                    "a relay that serves the route: --url RELAY/v1")
            raise RouteMissing(
                f"{endpoint.root}{spec.path.decode()} answered {response.status_code}: the target does not serve "
                f"the {_PROTOCOL.get(cfg.api, cfg.api)} protocol there (or not for model {cfg.model!r})"
                + (f"; it said: {said}" if said else ""))
    except ClientError:
        return
    finally:
        await conn.aclose()


async def probe_once(cfg: LoadConfig, url: str) -> dict[str, float | str]:
    """One request: ``{"ttfc_ms": ms}`` to its first data event (for a body that is not streamed: its first
    bytes), with ``first_delay_ms`` since the sim sent that event where it carries a stamp."""
    endpoint = Endpoint.from_url(url)
    spec = _spec(cfg, endpoint)
    t0 = now_ns()
    try:
        with trio.fail_after(TIMEOUT_S):
            conn = await open_connection(endpoint)
            try:
                await conn.send_request(spec.request, spec.data)
                response = await conn.receive_response()
                if response.status_code != 200:
                    return {"error": f"http_{response.status_code}"}
                reader = SSEReader()
                while True:
                    data, ended = await conn.receive_body()
                    t = now_ns()
                    if not spec.stream or spec.ndjson:
                        events = [data] if data else []
                    else:
                        events = [e.data for e in reader.feed_events(data) if carries_output(spec.api, e.type, e.data)]
                    if events:
                        out: dict[str, float | str] = {"ttfc_ms": (t - t0) / 1e6}
                        sent = sim_send_ns(events[0])
                        if sent is not None:
                            out["first_delay_ms"] = (t - sent) / 1e6
                        return out
                    if ended:
                        return {"error": "no data event"}
            finally:
                await conn.aclose()
    except trio.TooSlowError:
        return {"error": "timeout"}
    except ClientError as exc:
        return {"error": type(exc).__name__}


async def _probe(cfg: LoadConfig, url: str) -> None:
    """``{"ready": true}`` once imported (the step's load waits for it: a slow start must not eat the step), then
    probes until stdin ends; a probe in flight then still finishes, so a step has at least one sample."""
    stopped = trio.Event()
    async with trio.open_nursery() as nursery:

        async def until_stdin_ends() -> None:
            stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
            while await stdin.receive_some(4096):
                pass
            stopped.set()

        nursery.start_soon(until_stdin_ends)
        print(json.dumps({"ready": True}), flush=True)
        while not stopped.is_set():
            print(json.dumps(await probe_once(cfg, url)), flush=True)
            with trio.move_on_after(INTERVAL_S):
                await stopped.wait()
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0], "rb") as f:
        cfg, url = pickle.load(f)
    trio.run(_probe, cfg, url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
