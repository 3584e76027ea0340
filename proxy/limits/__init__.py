"""The gateway's limits and upstream health, counted in a store: this worker's memory, or a Redis shared by every
worker and instance (``--state``); client keys' limits (rpm, tpm, concurrent, budget) checked against it."""

from ._address import RedisAddress, StateURLError, parse_state_url, redact
from ._budget import StoreBudget
from ._charge import DEFAULT_RESERVE_TOKENS, Charge
from ._failover import FailoverStore
from ._keylimits import Admission, ClientLimits, Refusal, openai_duration, ratelimit_headers
from ._keys import ClientKey, KeysFileError, defaults, parse_keys_file, with_defaults
from ._redis import RedisStore, check_redis
from ._resp import MAX_BULK, RedisConnection, RedisUnavailable, ReplyError
from ._store import LocalStore, Store, StoreUnavailable, Window, window_bounds
from ._tokens import TokenHold, TokenWindow

__all__ = [
    "Admission",
    "Charge",
    "ClientKey",
    "ClientLimits",
    "DEFAULT_RESERVE_TOKENS",
    "FailoverStore",
    "KeysFileError",
    "LocalStore",
    "MAX_BULK",
    "RedisAddress",
    "RedisConnection",
    "RedisStore",
    "RedisUnavailable",
    "Refusal",
    "ReplyError",
    "StateURLError",
    "Store",
    "StoreBudget",
    "StoreUnavailable",
    "TokenHold",
    "TokenWindow",
    "Window",
    "check_redis",
    "defaults",
    "openai_duration",
    "parse_keys_file",
    "parse_state_url",
    "ratelimit_headers",
    "redact",
    "window_bounds",
    "with_defaults",
]
