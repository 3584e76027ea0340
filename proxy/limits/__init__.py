"""The gateway's limits and upstream health, counted in a store: this worker's memory, or a Redis shared by every
worker and instance (``--state``)."""

from ._failover import FailoverStore
from ._redis import RedisStore
from ._store import LocalStore, Store, StoreUnavailable, Window, window_bounds

__all__ = ["FailoverStore", "LocalStore", "RedisStore", "Store", "StoreUnavailable", "Window", "window_bounds"]
