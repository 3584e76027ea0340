"""CORS, sans I/O: which origins may call the relay from a browser, and the headers that say so.

``--cors-origins`` is a comma-separated list of origins (``https://app.example.com``), ``*`` for
any, or empty (the default) for none: a page served by the relay itself (``GET /``) is same-origin
and needs no CORS. Preflights (``OPTIONS`` with ``Access-Control-Request-Method``) are answered
before authentication: a browser never sends credentials on them.
"""

from __future__ import annotations

ALLOW_METHODS = b"GET, POST, OPTIONS"
ALLOW_HEADERS = b"authorization, content-type, x-request-id"
EXPOSE_HEADERS = (
    b"x-request-id, x-moonrelay-upstream, retry-after, x-ratelimit-remaining-requests, x-ratelimit-remaining-tokens"
)
MAX_AGE_S = b"600"


class CORSPolicy:
    def __init__(self, origins: str | None) -> None:
        items = [o.strip().rstrip("/") for o in (origins or "").split(",") if o.strip()]
        self.any = "*" in items
        self.origins = frozenset(o.lower() for o in items if o != "*")

    @property
    def enabled(self) -> bool:
        return self.any or bool(self.origins)

    def allows(self, origin: bytes | None) -> bool:
        if origin is None or not self.enabled:
            return False
        return self.any or origin.decode("latin-1").lower() in self.origins

    def response_headers(self, origin: bytes) -> list[tuple[bytes, bytes]]:
        """Added to every response to an allowed origin (the caller checked :meth:`allows`)."""
        return [
            (b"access-control-allow-origin", origin),
            (b"access-control-expose-headers", EXPOSE_HEADERS),
            (b"vary", b"Origin"),
        ]

    def preflight(self, origin: bytes | None, requested_headers: bytes | None) -> tuple[int, list[tuple[bytes, bytes]]]:
        """Status and headers for an ``OPTIONS`` preflight: 204 for an allowed origin, 403 otherwise."""
        if not self.allows(origin):
            return 403, [(b"vary", b"Origin"), (b"content-length", b"0")]
        assert origin is not None
        headers = self.response_headers(origin) + [
            (b"access-control-allow-methods", ALLOW_METHODS),
            # Echo what the browser asked for: the relay reads only the headers it knows anyway.
            (b"access-control-allow-headers", requested_headers or ALLOW_HEADERS),
            (b"access-control-max-age", MAX_AGE_S),
            (b"content-length", b"0"),
        ]
        return 204, headers
