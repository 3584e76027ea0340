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
from typing import Any

import httpx
import trio
from quart import Response

from ..protocol import JSON, error_body, map_transport_error
from ..routing import AllKeysResting, Upstream, free_key, read_and_close

log = logging.getLogger("moonrelay")

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


async def ask(upstream: Upstream) -> list[dict[str, Any]] | str:
    """``upstream``'s model list, or why there is none (for the log)."""
    with trio.move_on_after(ASK_TIMEOUT_S):
        try:
            response = await upstream.send("GET", "/models", key=await free_key(upstream.store, upstream.keys))
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
        return models if isinstance(models, list) else "not a model list"
    return f"no answer within {ASK_TIMEOUT_S:g} s"


async def merged_models(upstreams: Sequence[Upstream]) -> Response:
    answers: list[list[dict[str, Any]] | str] = ["not asked"] * len(upstreams)

    async def one(i: int) -> None:
        answers[i] = await ask(upstreams[i])

    async with trio.open_nursery() as nursery:
        for i in range(len(upstreams)):
            nursery.start_soon(one, i)
    failed = [f"{u.name}: {a}" for u, a in zip(upstreams, answers, strict=True) if isinstance(a, str)]
    if failed:
        log.info("GET /v1/models left out %s", "; ".join(failed))
    if len(failed) == len(upstreams):
        msg = "No upstream answered the model list."  # which ones and why: the log line above
        return Response(json.dumps(error_body(msg, "upstream_error", "upstream_unavailable")), 502, content_type=JSON)
    lists = [a if not isinstance(a, str) else None for a in answers]
    return Response(json.dumps({"object": "list", "data": merge(lists)}), content_type=JSON)
