"""One request's state across the relay's layers: one slotted object under one ASGI scope key.

The observability shell (:class:`proxy.observability.Observer`) makes it when a call begins and reads it when the
call ends (the log line, the metrics); the relay's views fill it in (route, upstream, model), admission keeps
the slots it took in it (:class:`proxy.app.Streams`), a usage-stripping body leaves the chunk it cut, a client key
with limits leaves its admission (settled with the request's charge when the call ends, by ``Streams``) or the limit
it hit, and the body its usage meter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

STATE = "moonrelay"  # the ASGI scope key of the request's RequestState
UNMATCHED = "unmatched"  # the route of a request no URL rule matched


@dataclass(slots=True, eq=False)
class RequestState:
    tap: Any = None  # proxy.observability.Tap: the response as it goes out
    route: str = UNMATCHED  # the Quart URL rule that matched (set by a before_request hook)
    upstream: str | None = None  # the name of the upstream the request was routed to
    model: str | None = None  # the model a chat request named (set by the view once it read the body)
    stripped_usage: bytes | None = None  # the usage chunk cut out of a stream (proxy.protocol), for the log
    admitted: bool = False  # the call holds one of the worker's stream slots
    upstream_slot: Any = None  # the proxy.upstream.Upstream whose max_concurrent slot the call holds
    upstream_lease: str | None = None  # that slot's lease (Upstream.take)
    body: Any = None  # the streaming body being sent (proxy.stream.SSEBody), if any
    client: Any = None  # proxy.limits.Admission: the client key's slot and windows, settled when the call ends
    charge: Any = None  # proxy.limits.Charge: a key that counts tokens: the request's reserve and its charge
    meter: Any = None  # proxy.protocol.UsageMeter: the usage and events the answer told as it went by
    limited: tuple[str, str] | None = None  # (limit, key label) of a request refused by its client key's limits
