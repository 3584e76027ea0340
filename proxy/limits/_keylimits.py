"""A client key's limits, checked before anything goes upstream and settled when the call ends.

Checks, in this order, so that a refused request consumes nothing: ``concurrent`` (a slot lease, given back if a
later check refuses), ``tpm`` and ``budget`` (the window's tokens so far under the limit), then ``rpm`` (a hit, the
one write). Over a limit: a :class:`Refusal` (429, an OpenAI-shaped body, ``Retry-After`` and ``x-ratelimit-*``
headers). Admitted: an :class:`Admission`. Once the request's body is read, :meth:`ClientLimits.reserve` holds its
token reserve in the ``tpm`` and ``budget`` windows (refused if a window filled up meanwhile). The admission's
``free_slot``, called before the response's last bytes go out, gives the slot back, so a client that waits for each
answer never finds its own slot still taken; its ``settle`` at the end of the call gives the slot back if that did
not happen (the client left) and replaces the reserve with the tokens the request is charged
(proxy/limits/_charge.py, _tokens.py).

Every count is in the :class:`Store` (``proxy.limits``): this worker's memory, or a Redis shared by every worker
and instance. A store that fails lets the request through (one log line): the relay's limits must not take it down.
Counters are named by a digest of the key, never the key itself.
"""

from __future__ import annotations

import logging
import math

import trio

from ..errors import Refused
from ._keys import MINUTE_S, ClientKey
from ._store import Store, StoreUnavailable
from ._tokens import TokenHold, TokenWindow

log = logging.getLogger("moonrelay")

SETTLE_TIMEOUT_S = 5.0  # giving a slot back and adding tokens, shielded from the call's cancellation


def openai_duration(seconds: float) -> str:
    """A reset time the way OpenAI's ``x-ratelimit-reset-*`` headers write it: ``"17ms"``, ``"1s"``, ``"6m0s"``,
    ``"1h2m3s"`` (whole seconds rounded up from 1 s on)."""
    if seconds < 1:
        return f"{max(1, math.ceil(seconds * 1000))}ms"
    hours, rest = divmod(math.ceil(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def ratelimit_headers(key: ClientKey, requests: tuple[int, float] | None,
                      tokens: tuple[int, float] | None) -> dict[str, str]:  # fmt: skip
    """OpenAI's ``x-ratelimit-*`` headers for the limits ``key`` has: ``requests`` and ``tokens`` are the rpm and
    tpm windows' (used, seconds to reset)."""
    out = {}
    if key.rpm and requests is not None:
        out["x-ratelimit-limit-requests"] = str(key.rpm)
        out["x-ratelimit-remaining-requests"] = str(max(0, key.rpm - requests[0]))
        out["x-ratelimit-reset-requests"] = openai_duration(requests[1])
    if key.tpm and tokens is not None:
        out["x-ratelimit-limit-tokens"] = str(key.tpm)
        out["x-ratelimit-remaining-tokens"] = str(max(0, key.tpm - tokens[0]))
        out["x-ratelimit-reset-tokens"] = openai_duration(tokens[1])
    return out


class Refusal(Refused):
    """A request over one of its key's limits: 429, nothing sent upstream, with OpenAI's ``x-ratelimit-*``
    headers and the error type OpenAI gives each limit."""

    def __init__(self, limit: str, key: ClientKey, used: int, retry_s: int, headers: dict[str, str]) -> None:
        message, type_, code = _error(limit, key, used, retry_s)
        super().__init__(message, code, retry_after=retry_s, type_=type_, headers=headers)
        self.limit = limit  # "concurrent", "rpm", "tpm" or "budget": the metrics' label
        self.key = key


def _error(limit: str, key: ClientKey, used: int, retry_s: int) -> tuple[str, str, str]:
    """(message, type, code) for a request over ``limit``."""
    who = f"client key {key.label!r}"
    if limit == "concurrent":
        msg, type_, code = (f"Too many concurrent requests for {who}: limit {key.concurrent}; retry when one ends.",
                            "requests", "rate_limit_exceeded")  # fmt: skip
    elif limit == "rpm":
        msg, type_, code = (f"Rate limit reached for {who} on requests per minute (RPM): limit {key.rpm}, used "
                            f"{used}. Please try again in {retry_s}s.", "requests", "rate_limit_exceeded")  # fmt: skip
    elif limit == "tpm":
        msg, type_, code = (f"Rate limit reached for {who} on tokens per minute (TPM): limit {key.tpm}, used "
                            f"{used}. Please try again in {retry_s}s.", "tokens", "rate_limit_exceeded")  # fmt: skip
    else:
        msg, type_, code = (f"{who} has used its budget of {key.budget} tokens for this period ({used} used); it "
                            f"resets in {retry_s}s.", "insufficient_quota", "insufficient_quota")  # fmt: skip
    return msg, type_, code


class Admission:
    """An admitted request's hold on its key's limits: the slot it took and the windows its tokens go to. It keeps
    the limits it started with (a keys file reloaded meanwhile applies to new requests only)."""

    __slots__ = ("key", "headers", "tokens", "_store", "_lease")

    def __init__(self, key: ClientKey, store: Store, lease: str | None, headers: dict[str, str],
                 ends: dict[str, float] | None = None) -> None:  # fmt: skip
        self.key = key
        self.headers = headers  # the x-ratelimit-* headers for the response
        self.tokens = TokenHold(store, token_windows(key, ends or {}))  # its reserve, then its charge
        self._store = store
        self._lease = lease

    async def free_slot(self) -> None:
        """Give the ``concurrent`` slot back now, and wait until the store has it (the response's end is about to go
        out); at most the store's deadline, shielded."""
        lease, self._lease = self._lease, None
        if lease is not None:
            with trio.move_on_after(SETTLE_TIMEOUT_S, shield=True):
                try:
                    await self._store.release(_name(self.key, "concurrent"), lease)
                except StoreUnavailable as exc:
                    log.warning("client key %s: its slot was not given back (store unavailable: %s); it comes "
                                "back when its lease lapses", self.key.label, exc)  # fmt: skip

    async def settle(self, tokens: int | None) -> None:
        """The call ended (completed, failed or left): give the slot back, count ``tokens`` (its charge) in place
        of its reserve."""
        key, store = self.key, self._store
        lease, self._lease = self._lease, None
        with trio.move_on_after(SETTLE_TIMEOUT_S, shield=True):
            try:
                if lease is not None:
                    await store.release(_name(key, "concurrent"), lease)
                await self.tokens.settle(tokens)
            except StoreUnavailable as exc:
                log.warning("client key %s: its counts were not settled (store unavailable: %s)", key.label, exc)


def _name(key: ClientKey, limit: str) -> str:
    return f"key:{key.id}:{limit}"


def _budget_name(key: ClientKey) -> str:
    return f"key:{key.id}:budget:{key.budget_s}"  # a new period starts a new count


def token_windows(key: ClientKey, ends: dict[str, float]) -> list[TokenWindow]:
    """``key``'s token windows, with when each ends as admission read it (``trio.current_time()`` seconds)."""
    windows = []
    if key.tpm:
        windows.append(TokenWindow("tpm", _name(key, "tpm"), MINUTE_S, key.tpm, ends.get("tpm")))
    if key.budget:
        windows.append(TokenWindow("budget", _budget_name(key), key.budget_s, key.budget, ends.get("budget")))
    return windows


class ClientLimits:
    """Checks client keys' limits in ``store`` (a shared store renews a ``concurrent`` slot's lease while its request
    lives: a worker that died holding one gives it back within ``--state-lease-s``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def admit(self, key: ClientKey) -> Admission | Refusal:
        try:
            return await self._admit(key)
        except StoreUnavailable as exc:
            log.warning("client key %s: limits not checked, request let through (store unavailable: %s)",
                        key.label, exc)  # fmt: skip
            return Admission(key, self.store, None, {})

    async def _admit(self, key: ClientKey) -> Admission | Refusal:
        store = self.store
        lease = None
        if key.concurrent:
            lease = await store.acquire(_name(key, "concurrent"), key.concurrent)
            if lease is None:
                return await self._refuse(key, "concurrent", key.concurrent, 1.0, None, None)
        try:
            verdict = await self._windows(key)
        except BaseException:
            if lease is not None:
                await self._release(key, lease)
            raise
        if isinstance(verdict, Refusal):
            if lease is not None:
                await self._release(key, lease)
            return verdict
        return Admission(key, store, lease, *verdict)

    async def _release(self, key: ClientKey, lease: str) -> None:
        with trio.move_on_after(SETTLE_TIMEOUT_S, shield=True):
            await self.store.release(_name(key, "concurrent"), lease)

    async def _windows(self, key: ClientKey) -> Refusal | tuple[dict[str, str], dict[str, float]]:
        """The window checks: a refusal, or the admitted response's ``x-ratelimit-*`` headers and when the token
        windows read end (for the reserve: proxy/limits/_tokens.py)."""
        store = self.store
        tokens = None
        ends = {}
        if key.tpm:
            tokens = await store.used(_name(key, "tpm"), MINUTE_S)
            if tokens[0] >= key.tpm:
                return await self._refuse(key, "tpm", tokens[0], tokens[1], None, tokens)
            ends["tpm"] = trio.current_time() + tokens[1]
        if key.budget:
            spent, reset_s = await store.used(_budget_name(key), key.budget_s)
            if spent >= key.budget:
                return await self._refuse(key, "budget", spent, reset_s, None, tokens)
            ends["budget"] = trio.current_time() + reset_s
        requests = None
        if key.rpm:
            hit = await store.hit(_name(key, "rpm"), MINUTE_S, key.rpm)
            requests = (hit.used, hit.reset_s)
            if not hit.allowed:
                return await self._refuse(key, "rpm", hit.used, hit.reset_s, requests, tokens)
        return ratelimit_headers(key, requests, tokens), ends

    async def reserve(self, admission: Admission, amount: int) -> Refusal | None:
        """Hold ``amount`` tokens (the request's reserve) in its key's ``tpm`` and ``budget`` windows, or refuse
        it when one of them filled up since admission (the add taken back). A store that fails lets it through."""
        key = admission.key
        try:
            over = await admission.tokens.reserve(amount)
            if over is None:
                return None
            limit, used, reset_s = over
            return await self._refuse(key, limit, used, reset_s, None, None)
        except StoreUnavailable as exc:
            log.warning("client key %s: tokens not reserved, request let through (store unavailable: %s)",
                        key.label, exc)  # fmt: skip
            return None

    async def _refuse(self, key: ClientKey, limit: str, used: int, reset_s: float,
                      requests: tuple[int, float] | None, tokens: tuple[int, float] | None) -> Refusal:  # fmt: skip
        """A refusal with every header the key's limits call for (reads the windows not read yet: the slow path)."""
        store = self.store
        if key.rpm and requests is None:
            requests = await store.used(_name(key, "rpm"), MINUTE_S)
        if key.tpm and tokens is None:
            tokens = await store.used(_name(key, "tpm"), MINUTE_S)
        retry_s = max(1, math.ceil(reset_s))
        return Refusal(limit, key, used, retry_s, ratelimit_headers(key, requests, tokens))
