"""Pass-through request paths, normalised once, sans I/O: raw bytes from the request line in, one
canonical path or a refusal out.

The allow-list, the relay's own routes and the upstream must all see the same path. Matching the
decoded path while sending the raw one lets ``/v1/embeddings/../files`` pass as ``embeddings`` and
reach ``files``, and a URL parser (httpx's) resolves dot segments again on the way out. So:

    raw path ─split on "/"─▶ segments ─percent-decode each─▶ drop "" and ".", ".." pops one
             ─▶ every character in SEGMENT_CHARS? ─▶ "/" + "/".join(segments), under the prefix

Refused (:class:`PathRefused`): a path that is not origin-form, a ``..`` that climbs out of the
prefix (``/v1/``), and a segment that decodes to anything outside ``SEGMENT_CHARS`` — an encoded
``/`` (``%2f``: one segment or two?), a backslash (a separator on some servers), ``%`` (double
encoding: ``%252e`` is ``.`` to a server that decodes twice), ``;`` (path parameters some servers
strip, as in ``..;/``), whitespace, controls and non-ASCII. OpenAI and Moonshot paths (ids, model
names such as ``ft:gpt-4o:org:x``) need none of them. What comes out needs no escaping, so no URL
parser between the relay and the upstream can read it differently.
"""

from __future__ import annotations

import string
from urllib.parse import unquote_to_bytes

# RFC 3986 pchar without pct-encoded and ';': unreserved, sub-delims but ';', ':' and '@'.
SEGMENT_CHARS = frozenset(string.ascii_letters + string.digits + "-._~!$&'()*+,=:@")


class PathRefused(ValueError):
    """A path the relay will not pass on: it leaves the prefix, or its meaning depends on who decodes it."""


def normalise(raw: bytes, prefix: str = "/v1/") -> str:
    """The canonical form of ``raw`` (a request line's path, query excluded), which lies under ``prefix``.

    Raises :class:`PathRefused` for what the module docstring lists.
    """
    if not raw.startswith(b"/"):
        raise PathRefused("The request path must start with '/'.")
    segments: list[str] = []
    for part in raw.split(b"/")[1:]:
        decoded = unquote_to_bytes(part) if b"%" in part else part
        if decoded in (b"", b"."):
            continue
        if decoded == b"..":
            if not segments:
                raise PathRefused("The request path climbs above the root with '..'.")
            segments.pop()
            continue
        try:
            text = decoded.decode("ascii")
        except UnicodeDecodeError:
            raise PathRefused("The request path holds non-ASCII characters.") from None
        if not SEGMENT_CHARS.issuperset(text):
            bad = sorted(set(text) - SEGMENT_CHARS)[0]
            raise PathRefused(f"The request path holds {bad!r} (percent-decoded), which the relay does not pass on.")
        segments.append(text)
    path = "/" + "/".join(segments)
    if not path.startswith(prefix) or len(path) == len(prefix):
        raise PathRefused(f"The request path resolves to {path[:100]!r}, outside {prefix}.")
    return path
