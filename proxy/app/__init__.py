"""The relay's routes: the relay object, admission, pass-through, responses, /v1/models."""

from ._admission import Streams
from ._passthrough import forwarded_headers, header_names, path_filter
from ._relay import Relay
from ._routes import create_app

__all__ = [
    "Relay",
    "Streams",
    "create_app",
    "forwarded_headers",
    "header_names",
    "path_filter",
]
