"""The stream relay: response bodies that move upstream events to the client, the pump, and the heartbeats."""

from ._heartbeat import Heartbeats
from ._pump import Pump
from ._pump import available as pump_available
from ._relay import PING, NDJSONBody, SSEBody, UsageStrippedNDJSON, UsageStrippedSSE

__all__ = [
    "Heartbeats",
    "NDJSONBody",
    "PING",
    "Pump",
    "SSEBody",
    "UsageStrippedNDJSON",
    "UsageStrippedSSE",
    "pump_available",
]
