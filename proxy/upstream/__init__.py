"""The upstream client: the h11 transport (connection, pool, watchdog, body reader), keys, retries, routing."""

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
from ._client import Upstream, Upstreams
from ._connection import HEARTBEAT, READER, SHUTDOWN, Interrupted, Timeouts
from ._health import Health
from ._keypool import DEFAULT_REST_S, MAX_REST_S, AllKeysResting, KeyPool, rest_seconds
from ._pool import H11Transport
from ._response import IteratorReader, ResponseStream, reader
from ._routing import (
    ConfigError,
    Router,
    UpstreamConfig,
    configured_models,
    describe_upstreams,
    load_settings,
    model_not_found,
    the_model,
    upstream_configs,
    upstream_label,
)

__all__ = [
    "AllKeysResting",
    "Circuit",
    "HALF_OPEN_S",
    "Health",
    "Outcome",
    "Seen",
    "SmoothWeighted",
    "Step",
    "balance_order",
    "free_key",
    "limited_of",
    "not_processed",
    "resend_reason",
    "breaker_outcome",
    "ConfigError",
    "DEFAULT_REST_S",
    "H11Transport",
    "HEARTBEAT",
    "Interrupted",
    "IteratorReader",
    "ResponseStream",
    "Rests",
    "KeyPool",
    "MAX_REST_S",
    "MAX_RESTS",
    "READER",
    "Router",
    "SHUTDOWN",
    "Timeouts",
    "Upstream",
    "UpstreamConfig",
    "Upstreams",
    "configured_models",
    "describe_upstreams",
    "load_settings",
    "model_not_found",
    "the_model",
    "read_and_close",
    "reader",
    "rest_seconds",
    "send_with_retries",
    "upstream_configs",
    "upstream_label",
]
