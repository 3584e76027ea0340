"""The upstream client: the h11 transport (connection, pool, watchdog, body reader), keys, retries, routing."""

from ._attempts import read_and_close, send_with_retries
from ._client import Upstream, Upstreams
from ._connection import HEARTBEAT, READER, SHUTDOWN, Interrupted, Timeouts
from ._keypool import DEFAULT_REST_S, MAX_REST_S, AllKeysResting, KeyPool, rest_seconds
from ._pool import H11Transport
from ._response import IteratorReader, reader
from ._routing import (
    ConfigError,
    Router,
    UpstreamConfig,
    configured_models,
    describe_upstreams,
    load_settings,
    model_not_found,
    upstream_configs,
    upstream_label,
)

__all__ = [
    "AllKeysResting",
    "ConfigError",
    "DEFAULT_REST_S",
    "H11Transport",
    "HEARTBEAT",
    "Interrupted",
    "IteratorReader",
    "KeyPool",
    "MAX_REST_S",
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
    "read_and_close",
    "reader",
    "rest_seconds",
    "send_with_retries",
    "upstream_configs",
    "upstream_label",
]
