"""``GET /v1/models`` over several upstreams: every upstream asked at once, their lists merged.

An upstream that fails (unreachable, an HTTP error, an unreadable list, no answer within
:data:`ASK_TIMEOUT_S`) is left out, so that one provider's outage does not hide the others' models;
only when none answered is the answer an error (502). A model listed by several upstreams appears
once, as the first upstream in config order lists it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import httpx
import trio
from quart import Response

from ..errors import UpstreamFailed
from ..protocol import JSON, map_transport_error
from ..routing import AllKeysResting, Upstream, free_key, read_and_close

log = logging.getLogger("moonrelay")
ANTHROPIC_VERSION = b"2023-06-01"  # the Messages API version the relay names when the client named none

# A model list is small and quick; an upstream that takes longer than this is left out, not waited for
# (its first-byte timeout is sized for chat completions: minutes).
ASK_TIMEOUT_S = 10.0


def merge(lists: Sequence[list[dict[str, Any]] | None]) -> list[dict[str, Any]]:
    """The models of every list that came back, in order, each id once."""
    seen: set[str] = set()
    out = []
    for models in lists:
        for model in models or ():
            model_id = model.get("id") if isinstance(model, dict) else None
            if isinstance(model_id, str) and model_id not in seen:
                seen.add(model_id)
                out.append(model)
    return out


def openai_model(model: Any, owner: str) -> Any:
    """An entry of Anthropic's model list (``id``, ``created_at`` in RFC 3339) as OpenAI's (``id``, ``created``)."""
    if not isinstance(model, dict) or not isinstance(model.get("id"), str):
        return model
    try:
        created = int(datetime.fromisoformat(str(model.get("created_at")).replace("Z", "+00:00")).timestamp())
    except ValueError:
        created = 0
    return {"id": model["id"], "object": "model", "created": created, "owned_by": owner}


async def ask(upstream: Upstream) -> list[dict[str, Any]] | str:
    """``upstream``'s model list, or why there is none (for the log); an Anthropic upstream's in OpenAI's shape."""
    anthropic = upstream.config.api == "anthropic"
    with trio.move_on_after(ASK_TIMEOUT_S):
        try:
            key = await free_key(upstream.store, upstream.keys)
            extra = [(b"anthropic-version", ANTHROPIC_VERSION)] if anthropic else None
            response = await upstream.send("GET", "/v1/models" if anthropic else "/models", key=key, extra=extra)
            content = await read_and_close(response)
        except AllKeysResting:
            return "every key is rate limited"
        except httpx.TransportError as exc:
            return map_transport_error(exc)[1]["error"]["code"]
        if response.status_code != 200:
            return f"HTTP {response.status_code}"
        try:
            models = json.loads(content)["data"]
        except (ValueError, TypeError, KeyError):
            models = None
        if not isinstance(models, list):
            return "not a model list"
        return [openai_model(m, upstream.name) for m in models] if anthropic else models
    return f"no answer within {ASK_TIMEOUT_S:g} s"


async def model_lists(upstreams: Sequence[Upstream]) -> list[list[dict[str, Any]]] | None:
    """Every upstream's model list, asked at once (those that failed left out and logged); None when none
    answered."""
    answers: list[list[dict[str, Any]] | str] = ["not asked"] * len(upstreams)

    async def one(i: int) -> None:
        answers[i] = await ask(upstreams[i])

    async with trio.open_nursery() as nursery:
        for i in range(len(upstreams)):
            nursery.start_soon(one, i)
    failed = [f"{u.name}: {a}" for u, a in zip(upstreams, answers, strict=True) if isinstance(a, str)]
    if failed:
        log.info("GET /v1/models left out %s", "; ".join(failed))
    if failed and len(failed) == len(upstreams):
        return None
    return [a for a in answers if not isinstance(a, str)]


def no_model_list() -> UpstreamFailed:
    return UpstreamFailed("No upstream answered the model list.", "upstream_unavailable")  # why: the log


async def merged_models(upstreams: Sequence[Upstream]) -> Response:
    lists = await model_lists(upstreams)
    if lists is None:
        raise no_model_list()
    return Response(json.dumps({"object": "list", "data": merge(lists)}), content_type=JSON)
