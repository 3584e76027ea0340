"""What the end of a call adds to its access-log line and its span, beyond the request itself: what the answer
cost (proxy/pricing.py), what the response cache did, what an admin request changed, and the request's span ended
with the answer's attributes."""

from __future__ import annotations

import time
from typing import Any

from ..observability import AccessRecord
from ..pricing import MICROS, PriceTable
from ..state import RequestState
from ..tracing import Tracing, answer_of, propagated


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")  # latin-1: every byte is a character, none fails


def begin_trace(tracing: Tracing | None, state: RequestState, method: str, path: str, traceparent: bytes | None,
                tracestate: bytes | None) -> None:  # fmt: skip
    """With tracing, the request's server span (the client's valid ``traceparent`` its parent); without, the
    client's valid context kept to be passed upstream unchanged (proxy/relay/_traced.py)."""
    if tracing is not None:
        state.span = tracing.server_span(method, path, traceparent=_text(traceparent), tracestate=_text(tracestate))
    else:
        state.trace = propagated(_text(traceparent), _text(tracestate))


def note_outcome(state: RequestState, rec: AccessRecord, cached: int, prices: PriceTable) -> int | None:
    """The line's ``cache``, ``admin`` and ``cost`` (the table's unit) fields; the answer's cost in micro-units
    (also left in ``state.cost`` for a budget in money), or None when its model is not priced or it told no usage.
    ``cached``: the prompt tokens the provider read from its prompt cache. Sets ``state.completed`` for the cache."""
    state.completed = rec.completed
    if state.cache is not None:
        rec.extra["cache"] = state.cache
    if state.admin is not None:
        rec.extra["admin"] = state.admin
    if not prices or rec.model is None or (rec.prompt_tokens is None and rec.completion_tokens is None):
        return None
    price = prices.of(rec.model)
    if price is None:
        return None
    # A hit is charged nothing, and it cost nothing: no upstream answered it.
    cost = 0 if state.cache == "hit" else price.cost(rec.prompt_tokens or 0, rec.completion_tokens or 0, cached)
    state.cost = cost
    rec.extra["cost"] = cost / MICROS
    return cost


def end_span(state: RequestState, path: str, rec: AccessRecord, kind: str | None, tail: bytes, content_type: bytes,
             first_ns: int) -> None:  # fmt: skip
    """The request's span ends with its response: the first chunk's event at the time the edge saw it go out
    (``first_ns``, monotonic: the Tap's TTFC, so the chunk path pays nothing for it), what the client got, the
    answer's tokens and, when sampled, its id, model and finish reasons (read from the tail once: a span never makes
    the relay parse a stream)."""
    span = state.span
    assert span is not None
    if first_ns and rec.status == 200:  # as the TTFC metric: the first chunk of an answer, not of an error
        span.first_chunk(time.time_ns() - (time.monotonic_ns() - first_ns))
    answer: dict[str, Any] = {}
    if span.recording and rec.status == 200 and tail:
        answer = answer_of(tail, whole_json=content_type.startswith(b"application/json"))
    error = rec.error or kind
    if error is None and not rec.completed and rec.status:
        error = "client_disconnected"  # the client left before the last byte
    span.end(
        rec.status or None, model=answer.get("model"), input_tokens=rec.prompt_tokens,
        output_tokens=rec.completion_tokens, finish_reasons=answer.get("finish_reasons"), error_type=error,
        response_id=answer.get("id"), route=rec.route if rec.route != path else None,
        attributes={"moonrelay.cache": "hit"} if state.cache == "hit" else None,
    )  # fmt: skip
