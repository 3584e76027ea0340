"""Each upstream attempt under the request's trace: a CLIENT span per attempt when the relay traces (retries, key
rotation, deployments and fallbacks are sibling attempts), its ``traceparent`` sent with the request; without
tracing, the client's own valid ``traceparent``/``tracestate`` passed upstream unchanged (W3C Trace Context: a proxy
propagates the context even when it takes no part in the trace).

The attempt that may go out again ends when its answer says so: a transport error (its kind) or a 429, 502 or 503
(its status; the request may then be retried or moved). Any other answer is the one relayed, and its span ends with
the request's (the stream's last byte, an error, or the client leaving: proxy.tracing.ServerSpan.end).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx

from ..errors import upstream_failure
from ..protocol import RETRY_STATUSES
from ..routing import Key, Upstream
from ..state import RequestState

Attempt = Callable[[Key | None], Awaitable[httpx.Response]]


def traced(state: RequestState, upstream: Upstream, method: str, path: str, body: bytes | None,
           stream: bool) -> Attempt:  # fmt: skip
    """One attempt of ``state``'s chat request at ``upstream`` (``Upstream.send``), under its trace."""
    return traced_send(state, upstream, path,
                       lambda key, trace: upstream.send(method, path, body, stream=stream, key=key, trace=trace))


def traced_send(state: RequestState, upstream: Upstream, path: str,
                send: Callable[[Key | None, dict[str, str] | None], Awaitable[httpx.Response]]) -> Attempt:  # fmt: skip
    """``send(key, trace_headers)`` as one attempt of ``state``'s request to ``upstream`` (``path``: below its
    base URL, for the span)."""
    span = state.span
    if span is None:
        headers = state.trace
        return lambda key: send(key, headers)
    url = upstream.base + path

    async def attempt(key: Key | None) -> httpx.Response:
        handle = span.attempt(upstream.name, url)
        try:
            response = await send(key, handle.headers)
        except httpx.TransportError as exc:
            handle.end(error_type=upstream_failure(exc).code)
            raise
        except BaseException:
            handle.end(error_type="cancelled")
            raise
        status = response.status_code
        handle.answered(status)
        if status == 429 or status in RETRY_STATUSES:
            handle.end(status)  # it may go out again: this attempt's span ends with its answer
        return response

    return attempt
