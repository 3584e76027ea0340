"""Per-token figures of completed sessions, sans I/O: what a user sees per token, not per chunk.

A chunk may carry several tokens, so per-chunk gaps (``gap_ms``) understate or overstate what a reader of the
stream waits per token. Each completed streamed session gives:

- its **output tokens**: the upstream's ``usage.completion_tokens`` when the stream carried usage (source
  ``usage``), else one per data chunk that carried output (non-empty ``content`` or ``reasoning_content``, or
  ``tool_calls``; source ``chunks``, exact where a chunk is one token, as providers stream by default). A session
  without usage is still counted, and the summary says how many were;
- **TTFT**: from the intended start to the first chunk that carried output (a role-only first chunk with empty
  content, as OpenAI sends it, is not a token; TTFC counts any first data chunk);
- **TPOT** (time per output token): from the first to the last chunk with output, divided by the tokens after
  the first such chunk. With ``r = tokens / chunks with output`` (tokens spread evenly over those chunks), that is
  ``span / (tokens - r)``: ``span / (tokens - 1)``, vLLM's definition, where each chunk is one token;
- **ITL** (inter-token latency) per token: each gap between two chunks with output, shared by the ``r`` tokens
  the later one carried (``gap / r``, weight ``r``); pooled over every token of every session, so the
  token-weighted mean ITL equals the sessions' TPOT;
- **tokens/s per stream**: output tokens over the session's end-to-end time.

Overall output tokens/s divides every completed session's output tokens by the target's measured window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from loadtest.quantiles import percentiles, weighted_percentiles
from loadtest.record import SessionRecord

__all__ = ["SessionTokens", "session_tokens", "token_summary"]


@dataclass(frozen=True, slots=True)
class SessionTokens:
    tokens: int
    source: str  # "usage" or "chunks"
    ttft_ms: float | None
    tpot_ms: float | None
    itl: list[tuple[float, float]]  # (ms per token, tokens) for each gap between chunks with output
    tokens_per_s: float | None


def _output_times(rec: SessionRecord) -> list[int]:
    """Receive times (ns) of the data chunks that carried output."""
    first = rec.first_chunk_ns
    if first is None:
        return []
    empty = set(rec.empty_chunks)
    out = [] if 0 in empty else [first]
    t = float(first)
    for i, gap in enumerate(rec.gaps_ms, 1):
        t += gap * 1e6
        if i not in empty:
            out.append(round(t))
    return out


def session_tokens(rec: SessionRecord) -> SessionTokens | None:
    """The per-token figures of one completed session; None for a failed one or one with no output at all."""
    if not rec.completed:
        return None
    times = _output_times(rec) if rec.stream else []
    if rec.completion_tokens is not None:
        tokens, source = rec.completion_tokens, "usage"
    else:
        tokens, source = len(times), "chunks"
    if tokens <= 0:
        return None
    e2e_s = rec.e2e_ms / 1000
    per_s = tokens / e2e_s if e2e_s > 0 else None
    if not rec.stream:
        return SessionTokens(tokens, source, rec.ttfc_ms, None, [], per_s)
    if not times:
        return SessionTokens(tokens, source, None, None, [], per_s)
    r = tokens / len(times)
    ttft = (times[0] - rec.intended_ns) / 1e6
    tpot = (times[-1] - times[0]) / 1e6 / (tokens - r) if len(times) > 1 else None
    itl = [((b - a) / 1e6 / r, r) for a, b in zip(times, times[1:], strict=False)]
    return SessionTokens(tokens, source, ttft, tpot, itl, per_s)


def token_summary(records: Sequence[SessionRecord], window_s: float) -> dict[str, Any]:
    """The ``per_token`` block of a target's summary, over its completed (non-warmup) ``records``."""
    figures = [f for f in map(session_tokens, records) if f is not None]
    total = sum(f.tokens for f in figures)
    sources = {"usage": sum(1 for f in figures if f.source == "usage"),
               "chunks": sum(1 for f in figures if f.source == "chunks")}
    source = ("usage" if sources["usage"] else "chunks") if not (sources["usage"] and sources["chunks"]) else "mixed"
    itl = weighted_percentiles(pair for f in figures for pair in f.itl)
    itl["count"] = round(itl["count"])  # tokens: whole, though each weight is a share of a chunk
    return {
        "sessions": len(figures),
        "output_tokens": total,
        "source": source if figures else None,
        "sessions_by_source": sources,
        "output_tokens_per_s": total / window_s if window_s > 0 else None,
        "tokens_per_session": percentiles(f.tokens for f in figures),
        "ttft_ms": percentiles(f.ttft_ms for f in figures if f.ttft_ms is not None),
        "tpot_ms": percentiles(f.tpot_ms for f in figures if f.tpot_ms is not None),
        "itl_ms": itl,
        "stream_tokens_per_s": percentiles(f.tokens_per_s for f in figures if f.tokens_per_s is not None),
    }

