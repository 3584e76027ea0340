"""Getting one answer from an upstream: the attempts before the client sees a byte, and the one rule for when a
request may go out again.

**The rule.** A request goes out again (a retry, another key, another deployment or fallback) only when it
provably never reached the upstream, or the upstream's answer says it did not process it:

- not reached: a connect error or connect timeout, every key resting (nothing was sent);
- not processed: a 429 (unless it is about the request itself, :mod:`proxy.protocol._limited`), a 502 or a 503;
- a first-byte timeout only where the upstream's ``retry_on_timeout`` opts in: the upstream may be working on it.

Anything else after the request was written (a 500, a 504, a read, write or protocol error, a timeout) is
answered as it is: the upstream may have taken a paid completion. :func:`resend_reason` and
:func:`not_processed` say this for both loops that act on it: this module's (retries and keys, on one upstream)
and ``proxy.relay``'s (the request's deployments and fallbacks).

**Retries** (``--retries``, :mod:`proxy.protocol`) wait between attempts on one upstream. **Key rotation** comes
first: in a pool of several keys a 429 sends the request out again at once on a key it has not tried, without
waiting and without spending a retry. When every key is tried or resting, the relay waits (for the first resting
key to wake, or the retry delay) if that fits in ``--retry-max-wait-s`` and a retry is left (the wait is the retry;
then each key may be tried again), else it relays the last 429. A new request that finds every key resting is
refused at once (:class:`proxy.routing.AllKeysResting`, answered 429): the upstream said to wait.

**Rests.** Only a 429 about the account rests its key (here) or its deployment (``proxy.routing._candidates``), and
one request rests at most :data:`MAX_RESTS` of them (:class:`Rests`): a 429 mistaken for the account's, or a
client whose requests exhaust every key, cannot rest a whole pool at once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Collection

import httpx
import trio

from ..config import Settings
from ..limits import Store
from ..protocol import RETRY_STATUSES, Limited, limited_by, retry_delay
from ._keypool import AllKeysResting, Key, KeyPool, keys_wait, rest_name
from ._upstream import Upstream

log = logging.getLogger("moonrelay")

Send = Callable[[Key | None], Awaitable[httpx.Response]]
MAX_RESTS = 1  # keys and deployments one request may rest


class Rests:
    """How many more keys or deployments one request may rest (at most :data:`MAX_RESTS`)."""

    __slots__ = ("left",)

    def __init__(self, left: int = MAX_RESTS) -> None:
        self.left = left

    def take(self) -> bool:
        """Whether the request may rest one more; counts it when it may."""
        if self.left <= 0:
            return False
        self.left -= 1
        return True


def resend_reason(exc: BaseException, *, on_timeout: bool = False) -> str | None:
    """Why a failure before the answer lets the request go out again (a bounded metrics label), or None when it
    may not: the upstream may have read it. ``on_timeout``: the upstream's ``retry_on_timeout``."""
    if isinstance(exc, httpx.ConnectTimeout):
        return "connect_timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect_error"
    if isinstance(exc, httpx.ReadTimeout) and on_timeout:  # send() returns at the head: the first-byte timeout
        return "first_byte_timeout"
    if isinstance(exc, AllKeysResting):
        return "keys_resting"
    return None


def not_processed(status: int, limited: Limited | None) -> bool:
    """Whether an answer says the upstream did not process the request (``limited``: who a 429 is about)."""
    return status in RETRY_STATUSES and limited is not Limited.REQUEST


def limited_of(response: httpx.Response, content: bytes | None) -> Limited | None:
    """Who a 429 is about (None for any other answer)."""
    return limited_by(response.headers, content or b"") if response.status_code == 429 else None


async def read_and_close(response: httpx.Response) -> bytes:
    try:
        return await response.aread()
    finally:
        await response.aclose()


async def key_rests(store: Store, keys: KeyPool) -> list[float] | None:
    """Each key's seconds of rest left, from the store; None for a pool that does not rotate (no store call)."""
    return await store.resting(keys.names) if keys.rotating else None


async def free_key(store: Store, keys: KeyPool, tried: Collection[str] = ()) -> Key | None:
    """The next key not resting and not ``tried`` (rest names); raises AllKeysResting."""
    rests = await key_rests(store, keys)
    if tried and rests is not None:
        rests = [math.inf if name in tried else r for name, r in zip(keys.names, rests, strict=True)]
    return keys.pick(rests)


async def send_with_retries(
    upstream: Upstream, send: Send, settings: Settings, *, replayable: bool = True, rests: Rests | None = None
) -> tuple[httpx.Response, bytes | None]:
    """The upstream's answer (headers in), and its body if it had to be read (a failed attempt that is not
    retried; every 429). ``send(key)`` makes one attempt; ``replayable`` False (a streamed request body) means one
    attempt only; ``rests``: what this request may still rest. Raises the last TransportError, or AllKeysResting
    before any attempt."""
    keys = upstream.keys
    store = upstream.store
    rests = rests if rests is not None else Rests()
    attempt = 0
    tried: set[str] = set()  # keys that answered 429 since the last wait
    last: tuple[httpx.Response, bytes] | None = None
    while True:
        try:
            key = await free_key(store, keys, tried)
        except AllKeysResting:
            if last is not None:
                return last
            raise
        try:
            response = await send(key)
        except httpx.TransportError as exc:
            if resend_reason(exc, on_timeout=upstream.config.retry_on_timeout) is None or not replayable:
                raise
            backoff = retry_delay(attempt, None, settings.retry_max_wait_s) if attempt < settings.retries else None
            if backoff is None:
                raise
            attempt += 1
            await trio.sleep(backoff)
            continue
        status = response.status_code
        if status == 429:
            content = await read_and_close(response)  # who it is about is in its body
            limited: Limited | None = limited_by(response.headers, content)
        elif status in RETRY_STATUSES and attempt < settings.retries and replayable:
            content, limited = await read_and_close(response), None
        else:
            return response, None  # unread: the caller relays it, or moves on
        last = (response, content)
        if not not_processed(status, limited):
            return last  # a 429 about this request: no other key and no wait changes it
        delay: float | None = None
        if status == 429 and keys.rotating:
            assert key is not None  # a rotating pool always hands out a key
            tried.add(rest_name(key))
            if limited is Limited.ACCOUNT and rests.take():
                rested = keys.rest_s(response.headers.get("retry-after"))
                await store.rest(rest_name(key), rested)
                log.info("upstream %s: key %s answered 429; it rests %.1f s", upstream.name, key.fingerprint, rested)
            if not replayable:
                return last
            resting = await store.resting(keys.names)
            if any(r <= 0 and n not in tried for n, r in zip(keys.names, resting, strict=True)):
                continue  # a key not tried yet, at once
            wait = keys_wait(resting)
            if wait > 0:  # every key rests: the wait is for the first to wake
                if attempt >= settings.retries or wait > settings.retry_max_wait_s:
                    return last
                delay = wait
        if delay is None:
            if attempt >= settings.retries or not replayable:
                return last
            delay = retry_delay(attempt, response.headers.get("retry-after"), settings.retry_max_wait_s)
        if delay is None or b"exceeded_current_quota" in content:  # waiting will not refill a quota
            return last
        attempt += 1
        tried.clear()
        await trio.sleep(delay)
