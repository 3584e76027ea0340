"""Getting one answer from an upstream: the attempts before the client sees a byte.

Retries (``--retries``, :mod:`proxy.protocol`) happen only before the first byte, for connect errors
and 429/502/503. A read, write or protocol error is never retried: the upstream may have read the
request (a paid completion) before the connection broke. Key rotation comes first: in a pool of
several keys, a 429 rests that key and the request goes out again at once on the next key, without
waiting and without spending a retry (a resting key is not picked, so each key is tried once until
all rest). When every key rests, the relay waits for the first to wake if that fits in
``--retry-max-wait-s`` and a retry is left (the wait is the retry; the keys that woke are tried
again), else it relays the last 429. A new request that finds every key resting is refused at once
(:class:`proxy.upstream.AllKeysResting`, answered 429): the upstream said to wait.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import httpx
import trio

from ..config import Settings
from ..protocol import RETRY_STATUSES, retry_delay
from ._client import Upstream
from ._keypool import AllKeysResting, Key

log = logging.getLogger("moonrelay")

Send = Callable[[Key | None], Awaitable[httpx.Response]]


async def read_and_close(response: httpx.Response) -> bytes:
    try:
        return await response.aread()
    finally:
        await response.aclose()


async def send_with_retries(
    upstream: Upstream, send: Send, settings: Settings, *, replayable: bool = True
) -> tuple[httpx.Response, bytes | None]:
    """The upstream's answer (headers in), and its body if it had to be read (a failed attempt that is
    not retried). ``send(key)`` makes one attempt; ``replayable`` False (a streamed request body) means
    one attempt only. Raises the last TransportError, or AllKeysResting before any attempt."""
    keys = upstream.keys
    attempt = 0
    last: tuple[httpx.Response, bytes] | None = None
    while True:
        try:
            key = keys.pick(trio.current_time())
        except AllKeysResting:
            if last is not None:
                return last
            raise
        try:
            response = await send(key)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            delay = retry_delay(attempt, None, settings.retry_max_wait_s) if attempt < settings.retries else None
            if delay is None or not replayable:
                raise
            attempt += 1
            await trio.sleep(delay)
            continue
        status = response.status_code
        rotate = status == 429 and keys.rotating
        if status not in RETRY_STATUSES or ((attempt >= settings.retries or not replayable) and not rotate):
            return response, None
        content = await read_and_close(response)
        last = (response, content)
        now = trio.current_time()
        if rotate:
            rested = keys.rest(key, response.headers.get("retry-after"), now)
            assert key is not None  # a rotating pool always hands out a key
            log.info("upstream %s: key %s answered 429; it rests %.1f s", upstream.name, key.fingerprint, rested)
            if not replayable:
                return last
            if keys.ready(now):
                continue  # the next key, at once
            wait = keys.wake_in(now)
            if attempt >= settings.retries or wait > settings.retry_max_wait_s:
                return last
            delay: float | None = wait
        else:
            delay = retry_delay(attempt, response.headers.get("retry-after"), settings.retry_max_wait_s)
        if delay is None or b"exceeded_current_quota" in content:  # waiting will not refill a quota
            return last
        attempt += 1
        await trio.sleep(delay)
