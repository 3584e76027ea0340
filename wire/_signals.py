"""Stop signals: SIGINT and SIGTERM both mean "stop serving, cleanly"."""

from __future__ import annotations

import signal

import trio

__all__ = ["STOP_SIGNALS", "wait_for_stop_signal"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def wait_for_stop_signal() -> int:
    """Return the first SIGINT or SIGTERM this process gets from now on (its number).

    Callers that must not miss a signal sent while they start open ``trio.open_signal_receiver(*STOP_SIGNALS)``
    themselves before starting.
    """
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async for signum in signals:
            return signum
    raise AssertionError("unreachable: a signal receiver never ends")  # pragma: no cover
