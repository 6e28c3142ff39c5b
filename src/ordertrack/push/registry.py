"""The cluster-wide per-user connection registry (`MAX_CONNECTIONS_PER_USER`).

Each user has a ZSET `ws:user:{user_id}` of `{pod_id}|{connection_id}` scored by open time.
`register.lua` adds a connection and evicts the oldest ones beyond the limit in one atomic step,
telling their pods over `ws:control:{pod_id}`. Each pod keeps `ws:pod:{pod_id}` alive with a
short TTL; slots of a pod whose key expired are dropped, so a crashed pod leaks nothing.
"""

from __future__ import annotations

from importlib.resources import files

USER_PREFIX = "ws:user:"
POD_PREFIX = "ws:pod:"
CONTROL_PREFIX = "ws:control:"
CONTROL_ALL = "ws:control:all"
#: a user's registry outlives its connections by at most this long (safety net only)
USER_KEY_TTL_SECONDS = 24 * 3600
POD_KEY_TTL_SECONDS = 15

REGISTER_LUA = files("ordertrack.push").joinpath("register.lua").read_text()


def user_key(user_id: str) -> str:
    return USER_PREFIX + user_id


def pod_key(pod_id: str) -> str:
    return POD_PREFIX + pod_id


def control_channel(pod_id: str) -> str:
    return CONTROL_PREFIX + pod_id


def member(pod_id: str, connection_id: str) -> str:
    return f"{pod_id}|{connection_id}"


def split_member(value: bytes | str) -> tuple[str, str]:
    text = value.decode() if isinstance(value, bytes) else value
    pod_id, _, connection_id = text.rpartition("|")
    return pod_id, connection_id
