"""HTTP/1.1 chunked transfer coding, decoded incrementally, sans I/O: bytes in, body bytes out.

Why not h11 for the body: the relay reads every streamed upstream response through it, and h11's
``next_event`` (an event object, the state machine and a regex per chunk) was 8.6 % of the relay's
CPU in a py-spy profile at 1,000 streams. h11 still parses the status line and headers; this only
takes over once they are in, for ``Transfer-Encoding: chunked`` bodies.
"""

from __future__ import annotations

import re

MAX_LINE = 4096  # a chunk-size line or a trailer line; h11's own limit for the whole head is larger
_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


class ChunkedError(ValueError):
    """The bytes are not valid chunked coding."""


class ChunkedDecoder:
    """``feed(data)`` returns the body bytes ``data`` completed; ``done`` once the last chunk and trailers are in.

    Bytes after the end (``leftover``) belong to no response of ours: a connection with any is not reused.
    """

    __slots__ = ("_buf", "_left", "_crlf", "_trailer", "done", "leftover")

    def __init__(self) -> None:
        self._buf = b""
        self._left = 0  # data bytes still to come in the current chunk
        self._crlf = False  # the CRLF after a chunk's data is due
        self._trailer = False  # past the last chunk: trailer lines until an empty one
        self.done = False
        self.leftover = b""

    def feed(self, data: bytes) -> bytes:
        if self.done:
            self.leftover += data
            return b""
        buf = self._buf + data if self._buf else data
        out: list[bytes] = []
        pos = 0
        end = len(buf)
        while pos < end:
            if self._left:
                take = min(self._left, end - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self._left -= take
                if self._left:
                    break
                self._crlf = True
            if self._crlf:
                if end - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise ChunkedError("chunk data not followed by CRLF")
                pos += 2
                self._crlf = False
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                if end - pos > MAX_LINE:
                    raise ChunkedError("chunk-size or trailer line too long")
                break
            line = buf[pos:nl]
            pos = nl + 2
            if self._trailer:
                if not line:
                    self.done = True
                    self.leftover = buf[pos:]
                    pos = end
                    break
                continue
            size = line.split(b";", 1)[0].strip(b" \t")
            if _SIZE.fullmatch(size) is None:
                raise ChunkedError(f"bad chunk-size line {line[:40]!r}")
            self._left = int(size, 16)
            if not self._left:
                self._trailer = True
        self._buf = buf[pos:] if pos < end else b""
        if len(out) == 1:
            return out[0]
        return b"".join(out)
