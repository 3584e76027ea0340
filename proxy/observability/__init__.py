"""The observability shell: request ids, access log, metrics, readiness, CORS and the demo page."""

from ._accesslog import LOGGER, AccessRecord, key_prefix, model_from_body, request_id, scan_tail, upstream_error_kind
from ._cors import CORSPolicy
from ._metrics import CONTENT_TYPE, MULTIPROC_ENV, prepare_multiprocess
from ._observe import Observer, Tap, install_observability

__all__ = [
    "AccessRecord",
    "CONTENT_TYPE",
    "CORSPolicy",
    "LOGGER",
    "MULTIPROC_ENV",
    "Observer",
    "Tap",
    "install_observability",
    "key_prefix",
    "model_from_body",
    "prepare_multiprocess",
    "request_id",
    "scan_tail",
    "upstream_error_kind",
]
