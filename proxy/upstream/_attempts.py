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
from ..limits import Store
from ..protocol import RETRY_STATUSES, retry_delay
from ._client import Upstream
from ._keypool import AllKeysResting, Key, KeyPool, keys_wait, rest_name

log = logging.getLogger("moonrelay")

Send = Callable[[Key | None], Awaitable[httpx.Response]]


async def read_and_close(response: httpx.Response) -> bytes:
    try:
        return await response.aread()
    finally:
        await response.aclose()


async def key_rests(store: Store, keys: KeyPool) -> list[float] | None:
    """Each key's seconds of rest left, from the store; None for a pool that does not rotate (no store call)."""
    return await store.resting(keys.names) if keys.rotating else None


async def free_key(store: Store, keys: KeyPool) -> Key | None:
    """The next key not resting; raises AllKeysResting."""
    return keys.pick(await key_rests(store, keys))


async def send_with_retries(
    upstream: Upstream, send: Send, settings: Settings, *, replayable: bool = True
) -> tuple[httpx.Response, bytes | None]:
    """The upstream's answer (headers in), and its body if it had to be read (a failed attempt that is
    not retried). ``send(key)`` makes one attempt; ``replayable`` False (a streamed request body) means
    one attempt only. Raises the last TransportError, or AllKeysResting before any attempt."""
    keys = upstream.keys
    store = upstream.store
    attempt = 0
    last: tuple[httpx.Response, bytes] | None = None
    while True:
        try:
            key = await free_key(store, keys)
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
        if rotate:
            assert key is not None  # a rotating pool always hands out a key
            rested = keys.rest_s(response.headers.get("retry-after"))
            await store.rest(rest_name(key), rested)
            log.info("upstream %s: key %s answered 429; it rests %.1f s", upstream.name, key.fingerprint, rested)
            if not replayable:
                return last
            wait = keys_wait(await store.resting(keys.names))
            if wait <= 0:
                continue  # the next key, at once
            if attempt >= settings.retries or wait > settings.retry_max_wait_s:
                return last
            delay: float | None = wait
        else:
            delay = retry_delay(attempt, response.headers.get("retry-after"), settings.retry_max_wait_s)
        if delay is None or b"exceeded_current_quota" in content:  # waiting will not refill a quota
            return last
        attempt += 1
        await trio.sleep(delay)
