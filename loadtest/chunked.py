"""The load generator's ``Transfer-Encoding: chunked`` body decoder, sans I/O (RFC 9112 section 7.1).

:mod:`loadtest.client` lets h11 parse a response's head and hands a chunked body to :class:`ChunkedDecoder`;
a :class:`ChunkedError` becomes the client's ``ProtocolError`` there.
"""

from __future__ import annotations

__all__ = ["ChunkedDecoder", "ChunkedError"]

_HEXDIG = b"0123456789abcdefABCDEF"
_MAX_SIZE_DIGITS = 16  # a chunk of 2**64 bytes or more is an attack, not a response


class ChunkedError(Exception):
    """The bytes are not a chunked body (or run past its end)."""


class ChunkedDecoder:
    """Sans-I/O ``Transfer-Encoding: chunked`` body decoder: ``feed(bytes)`` returns the payload bytes.

    Why not h11 for the body: h11 runs its reader, event construction and state machine for every
    HTTP chunk (~30 µs each here); a stream of small SSE events is nothing but chunks. h11 still parses
    the status line and headers; this takes over after them. ``done`` is set by the last-chunk and
    trailer section; bytes after it are a protocol error (we never pipeline).
    """

    __slots__ = ("_buf", "_left", "done")

    _SIZE, _DATA_CRLF, _TRAILERS = 0, -2, -3
    _MAX_LINE = 4096

    def __init__(self) -> None:
        self._buf = b""
        self._left = 0  # > 0: payload bytes left in this chunk; else one of the states above
        self.done = False

    def feed(self, data: bytes) -> bytes:
        buf = self._buf + data if self._buf else data
        out: list[bytes] = []
        pos, n = 0, len(buf)
        while pos < n:
            left = self._left
            if left > 0:
                take = min(left, n - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self._left = left - take or self._DATA_CRLF
            elif left == self._DATA_CRLF:
                if n - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise ChunkedError("chunk data not followed by CRLF")
                pos += 2
                self._left = self._SIZE
            else:
                i = buf.find(b"\r\n", pos)
                if i < 0:
                    if n - pos > self._MAX_LINE:
                        raise ChunkedError("chunk header line too long")
                    break
                line = buf[pos:i]
                pos = i + 2
                if left == self._TRAILERS:
                    if not line:
                        self.done = True
                        if pos != n:
                            raise ChunkedError("bytes after the end of the response")
                        break
                    continue
                # RFC 9112 7.1: chunk-size = 1*HEXDIG, then BWS ";" chunk-ext. int(x, 16) alone would
                # also take "0x1f", "1_0", " +3 " and "-1"; translate() drops the hex digits, so anything
                # left over is not one.
                semi = line.find(b";")
                digits = line if semi < 0 else line[:semi].rstrip(b" \t")
                if not digits or len(digits) > _MAX_SIZE_DIGITS or digits.translate(None, _HEXDIG):
                    raise ChunkedError(f"bad chunk size line {bytes(line[:40])!r}")
                size = int(digits, 16)
                self._left = size if size else self._TRAILERS
        self._buf = buf[pos:] if pos < n else b""
        return b"".join(out) if len(out) != 1 else out[0]
