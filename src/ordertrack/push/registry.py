"""The cluster-wide per-user connection registry (`MAX_CONNECTIONS_PER_USER`).

Each user has a ZSET `ws:user:{USER_ID}` of `POD_ID|CONNECTION_ID` scored by open time.
`register.lua` adds a connection and evicts the oldest ones beyond the limit in one atomic step,
telling their pods over `ws:control:POD_ID`. The script touches the user's key alone, so it runs
on a Redis Cluster too (a script may only touch one hash slot there).

Pod liveness is a lease: each pod keeps its score in the one ZSET `ws:pods` (pod id -> lease
expiry, epoch ms) renewed every third of `POD_LEASE_SECONDS`, and reads the whole ZSET back at
the same time. The pods whose lease has run out are passed to `register.lua` in its ARGV and
their slots in the user's key are dropped before counting, so a crashed pod never counts
against a user once its lease is over. (Why not a check inside the script: `ws:pods` is in
another hash slot than the user's key. Why not a lease per slot: renewing every connection's
slot would cost a write per connection every few seconds; one lease per pod costs one.)
A pod not in the last read (started since) counts as alive: nothing live is ever dropped.
A dead pod's entry is pruned after `USER_KEY_TTL_SECONDS`: by then every user key that held one
of its slots has either been registered into since (dropping the slot) or expired.
The names and the evict message are `ordertrack.redis_layout`'s.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from importlib.resources import files

from ordertrack import redis_layout

#: a user's registry outlives its connections by at most this long (safety net only)
USER_KEY_TTL_SECONDS = 24 * 3600
#: POD_LEASE_SECONDS' default: a SIGKILLed pod's slots stop counting this long after its last renewal
POD_LEASE_SECONDS = 15.0

REGISTER_LUA = files("ordertrack.push").joinpath("register.lua").read_text()
#: the pod pipelines `EVALSHA REGISTER_SHA` (a cluster pipeline refuses redis-py's Script
#: objects), loading the script on a NOSCRIPT answer (a new master, a node added)
REGISTER_SHA = hashlib.sha1(REGISTER_LUA.encode()).hexdigest()


def register_args(pod_id: str, connection_id: str, opened_ms: int, limit: int,
                  dead_pods: Iterable[str] = ()) -> list:
    """register.lua's ARGV (KEYS[1] is `redis_layout.user(user_id)`)."""
    return [pod_id, connection_id, opened_ms, limit, USER_KEY_TTL_SECONDS,
            redis_layout.CONTROL_PREFIX, redis_layout.EVICT, *dead_pods]


def dead_pods(leases: Mapping[str, float], now_ms: float, own_pod: str) -> tuple[str, ...]:
    """The pods whose lease (expiry, epoch ms) has run out at `now_ms` (never this pod)."""
    return tuple(sorted(pod for pod, expires in leases.items()
                        if expires <= now_ms and pod != own_pod))


def decode_leases(rows: Iterable[tuple[bytes | str, float]]) -> dict[str, float]:
    """`ZRANGE ws:pods 0 -1 WITHSCORES` -> {pod_id: lease expiry ms}."""
    return {(pod.decode() if isinstance(pod, bytes) else pod): float(score) for pod, score in rows}
