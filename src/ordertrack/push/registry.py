"""The cluster-wide per-user connection registry (`MAX_CONNECTIONS_PER_USER`).

Each user has a ZSET `ws:user:{USER_ID}` of `POD_ID|CONNECTION_ID` scored by open time.
`register.lua` adds a connection and evicts the oldest ones beyond the limit in one atomic step,
telling their pods over `ws:control:POD_ID`. Each pod keeps `ws:pod:POD_ID` alive with a
short TTL; slots of a pod whose key expired are dropped, so a crashed pod leaks nothing.
The names and the evict message are `ordertrack.redis_layout`'s.
"""

from __future__ import annotations

from importlib.resources import files

from ordertrack import redis_layout

#: a user's registry outlives its connections by at most this long (safety net only)
USER_KEY_TTL_SECONDS = 24 * 3600
POD_KEY_TTL_SECONDS = 15

REGISTER_LUA = files("ordertrack.push").joinpath("register.lua").read_text()


def register_args(pod_id: str, connection_id: str, opened_ms: int, limit: int) -> list:
    """register.lua's ARGV (KEYS[1] is `redis_layout.user(user_id)`)."""
    return [pod_id, connection_id, opened_ms, limit, USER_KEY_TTL_SECONDS,
            redis_layout.POD_PREFIX, redis_layout.CONTROL_PREFIX, redis_layout.EVICT]

