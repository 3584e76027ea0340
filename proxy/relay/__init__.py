"""The relay: what each route does with a request once the edge handed it over (read, check, admit, route,
exchange with the upstream, answer), the worker's in-flight requests, pass-through, the merged model list."""

from ._admission import Streams
from ._passthrough import METHODS as PASSTHROUGH_METHODS
from ._passthrough import body_limit, ending_broken_bodies, forwarded_headers, header_names, path_filter
from ._relay import Relay

__all__ = [
    "PASSTHROUGH_METHODS",
    "Relay",
    "Streams",
    "body_limit",
    "ending_broken_bodies",
    "forwarded_headers",
    "header_names",
    "path_filter",
]
