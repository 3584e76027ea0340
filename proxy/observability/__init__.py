"""Observability sinks: the access log (one JSON line per request) and the Prometheus metrics. The edge feeds them
when a call ends; they decide nothing about a request."""

from ._accesslog import (
    LOGGER,
    AccessRecord,
    access_logger,
    key_prefix,
    model_from_body,
    request_id,
    scan_tail,
    upstream_error_kind,
)
from ._metrics import CONTENT_TYPE, MULTIPROC_ENV, Metrics, prepare_multiprocess

__all__ = [
    "AccessRecord",
    "CONTENT_TYPE",
    "LOGGER",
    "MULTIPROC_ENV",
    "Metrics",
    "access_logger",
    "key_prefix",
    "model_from_body",
    "prepare_multiprocess",
    "request_id",
    "scan_tail",
    "upstream_error_kind",
]
