"""A raw probe: one request at a time from a process of its own, to tell the target's latency from the load
generator's.

During a sweep step, ``python -m loadtest.probe SPEC`` (SPEC: a pickled ``(LoadConfig, url)``) sends the
step's request again and again, one at a time, each on a fresh connection, and times its first data event
from the moment it meant to send (and, when that event carries the sim's stamp, from the moment the sim sent
it); it leaves as soon as that event arrived (the target sees a client that left) and prints one JSON line per
probe: ``{"ttfc_ms": ..., "first_delay_ms": ...}`` or ``{"error": "..."}``. Its event loop has nothing
else to do, so its TTFC is what the target gives; when the load generator's own TTFC is far above it, the load
generator is the limit (:func:`loadtest.sweep.limit_warnings`). It stops at the end of its stdin.
"""

from __future__ import annotations

import json
import pickle
import sys

import trio

from loadtest.accounting import sim_send_ns
from loadtest.client import ClientError, Endpoint, now_ns, open_connection
from loadtest.session import build_request
from loadtest.shapes import LoadConfig
from loadtest.ssereader import SSEReader

__all__ = ["INTERVAL_S", "probe_once", "main"]

INTERVAL_S = 0.5  # between one probe's end and the next one's start
TIMEOUT_S = 30.0


async def probe_once(cfg: LoadConfig, url: str) -> dict[str, float | str]:
    """One request: ``{"ttfc_ms": ms}`` to its first data event (for a body that is not streamed: its first
    bytes), with ``first_delay_ms`` since the sim sent that event where it carries a stamp."""
    endpoint = Endpoint.from_url(url)
    spec = build_request(endpoint, model=cfg.model, messages=cfg.prompts[0], max_tokens=cfg.max_tokens,
                         stream=cfg.stream, ndjson=cfg.ndjson, api_key=cfg.api_key, extra=cfg.extra_body)
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
                    events = [data] if data and (not spec.stream or spec.ndjson) else reader.feed(data)
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
    async with trio.open_nursery() as nursery:

        async def until_stdin_ends() -> None:
            stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
            while await stdin.receive_some(4096):
                pass
            nursery.cancel_scope.cancel()

        nursery.start_soon(until_stdin_ends)
        while True:
            print(json.dumps(await probe_once(cfg, url)), flush=True)
            await trio.sleep(INTERVAL_S)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0], "rb") as f:
        cfg, url = pickle.load(f)
    trio.run(_probe, cfg, url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
