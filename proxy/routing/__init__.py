"""Where a request goes and what happens when an upstream fails: ``[[upstreams]]`` as routes (model → deployments),
each :class:`Upstream` with its key pool and slots, a request's candidates (deployments by weight and health, then
fallbacks), the one rule for when a request may go out again (``_attempts``), circuit breakers and 429 rests in the
store. Pure decisions (``_breaker``, ``_balance``) apart from the I/O around them."""

from ..upstreamconfig import ConfigError, UpstreamConfig, upstream_label
from ._attempts import (
    MAX_RESTS,
    Rests,
    free_key,
    limited_of,
    not_processed,
    read_and_close,
    resend_reason,
    send_with_retries,
)
from ._balance import SmoothWeighted
from ._balance import order as balance_order
from ._breaker import HALF_OPEN_S, Circuit, Outcome, Seen, Step
from ._breaker import outcome as breaker_outcome
from ._candidates import Candidates, at_its_limit
from ._health import Health
from ._keypool import DEFAULT_REST_S, MAX_REST_S, AllKeysResting, KeyPool, rest_seconds
from ._router import Router, configured_models, describe_upstreams, model_not_found, the_model
from ._upstream import Upstream, Upstreams

__all__ = [
    "AllKeysResting",
    "Candidates",
    "Circuit",
    "ConfigError",
    "DEFAULT_REST_S",
    "HALF_OPEN_S",
    "Health",
    "KeyPool",
    "MAX_RESTS",
    "MAX_REST_S",
    "Outcome",
    "Rests",
    "Router",
    "Seen",
    "SmoothWeighted",
    "Step",
    "Upstream",
    "UpstreamConfig",
    "Upstreams",
    "at_its_limit",
    "balance_order",
    "breaker_outcome",
    "configured_models",
    "describe_upstreams",
    "free_key",
    "limited_of",
    "model_not_found",
    "not_processed",
    "read_and_close",
    "resend_reason",
    "rest_seconds",
    "send_with_retries",
    "the_model",
    "upstream_label",
]
