"""The OpenTelemetry SDK's own log lines (export failures, a full queue) as the relay's, rate-limited."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("moonrelay")


class SDKLines(logging.Handler):
    """The SDK's warnings and errors as the relay's own log lines, each kind at most once per ``every_s`` (a dead
    collector fails every batch) with the count of those held back."""

    def __init__(self, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(logging.WARNING)
        self.every_s = every_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        key = f"{record.name}:{record.msg}"  # the message before its arguments: one per kind of line
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.every_s:
            self._held[key] = self._held.get(key, 0) + 1
            return
        if len(self._last) > 1000:
            self._last.clear()
        self._last[key] = now
        held = self._held.pop(key, 0)
        more = f" ({held} more like it in the last {self.every_s:.0f} s)" if held else ""
        log.warning("tracing: %s%s", record.getMessage(), more)


_installed = threading.Lock()


def relay_sdk_log_lines() -> None:
    """Route the ``opentelemetry`` loggers through :class:`SDKLines`, once per process."""
    with _installed:
        logger = logging.getLogger("opentelemetry")
        if not any(isinstance(h, SDKLines) for h in logger.handlers):
            logger.addHandler(SDKLines())
            logger.propagate = False
