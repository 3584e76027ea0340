"""TODO: what this package holds."""

from ._connection import HEARTBEAT, READER, SHUTDOWN, Connection, Interrupted, Timeouts
from ._pool import H11Transport
from ._pump import RESUME, WOKEN, Pump, available
from ._pump import available as pump_available
from ._response import IteratorReader, ResponseStream, reader

__all__ = [
    "Connection",
    "H11Transport",
    "HEARTBEAT",
    "Interrupted",
    "IteratorReader",
    "Pump",
    "READER",
    "RESUME",
    "ResponseStream",
    "SHUTDOWN",
    "Timeouts",
    "WOKEN",
    "available",
    "pump_available",
    "reader",
]
