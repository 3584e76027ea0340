"""The stream relay: response bodies that move upstream events to the client, and the heartbeats."""

from ._heartbeat import Heartbeats
from ._relay import PING, NDJSONBody, SSEBody, UsageStrippedNDJSON, UsageStrippedSSE

__all__ = [
    "Heartbeats",
    "NDJSONBody",
    "PING",
    "SSEBody",
    "UsageStrippedNDJSON",
    "UsageStrippedSSE",
]
