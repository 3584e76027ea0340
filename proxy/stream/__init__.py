"""The stream relay: response bodies that move upstream events to the client, the pump, and the heartbeats."""

from ._heartbeat import Heartbeats
from ._metered import MeteredNDJSON, MeteredSSE, UsageStrippedSSE
from ._pump import Pump
from ._pump import available as pump_available
from ._relay import PING, NDJSONBody, SSEBody

__all__ = [
    "Heartbeats",
    "MeteredNDJSON",
    "MeteredSSE",
    "NDJSONBody",
    "PING",
    "Pump",
    "SSEBody",
    "UsageStrippedSSE",
    "pump_available",
]
