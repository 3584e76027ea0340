"""One request's state across the relay's layers: one slotted object under one ASGI scope key.

The edge (:class:`proxy.edge.Observer`) makes it when a call begins and reads it when the call ends (the log line,
the metrics); the relay's views fill it in (route, upstream, model), admission keeps the slots it took in it
(:class:`proxy.relay.Streams`), a usage-stripping body leaves the chunk it cut, a client key with limits leaves its
admission (settled with the request's charge when the call ends, by ``Streams``) or the limit it hit, and the body
its usage meter. The layers below the edge see the edge's part only as :class:`Tap`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .limits import Admission, Charge
    from .protocol import UsageMeter

STATE = "moonrelay"  # the ASGI scope key of the request's RequestState
UNMATCHED = "unmatched"  # the route of a request no URL rule matched


class Tap(Protocol):
    """What a body tells the edge of the pieces it writes to the client itself."""

    gone: bool  # a write found the client gone (the body then ends as if complete)

    def seen(self, body: bytes) -> None: ...


class HeldSlot(Protocol):
    """Where a call's upstream concurrency slot goes back to (:class:`proxy.routing.Upstream`)."""

    async def give_back(self, token: str) -> None: ...


class StreamingBody(Protocol):
    """A body being streamed, which a drain can end early (:class:`proxy.stream.SSEBody`)."""

    def interrupt(self, reason: str) -> None: ...


@dataclass(slots=True, eq=False)
class RequestState:
    tap: Tap | None = None  # the edge's observer of the response as it goes out
    route: str = UNMATCHED  # the Quart URL rule that matched (set by a before_request hook)
    upstream: str | None = None  # the name of the upstream the request was routed to
    model: str | None = None  # the model a chat request named (set by the view once it read the body)
    stripped_usage: bytes | None = None  # the usage chunk cut out of a stream (proxy.protocol), for the log
    admitted: bool = False  # the call holds one of the worker's stream slots
    upstream_slot: HeldSlot | None = None  # the upstream whose max_concurrent slot the call holds
    upstream_lease: str | None = None  # that slot's lease (Upstream.take)
    body: StreamingBody | None = None  # the streaming body being sent, if any
    client: Admission | None = None  # the client key's slot and windows, settled when the call ends
    charge: Charge | None = None  # a key that counts tokens: the request's reserve and its charge
    meter: UsageMeter | None = None  # the usage and events the answer told as it went by
    limited: tuple[str, str] | None = None  # (limit, key label) of a request refused by its client key's limits
