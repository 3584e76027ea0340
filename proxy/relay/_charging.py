"""A client key's tokens on the request path: the reserve held once the request's body is read, and the status
that decides what the request is charged (proxy/limits/_charge.py). The charge is settled when the call ends, with
the call's other holds (:meth:`proxy.relay.Streams.release`)."""

from __future__ import annotations

from typing import Any

from ..limits import Charge, ClientLimits
from ..state import RequestState


async def reserve(limits: ClientLimits, state: RequestState, route: str, data: dict[str, Any] | None,
                  body_bytes: int, default_output: int) -> None:  # fmt: skip
    """For a client key that counts tokens: the request's :class:`proxy.limits.Charge`, whose reserve is held in the
    key's windows before anything goes upstream; the key's :class:`proxy.limits.Refusal` raised (429) when a window
    filled up since admission. ``route``: the request's path; ``data``: its JSON body, if any; ``body_bytes``: its
    size."""
    admission = state.client
    if admission is None or not admission.key.counts_tokens:
        return None
    charge = state.charge = Charge.of(route, data, body_bytes, default_output)
    state.meter = charge.meter  # the bodies read usage into it, the access log reads it
    refusal = await limits.reserve(admission, charge.reserve)
    if refusal is None:
        return None
    state.limited = (refusal.limit, admission.key.label)
    charge.status = refusal.status
    admission.headers = refusal.headers  # the windows as the refusal found them
    raise refusal


def answered(state: RequestState, status: int) -> None:
    """The status the client gets: an error status is charged nothing."""
    if state.charge is not None:
        state.charge.status = status
