"""The stream relay: response bodies that move upstream events to the client (iterated on the ASGI path, or
relaying themselves with the writer the edge hands them), their usage-metering variants, the bodies for other
protocols' clients (native, translated), their recorded variants (for the response cache), and the heartbeats."""

from ._bodies import PING, NDJSONBody, SSEBody
from ._heartbeat import Heartbeats
from ._metered import MeteredNDJSON, MeteredSSE, UsageStrippedSSE
from ._protocols import ErrorEvent, NativeSSE, TranslatedSSE, reported
from ._recording import Recorder, recorded

__all__ = [
    "ErrorEvent",
    "Heartbeats",
    "MeteredNDJSON",
    "MeteredSSE",
    "NDJSONBody",
    "NativeSSE",
    "PING",
    "Recorder",
    "SSEBody",
    "TranslatedSSE",
    "UsageStrippedSSE",
    "reported",
    "recorded",
]
