"""The relay: what each route does with a request once the edge handed it over (read, check, admit, route,
exchange with the upstream, answer), the Anthropic Messages and OpenAI Responses routes, the worker's in-flight
requests, pass-through, the merged model list."""

from ._admission import Streams
from ._caching import CacheFill, ResponseCache, cache_store, check_cache
from ._messages import MessagesRoutes
from ._passthrough import METHODS as PASSTHROUGH_METHODS
from ._passthrough import body_limit, ending_broken_bodies, forwarded_headers, header_names, path_filter
from ._relay import Relay
from ._responses_api import ResponsesRoute

__all__ = [
    "MessagesRoutes",
    "CacheFill",
    "PASSTHROUGH_METHODS",
    "Relay",
    "ResponseCache",
    "ResponsesRoute",
    "Streams",
    "body_limit",
    "cache_store",
    "check_cache",
    "ending_broken_bodies",
    "forwarded_headers",
    "header_names",
    "path_filter",
]
