"""A response's bytes judged, sans I/O: what :func:`loadtest.session.run_session` reads goes in, the record fills.

:class:`StreamAccounting` turns a streamed body (SSE, read by the load generator's own
:mod:`loadtest.ssereader`, or NDJSON) plus receive times into the record's chunk counts, gaps, relay delays,
usage and verdict; :func:`account_full_body` does the same for a non-streaming body.

A stream is *completed* when the protocol says it ended: HTTP 200, no error event, at least one data
chunk, a chunk with a ``finish_reason``, and its end marker (``[DONE]`` for SSE, the end of the body for
NDJSON). That is all a real provider's stream can show, so it is what goodput counts.

The sim adds a stronger check: it stamps every data chunk ``"sim": {"ns": send time, "seq": k, "of": n}``,
``k`` counting from 0 to ``n - 1`` (:mod:`loadtest.simcontent`). A completed stream whose every chunk carries
a stamp, seq the previous one + 1 from 0, ``n`` chunks in all, is also *verified*: no chunk was lost,
duplicated or reordered on the way. A stamped stream that breaks that rule fails; a completed stream with no
stamp at all is *unverified* (``SessionRecord.unverified``): the target removed the stamps (or is not the
sim), so a lost chunk would go unseen. One chunk may be absent from a verified stream: the usage-only chunk
after the finish chunk, when the client did not ask for usage (``stream_options.include_usage``) and the
target asked for it on the client's behalf and cut it out (the relay does that for a key with token limits).
A non-streaming body is complete when it is one JSON object: HTTP framing (Content-Length or chunked)
already vouches for its end. The error kinds these decide are listed in :mod:`loadtest.session`.

Per chunk it also notes which data chunks carry no output token (a role-only chunk with empty content, the
finish chunk, the usage chunk): ``SessionRecord.empty_chunks``, from which :mod:`loadtest.tokens` works out
per-token figures.
"""

from __future__ import annotations

import json
from typing import Any

from loadtest.record import SessionRecord
from loadtest.ssereader import SSEReader

__all__ = ["DONE", "SEQ_START", "ERROR_DETAIL_BYTES", "StreamAccounting", "account_full_body", "carries_tokens",
           "finish_reason_of", "parsed_stamp", "seq_problem", "sim_send_ns", "sim_stamp"]

DONE = b"[DONE]"
_SIM_KEY = b'"sim"'
_FINISH_KEY = b'"finish_reason"'
_TOKEN_KEYS = (b'"content"', b'"reasoning_content"')
_TOOL_CALLS_KEY = b'"tool_calls"'
_BLANKS = b" \t\r\n"
SEQ_START = 0  # the sim's first seq (loadtest.simcontent.stream_events)
ERROR_DETAIL_BYTES = 300


def _usage_into(rec: SessionRecord, obj: Any) -> None:
    """Moonshot puts usage in ``choices[0].usage`` of the last chunk; OpenAI at the top level."""
    if not isinstance(obj, dict):
        return
    usage = obj.get("usage")
    if not isinstance(usage, dict):
        choices = obj.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            usage = choices[0].get("usage")
    if isinstance(usage, dict):
        p, c = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(p, int):
            rec.prompt_tokens = p
        if isinstance(c, int):
            rec.completion_tokens = c


def _value_at(data: bytes, key: bytes) -> bytes | None:
    """The raw JSON value after the first ``key`` (with its quotes) in ``data``, up to a few bytes; None if absent.

    A byte search instead of ``json.loads``: this runs for every chunk. A quoted key cannot occur inside a JSON
    string (its quotes would be escaped), so the first match is a key.
    """
    i = data.find(key)
    if i < 0:
        return None
    i += len(key)
    n = len(data)
    while i < n and data[i] in _BLANKS:
        i += 1
    if i >= n or data[i] != 0x3A:  # ":"
        return None
    i += 1
    while i < n and data[i] in _BLANKS:
        i += 1
    return data[i : i + 64]


def finish_reason_of(data: bytes) -> str | None:
    """The chunk's ``finish_reason`` when it is set (a string), else None."""
    v = _value_at(data, _FINISH_KEY)
    if not v or v[:1] != b'"':
        return None
    end = v.find(b'"', 1)
    return v[1:end if end > 0 else None].decode("utf-8", "replace") or None


def carries_tokens(data: bytes) -> bool:
    """Whether a chunk carries output: non-empty ``content`` or ``reasoning_content``, or ``tool_calls``."""
    for key in _TOKEN_KEYS:
        v = _value_at(data, key)
        if v and v[:1] == b'"' and v[1:2] != b'"':
            return True
    v = _value_at(data, _TOOL_CALLS_KEY)
    return bool(v) and v[:1] == b"[" and v[1:2] != b"]"


def sim_stamp(data: bytes, i: int) -> tuple[int, int, int] | None:
    """``(ns, seq, of)`` from the ``"sim":{"ns":N,"seq":K,"of":M}`` object at ``data[i:]``.

    Three ``int()`` of byte slices instead of ``json.loads`` of the stamp object (let alone of the whole
    chunk): at 10,000 streams this is the per-chunk path.
    """
    a = data.find(b'"ns":', i)
    b = data.find(b',"seq":', a)
    o = data.find(b',"of":', b)
    e = data.find(b"}", o)
    if a < 0 or b < 0 or o < 0 or e < 0:
        return None
    try:
        return int(data[a + 5 : b]), int(data[b + 7 : o]), int(data[o + 6 : e])
    except ValueError:
        return None


def sim_send_ns(data: bytes) -> int | None:
    """When the sim sent this chunk (its stamp's ``ns``, CLOCK_MONOTONIC), or None for a chunk without a stamp."""
    i = data.find(_SIM_KEY)
    stamp = sim_stamp(data, i) if i >= 0 else None
    return None if stamp is None else stamp[0]


def parsed_stamp(obj: dict) -> tuple[int, int, int] | None:
    sim = obj.get("sim")
    if not isinstance(sim, dict):
        return None
    ns, seq, of = sim.get("ns"), sim.get("seq"), sim.get("of")
    if type(ns) is int and type(seq) is int and type(of) is int:
        return ns, seq, of
    return None


def seq_problem(seq_break: tuple[int, int], seqs: list[int], of: int) -> str:
    """What went wrong with a stream's seqs, in words: ``seq_break`` is the first (seq due, seq received) that
    differed, ``seqs`` every seq received, ``of`` how many the sim announced."""
    due, got = seq_break
    seen: set[int] = set()
    for k in seqs:
        if k in seen:
            return f"duplicate: seq {k} received twice"
        seen.add(k)
    announced = set(range(SEQ_START, SEQ_START + of))
    if seen == announced:
        return f"reordered: seq {got} arrived where {due} was due"
    missing = sorted(announced - seen)
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        listed = ", ".join(map(str, missing[:5]))
        return f"gap: seq {listed}{more} missing (seq {got} arrived where {due} was due)"
    return f"seq {max(seen)} beyond the {of} announced"


class StreamAccounting:
    """Sans-I/O: feed response-body bytes with their receive time; it fills the record.

    Per-chunk cost matters (10,000 streams on two cores shared with the relay and the sim): a chunk
    that carries the sim's stamp and looks whole (``{...}``) is accounted from a byte search plus the
    tiny stamp object; only chunks without a stamp, or that mention ``usage``/``error``, are parsed as
    JSON. The seq check is one comparison per stamped chunk; what went wrong is worked out once, in
    :meth:`verdict`.
    """

    __slots__ = ("rec", "ndjson", "usage_asked", "_sse", "_last_ns", "malformed", "error_event", "_line_buf",
                 "stamped", "_next_seq", "_seq_break", "_seqs", "_finish_seq")

    def __init__(self, rec: SessionRecord, *, ndjson: bool = False, usage_asked: bool = False) -> None:
        self.rec = rec
        self.ndjson = ndjson
        self.usage_asked = usage_asked  # the request asked for stream usage: its usage chunk is owed
        self._sse = SSEReader()
        self._line_buf = b""
        self._last_ns = 0
        self.malformed: str | None = None
        self.error_event: str | None = None
        self.stamped = 0  # data chunks that carried the sim's stamp
        self._next_seq = SEQ_START
        self._seq_break: tuple[int, int] | None = None  # the first (seq due, seq received) that differed
        self._seqs: list[int] | None = None  # every seq received, kept only once one was out of line
        self._finish_seq: int | None = None  # the stamp seq of the chunk that carried the finish_reason

    def feed(self, data: bytes, t_ns: int) -> None:
        rec = self.rec
        rec.bytes += len(data)
        if self.ndjson:
            buf = self._line_buf + data if self._line_buf else data
            lines = buf.split(b"\n")
            self._line_buf = lines.pop()
            for line in lines:
                line = line.strip()
                if line:
                    self._chunk(line, t_ns)
            return
        for payload in self._sse.feed(data):  # comments and events without data give none
            if payload == DONE:
                if rec.done:
                    self._bad("second [DONE]")
                rec.done = True
                continue
            if rec.done:
                self._bad("data after [DONE]")
                continue
            self._chunk(payload, t_ns)

    def end(self, t_ns: int) -> None:
        """The body ended cleanly: flush an unterminated last NDJSON line."""
        if self.ndjson and self._line_buf.strip():
            self._chunk(self._line_buf.strip(), t_ns)
            self._line_buf = b""
        elif not self.ndjson and self._sse.pending.strip():
            self._bad("unterminated event at end of stream")

    def _bad(self, why: str) -> None:
        if self.malformed is None:
            self.malformed = why

    def _chunk(self, data: bytes, t_ns: int) -> None:
        rec = self.rec
        i = data.find(_SIM_KEY)
        slow = i < 0 or data[:1] != b"{" or data[-1:] != b"}" or b'"error"' in data
        obj: Any = None
        if slow:
            try:
                obj = json.loads(data)
            except ValueError:
                self._bad(f"chunk is not JSON: {bytes(data[:80])!r}")
                return
            if isinstance(obj, dict) and obj.get("error") is not None:
                if self.error_event is None:
                    self.error_event = json.dumps(obj["error"])[:ERROR_DETAIL_BYTES]
                return
            if not isinstance(obj, dict):
                self._bad("chunk is not a JSON object")
                return
        index = rec.chunks
        rec.chunks += 1
        if rec.first_chunk_ns is None:
            rec.first_chunk_ns = t_ns
        else:
            rec.gaps_ms.append((t_ns - self._last_ns) / 1e6)
        self._last_ns = t_ns
        if not carries_tokens(data):
            rec.empty_chunks.append(index)
        finish = finish_reason_of(data)
        if finish is not None:
            rec.finish_reason = finish
        if i >= 0:
            stamp = sim_stamp(data, i) if obj is None else parsed_stamp(obj)
            if stamp is None and obj is None:  # not the sim's compact bytes (a peer re-serialised them)
                try:
                    obj = json.loads(data)
                except ValueError:
                    self._bad(f"chunk is not JSON: {bytes(data[:80])!r}")
                    return
                stamp = parsed_stamp(obj) if isinstance(obj, dict) else None
            if stamp is not None:
                ns, seq, of = stamp
                self.stamped += 1
                rec.relay_delay_ms.append((t_ns - ns) / 1e6)
                if seq != self._next_seq or self._seqs is not None:
                    self._out_of_line(seq)
                self._next_seq = seq + 1
                if finish is not None:
                    self._finish_seq = seq
                if rec.expected_chunks is None or of > rec.expected_chunks:
                    rec.expected_chunks = of
        if b'"usage"' in data:
            if obj is None:
                try:
                    obj = json.loads(data)
                except ValueError:
                    self._bad("chunk with usage is not JSON")
                    return
            _usage_into(rec, obj)

    def _out_of_line(self, seq: int) -> None:
        """Keep every seq from the first one out of line on (rare: a healthy stream never comes here)."""
        if self._seqs is None:
            self._seq_break = (self._next_seq, seq)
            self._seqs = list(range(SEQ_START, self._next_seq))
        self._seqs.append(seq)

    def _seq_problem(self) -> str:
        assert self._seq_break is not None and self._seqs is not None
        return seq_problem(self._seq_break, self._seqs, self.rec.expected_chunks or 0)

    def _only_unasked_usage_missing(self, expected: int) -> bool:
        """The one chunk missing is the last announced, it came after the finish chunk, and the client did not ask
        for usage: the usage-only chunk a target asked for on the client's behalf and cut out (seqs in order)."""
        return (not self.usage_asked and self.rec.chunks == expected - 1 and self._next_seq == expected - 1
                and self._finish_seq == expected - 2)

    def verdict(self) -> tuple[str | None, str | None]:
        """``(error kind, detail)`` of a stream that ended cleanly, ``(None, None)`` when it did not fail.

        Sets ``rec.unverified`` for a completed stream without a stamp; sets ``rec.done`` for NDJSON, whose
        clean end is its [DONE].
        """
        rec = self.rec
        n, stamped = rec.chunks, self.stamped
        if self._seq_break is not None:
            return "bad_seq", self._seq_problem()
        if stamped and stamped < n:
            return "unstamped", f"{n - stamped} of {n} data chunks without the sim's stamp"
        expected = rec.expected_chunks
        if expected is not None and n < expected and not self._only_unasked_usage_missing(expected):
            return "missing_chunks", f"{n} of {expected} chunks"
        if expected is not None and n > expected:
            return "extra_chunks", f"{n} chunks, {expected} announced"
        if self.ndjson:
            rec.done = True
        elif not rec.done:
            return "no_done", f"{n} chunks, no [DONE]"
        if n == 0:
            return "empty_stream", "no data chunk before the end of the stream"
        if rec.finish_reason is None:
            return "no_finish_reason", f"{n} chunks, none with a finish_reason"
        if not stamped:
            rec.unverified = True
        return None, None


def account_full_body(rec: SessionRecord, body: bytes) -> str | None:
    """A non-stream ``chat.completion`` body; returns an error kind or None."""
    try:
        obj = json.loads(body)
    except ValueError:
        rec.error_detail = f"body is not JSON: {body[:80]!r}"
        return "malformed"
    if not isinstance(obj, dict):
        return "malformed"
    if obj.get("error") is not None:
        rec.error_detail = json.dumps(obj["error"])[:ERROR_DETAIL_BYTES]
        return "error_event"
    rec.chunks = 1
    rec.done = True
    choices = obj.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        reason = choices[0].get("finish_reason")
        rec.finish_reason = reason if isinstance(reason, str) else None
    stamp = obj.get("sim")
    if isinstance(stamp, dict) and isinstance(stamp.get("ns"), int) and rec.first_chunk_ns is not None:
        rec.relay_delay_ms.append((rec.first_chunk_ns - stamp["ns"]) / 1e6)
    _usage_into(rec, obj)
    return None
