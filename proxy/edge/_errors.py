"""The relay's errors (:mod:`proxy.errors`) rendered once, here, in the shape of the protocol the client speaks:
OpenAI's ``{"error": ...}`` (chat completions, pass-through, the relay's own routes), one NDJSON line on the
seed's route, Anthropic Messages' and OpenAI Responses' own error bodies on theirs."""

from __future__ import annotations

import json

from quart import Response

from ..errors import RelayError
from ..protocol import JSON
from ..protocol.messages import messages_error
from ..protocol.responses import responses_error

NDJSON_ROUTE = "/chat/completions"  # the seed's browser format
MESSAGES_PREFIX = "/v1/messages"
RESPONSES_PREFIX = "/v1/responses"


def protocol_of(path: str) -> str:
    """Which error shape a request's client reads: ``chat``, ``ndjson``, ``messages`` or ``responses``."""
    if path == NDJSON_ROUTE:
        return "ndjson"
    if path.startswith(MESSAGES_PREFIX):
        return "messages"
    if path.startswith(RESPONSES_PREFIX):
        return "responses"
    return "chat"


def render(exc: RelayError, path: str) -> Response:
    """The response for ``exc`` to a request for ``path``."""
    protocol = protocol_of(path)
    if protocol == "messages":
        status, headers, body = messages_error(exc.status, exc.code, str(exc), exc.retry_after)
        return Response(body, status=status, headers={**exc.headers, **headers})
    if protocol == "responses":
        status, headers, body = responses_error(exc.status, exc.code, str(exc), exc.retry_after, type_=exc.type)
        return Response(body, status=status, headers={**exc.headers, **headers})
    text = json.dumps(exc.body())
    if protocol == "ndjson":
        return Response(text + "\n", status=exc.status, content_type="application/x-ndjson",
                        headers=exc.response_headers())  # fmt: skip
    return Response(text, status=exc.status, content_type=JSON, headers=exc.response_headers())
