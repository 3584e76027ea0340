"""HTTP/1.1 chunked transfer coding (RFC 9112 section 7.1), sans I/O: framing out, decoding in, bytes only.

Why not h11 for chunk bodies: h11 runs its reader, an event object and its state machine for every HTTP
chunk, and a stream of small SSE events is nothing but chunks. h11 still parses the status line and headers;
the decoder takes over once they are in. Both the relay (reading its upstream) and the load generator (reading
the relay) use :class:`ChunkedDecoder`; each maps :class:`ChunkedError` to its own error at its boundary.
"""

from __future__ import annotations

import re

__all__ = ["ChunkedDecoder", "ChunkedError", "chunk_frame"]

MAX_LINE = 4096  # a chunk-size line or a trailer line
# chunk-size [BWS ";" chunk-ext]: 1 to 16 hex digits (a chunk of 2**64 bytes or more is an attack, not a
# response); the extensions are ignored.
_size_line = re.compile(rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;.*)?", re.DOTALL).fullmatch
# Decoder states besides "> 0: payload bytes left in this chunk".
_SIZE, _DATA_CRLF, _TRAILERS = 0, -2, -3


def chunk_frame(data: bytes) -> bytes:
    """``data`` as one chunk: the same bytes h11's ``send(Data)`` writes under chunked framing.

    The relay's per-chunk write (proxy/edge/_direct.py) inlines this expression instead of calling it:
    a call per chunk is work the benchmark sees. Keep the two equal (tests/wire/test_wire.py checks the bytes).
    """
    return b"%x\r\n%b\r\n" % (len(data), data)


class ChunkedError(ValueError):
    """The bytes are not valid chunked coding."""


class ChunkedDecoder:
    """``feed(data)`` returns the body bytes ``data`` completed; ``done`` once the last chunk and trailers are in.

    A chunk-size is 1 to 16 hex digits, then optional whitespace and ``;`` extensions (ignored), as RFC 9112
    allows and nothing else: ``int(x, 16)`` alone would also take ``0x1f``, ``1_0``, `` +3`` and ``-1``.
    Bytes after the end are kept in ``leftover`` (and later feeds add to it): they belong to no response,
    so the caller treats them as its protocol requires (the relay does not reuse the connection, the load
    generator fails the response).
    """

    __slots__ = ("_buf", "_left", "done", "leftover")

    def __init__(self) -> None:
        self._buf = b""
        self._left = _SIZE  # > 0: payload bytes left in this chunk; else one of the states above
        self.done = False
        self.leftover = b""

    def feed(self, data: bytes) -> bytes:
        if self.done:
            self.leftover += data
            return b""
        if self._left == _SIZE and not self._buf:
            # The usual read: exactly one whole chunk (a relayed event as the upstream framed it).
            i = data.find(b"\r\n", 0, MAX_LINE)
            if i > 0:
                m = _size_line(data[:i])
                if m is not None:
                    end = i + 2 + int(m[1], 16)
                    if end > i + 2 and len(data) == end + 2 and data.endswith(b"\r\n"):
                        return data[i + 2 : end]
        buf = self._buf + data if self._buf else data
        out: list[bytes] = []
        pos, n = 0, len(buf)
        while pos < n:
            left = self._left
            if left > 0:
                take = min(left, n - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self._left = left - take or _DATA_CRLF
            elif left == _DATA_CRLF:
                if n - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise ChunkedError("chunk data not followed by CRLF")
                pos += 2
                self._left = _SIZE
            else:
                i = buf.find(b"\r\n", pos)
                if i < 0:
                    if n - pos > MAX_LINE:
                        raise ChunkedError("chunk-size or trailer line too long")
                    break
                line = buf[pos:i]
                pos = i + 2
                if left == _TRAILERS:
                    if not line:
                        self.done = True
                        self.leftover = buf[pos:]
                        pos = n
                        break
                    continue
                m = _size_line(line)
                if m is None:
                    raise ChunkedError(f"bad chunk size line {bytes(line[:40])!r}")
                size = int(m[1], 16)
                self._left = size if size else _TRAILERS
        self._buf = buf[pos:] if pos < n else b""
        return b"".join(out) if len(out) != 1 else out[0]
