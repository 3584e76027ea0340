"""The upstream transport: HTTP/1.1 over h11 under httpx (a pooled connection per request, the request written with
one write, the body read per socket read with its deadlines kept by one watchdog task per transport), and the pump
that relays directly written streams from one task per worker."""

from ._connection import HEARTBEAT, READER, SHUTDOWN, Interrupted, Timeouts
from ._pool import H11Transport
from ._pump import RESUME, WOKEN, Pump
from ._pump import available as pump_available
from ._response import IteratorReader, ResponseStream, read_body, reader

__all__ = [
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
    "pump_available",
    "read_body",
    "reader",
]
