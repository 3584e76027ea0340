"""The simulated Moonshot/OpenAI upstream: a raw trio + h11 server cheap enough for 10,000 open streams.

Run it with ``python -m loadtest.sim --bind 127.0.0.1:9100``; it prints ``sim listening on URL`` once
every worker listens. In-process (tests, demos)::

    server = await nursery.start(serve_sim, SimConfig(port=0, ttft=0.05, interval=0.01))
    server.url  # "http://127.0.0.1:43121/v1"

Endpoints: ``POST /v1/chat/completions`` (streaming and not; tool calls and reasoning when asked),
``POST /v1/messages`` and ``POST /anthropic/v1/messages`` (Anthropic Messages, as Moonshot serves Kimi),
``POST /v1/messages/count_tokens``, ``POST /v1/responses`` (OpenAI Responses), ``GET /v1/models``,
``GET /anthropic/v1/models``, ``GET /sim/stats``, ``GET /sim/cancels``, ``POST /sim/reset``; for pass-through,
``POST /v1/embeddings``, ``POST /v1/tokenizers/estimate-token-count``, ``GET /v1/users/me/balance``,
``POST /v1/files`` (read as it arrives) and ``GET /v1/files/{id}/content`` (sent in timed parts). Timing, content
size, tool calls, reasoning and fault injection can be overridden per request by ``sim_*`` body fields or
``X-Sim-*`` headers (the body wins); every answer is in its protocol's own shape, errors included
(docs/loadtest.md, "The simulated upstream").

Why no framework: hypercorn + Quart cost many times a bare trio + h11 server per request and a task tree per
request; this
package keeps one connection task (plus one EOF-watch task while a response is in progress), sends
precomputed bytes (:mod:`loadtest.simcontent`) and sleeps on one shared timer (:mod:`loadtest.timer`).

The modules, down the stack: ``_cli`` (command line, worker processes) → ``_server`` (listening, connections,
routing, keys) → the protocols ``_chat``, ``_messages``, ``_responses`` (a request and its plan in, the answer's
bytes out, pure; the tool choice in ``_tools``) and ``_passthrough`` (the other endpoints) → ``_stream`` (sending an
answer on the plan's times, faults inline) → ``_http`` (h11 reads, hand-framed writes, sockets, TLS), ``_plan``
(per-request timing and faults, pure), ``_state`` (counters, what handlers share), ``_config``.
"""

from loadtest.sim._cli import main
from loadtest.sim._config import SimConfig
from loadtest.sim._plan import FAULTS, BadRequest, Plan, make_plan, schedule
from loadtest.sim._server import serve_sim
from loadtest.sim._state import SharedSimStats, SimServer, SimStats

__all__ = ["SimConfig", "SimServer", "SimStats", "SharedSimStats", "serve_sim", "main",
           "FAULTS", "BadRequest", "Plan", "make_plan", "schedule"]
