"""What a request is charged against its client key's token windows (``tpm``, ``budget``), sans I/O.

**The reserve**, held in the windows from admission until the call ends, so that requests admitted meanwhile see
it: the prompt's estimate plus the output asked for.

- The prompt's estimate: the request body's bytes / ``BYTES_PER_TOKEN`` (4, OpenAI's rule of thumb for English; a
  JSON body's keys and quotes only add to it), on the routes that consume tokens (``TOKEN_ROUTES``); 0 elsewhere.
- The output: ``max_completion_tokens``, ``max_tokens`` or ``max_output_tokens`` when the request gives one, times
  ``n`` (chat, completions); else ``--key-reserve-tokens`` (1,024 by default, Moonshot's own ``max_tokens``
  default) on routes that generate (``GENERATING``); 0 elsewhere (embeddings).

**The charge**, which replaces the reserve when the call ends (:meth:`Charge.tokens`):

1. the usage the answer reported, whatever its route, size or framing;
2. else nothing when the answer was an error status (the relay's or the upstream's);
3. else, for a streamed answer (the client left, the upstream broke off or ended without usage): the prompt's
   estimate plus one token per event relayed (OpenAI-compatible upstreams stream about a token per event; the few
   events around them, role, finish and ``[DONE]``, count too);
4. else (not streamed, and no usage: the client left before the answer, or an upstream that reports none): the
   whole reserve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..protocol import UsageMeter

BYTES_PER_TOKEN = 4
DEFAULT_RESERVE_TOKENS = 1024  # output reserved when a request names no maximum (Moonshot's max_tokens default)
# Routes whose requests consume tokens (their prompt is estimated), and those of them that generate output.
GENERATING = frozenset(
    {"/v1/chat/completions", "/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages"}
)
TOKEN_ROUTES = GENERATING | {"/v1/embeddings"}
_MAXIMA = ("max_completion_tokens", "max_tokens", "max_output_tokens")


def _whole(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


def output_reserve(data: dict[str, Any] | None, route: str, default: int) -> int:
    """The output a request may produce: its maximum (times ``n``), else ``default`` on a generating route."""
    asked = None
    if data is not None:
        for name in _MAXIMA:
            asked = _whole(data.get(name))
            if asked is not None:
                break
    if asked is None:
        if route not in GENERATING:
            return 0
        asked = default
    choices = _whole(data.get("n")) if data is not None else None
    return asked * max(1, choices or 1)


def prompt_estimate(body_bytes: int, route: str) -> int:
    return math.ceil(body_bytes / BYTES_PER_TOKEN) if route in TOKEN_ROUTES else 0


@dataclass(slots=True)
class Charge:
    """One request's tokens: its reserve, and what it is charged when the call ends (the module docstring)."""

    prompt: int  # the prompt's estimate
    output: int  # the output reserved
    streamed: bool  # the client asked for a stream
    meter: UsageMeter = field(default_factory=UsageMeter)  # what the answer told as it went by
    status: int | None = None  # the answer's status, once there is one

    @classmethod
    def of(cls, route: str, data: dict[str, Any] | None, body_bytes: int, default_output: int) -> Charge:
        streamed = data is not None and data.get("stream") is True
        return cls(prompt_estimate(body_bytes, route), output_reserve(data, route, default_output), streamed)

    @property
    def reserve(self) -> int:
        return self.prompt + self.output

    def tokens(self) -> int:
        usage = self.meter.usage
        if usage is not None:
            return usage.tokens
        if self.status is not None and self.status >= 400:
            return 0
        if self.streamed:
            return self.prompt + self.meter.events
        return self.reserve

