"""The plain (ASGI) path's way of knowing whether a request's body was read to the end before the response."""

from __future__ import annotations

from collections.abc import Callable


class BodyWatch:
    """``receive`` that notes when the request's body was read to the end: the plain path's way of telling an
    early response (:func:`proxy.edge.request_body_unread` reads it from h11 on the fast path)."""

    __slots__ = ("_receive", "done")

    def __init__(self, receive: Callable) -> None:
        self._receive = receive
        self.done = False

    async def __call__(self) -> dict:
        message = await self._receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.done = True
        return message


def declares_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a request's headers announce a body."""
    for name, value in headers:
        if (name == b"content-length" and value.strip() != b"0") or name == b"transfer-encoding":
            return True
    return False
