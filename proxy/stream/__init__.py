"""The stream relay: response bodies that move upstream events to the client, the pump, and the heartbeats."""

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
