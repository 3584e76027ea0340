"""Where loadtest/session.py imports the SSE splitter from, until the load generator has its own reader (issue 14
item 6, another branch); then this module goes. The relay's own code imports ``proxy.protocol``."""

from .protocol import EventSplitter, event_data

__all__ = ["EventSplitter", "event_data"]
