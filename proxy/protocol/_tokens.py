"""Token usage in one shape whatever the protocol reported it in, sans I/O.

The relay charges tokens (``tpm``, budgets, metrics, the access log) from :class:`Usage`; each protocol reads its
own fields into it. Chat completions put ``usage`` at the top level of the response or of the last stream chunk
(OpenAI, with ``stream_options.include_usage``), or inside ``choices[0]`` (Moonshot's streams); cached prompt
tokens are ``prompt_tokens_details.cached_tokens`` (OpenAI), ``cached_tokens`` (Moonshot) or
``prompt_cache_hit_tokens`` (DeepSeek).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Usage:
    """What one request used. ``prompt_tokens`` counts every input token, cached ones included."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # of prompt_tokens: read from the provider's prompt cache
    cache_write_tokens: int = 0  # of prompt_tokens: written to it (Anthropic's cache_creation_input_tokens)
    reasoning_tokens: int = 0  # of completion_tokens

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def count(value: Any) -> int:
    """A token count from JSON: a non-negative integer, else 0."""
    return value if type(value) is int and value > 0 else 0


def chat_usage(obj: Any) -> Usage | None:
    """The usage in a chat-completions response or stream chunk (top level, or in ``choices[0]``), or None."""
    if not isinstance(obj, dict):
        return None
    usage = obj.get("usage")
    if not isinstance(usage, dict):
        choices = obj.get("choices")
        if not (isinstance(choices, list) and choices and isinstance(choices[0], dict)):
            return None
        usage = choices[0].get("usage")
        if not isinstance(usage, dict):
            return None
    return usage_from_chat(usage)


def usage_from_chat(usage: dict[str, Any]) -> Usage:
    """A chat ``usage`` object as :class:`Usage`."""
    details = usage.get("prompt_tokens_details")
    cached = count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    cached = cached or count(usage.get("cached_tokens")) or count(usage.get("prompt_cache_hit_tokens"))
    out = usage.get("completion_tokens_details")
    return Usage(
        prompt_tokens=count(usage.get("prompt_tokens")),
        completion_tokens=count(usage.get("completion_tokens")),
        cached_tokens=cached,
        reasoning_tokens=count(out.get("reasoning_tokens")) if isinstance(out, dict) else 0,
    )
