"""The Redis store's operations, one Lua script each: Redis runs a script atomically, so a check and its update
(``ZCARD`` then ``ZADD``; a window's total then its increment) can never interleave with another worker's.

Every script reads the time from Redis (``TIME``), the one clock all instances share; times are whole
milliseconds. Slots are a sorted set per name, member = lease token, score = the lease's expiry; lapsed ones are
purged before counting. A window is a counter under ``<name>:<epoch-aligned index>`` that expires with its
window; a rest is the "not before" time under ``<name>``.
"""

from __future__ import annotations

# Redis's TIME in milliseconds, as the first lines of every script.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS slot sets, one per request (a batch of them, proxy/limits/_batch.py); ARGV[1] the lease's ttl_ms, then limit
# and token for each, in KEYS order → 1 taken or 0 full, for each; taken in order, so a batch fills a cap as one by
# one would.
ACQUIRE = (
    _NOW
    + """
local ttl = tonumber(ARGV[1])
local taken = {}
for i, key in ipairs(KEYS) do
  local limit, token = tonumber(ARGV[2 * i]), ARGV[2 * i + 1]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) >= limit then
    taken[i] = 0
  else
    redis.call('ZADD', key, now + ttl, token)
    if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
    taken[i] = 1
  end
end
return taken
"""
)

# KEYS slot sets, one per lease; ARGV ttl_ms, then the tokens in KEYS order. Every lease still held is set to
# expire ttl_ms from now, *added back* when missing: after a Redis restart (or a stall past the TTL) the slots of
# requests still in flight are counted again within one renewal.
RENEW = (
    _NOW
    + """
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + ttl, ARGV[i + 1])
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end
return #KEYS
"""
)

# KEYS[1] slots → the leases not lapsed.
HELD = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""
)

# The current window's key and the milliseconds until it ends: window_ms in ARGV[1], the instant windows start from
# in ARGV[2] (ms; 0, the Unix epoch, but for tests that start a window of their own).
_WINDOW = """
local window, origin = tonumber(ARGV[1]), tonumber(ARGV[2])
local index = math.floor((now - origin) / window)
local key = KEYS[1] .. ':' .. index
local reset = origin + (index + 1) * window - now
"""

# KEYS[1] name; ARGV window_ms, origin_ms, limit, cost → {allowed 1/0, total, reset_ms}.
HIT = (
    _NOW
    + _WINDOW
    + """
local total = tonumber(redis.call('GET', key) or '0')
local cost = tonumber(ARGV[4])
if total + cost > tonumber(ARGV[3]) then return {0, total, reset} end
total = redis.call('INCRBY', key, cost)
redis.call('PEXPIRE', key, reset + 1000)
return {1, total, reset}
"""
)

# KEYS[1] name; ARGV window_ms, origin_ms, amount → {total, reset_ms}.
ADD = (
    _NOW
    + _WINDOW
    + """
local total = redis.call('INCRBY', key, tonumber(ARGV[3]))
redis.call('PEXPIRE', key, reset + 1000)
return {total, reset}
"""
)

# KEYS[1] name; ARGV window_ms, origin_ms → {total, reset_ms}.
USED = (
    _NOW
    + _WINDOW
    + """
return {tonumber(redis.call('GET', key) or '0'), reset}
"""
)

# KEYS[1] name; ARGV ms → 1 (a longer rest already set is kept).
REST = (
    _NOW
    + """
local ms = tonumber(ARGV[1])
local until_ms = now + ms
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ms > current and ms > 0 then redis.call('SET', KEYS[1], until_ms, 'PX', ms) end
return 1
"""
)

# KEYS names → the milliseconds each rest still lasts (0: not resting).
RESTING = (
    _NOW
    + """
local left = {}
for i, key in ipairs(KEYS) do
  left[i] = math.max(0, tonumber(redis.call('GET', key) or '0') - now)
end
return left
"""
)

# KEYS slot sets, one per lease; ARGV the tokens in KEYS order → how many were still held.
RELEASE = """
local n = 0
for i, key in ipairs(KEYS) do n = n + redis.call('ZREM', key, ARGV[i]) end
return n
"""
# KEYS[1] a rest to end: a plain DEL would do, but one path (EVALSHA, the deadline) for every operation.
CLEAR = "return redis.call('DEL', KEYS[1])"

ALL = {
    "acquire": ACQUIRE,
    "renew": RENEW,
    "held": HELD,
    "hit": HIT,
    "add": ADD,
    "used": USED,
    "rest": REST,
    "resting": RESTING,
    "release": RELEASE,
    "clear": CLEAR,
}
