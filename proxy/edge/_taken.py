"""Which fast paths ran and which fell back, for the contract test (tests/relay/functional/test_fast_paths.py).

Counted per connection or per response (never per chunk): an attribute increment each. A fallback is the
slow path already, so it names its reason in ``FALLBACKS``.
"""

from __future__ import annotations

from collections import Counter


class Taken:
    """How many times each fast path was taken in this process."""

    __slots__ = (
        "own_connection",  # our TCPServer served a connection
        "own_read_loop",  # ... reading the socket's fd itself (it sees the client's EOF at once)
        "idle_close",  # ... closed by its keep-alive deadline (no timer task per request)
        "direct_app_call",  # hypercorn called the app's outer layer itself (no ASGIWrapper)
        "raw_write",  # one of hypercorn's writes went out with one os.write
        "inline_call",  # a request handled in the calling task, its body read inline
        "direct_writer",  # a streamed body written straight to the socket
        "own_chunked",  # ... with our chunked framing
        "deferred_tail",  # ... its last piece carried by hypercorn's terminator write
        "light_context",  # a request on a static route handled under a lighter Quart request context
        "whole_response",  # a response with its whole body at hand: head and body in one write
        "early_close",  # a response sent before its request body was read says ``connection: close``
    )

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def snapshot(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


TAKEN = Taken()
FALLBACKS: Counter[str] = Counter()  # reason -> count: a fast path that was wanted here and not taken
