"""The stream relay: response bodies that move upstream events to the client (iterated on the ASGI path, or
relaying themselves with the writer the edge hands them), their usage-metering variants, and the heartbeats."""

from ._bodies import PING, NDJSONBody, SSEBody
from ._heartbeat import Heartbeats
from ._metered import MeteredNDJSON, MeteredSSE, UsageStrippedSSE

__all__ = [
    "Heartbeats",
    "MeteredNDJSON",
    "MeteredSSE",
    "NDJSONBody",
    "PING",
    "SSEBody",
    "UsageStrippedSSE",
]
