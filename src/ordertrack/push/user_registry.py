"""The cluster-wide per-user connection registry (`MAX_CONNECTIONS_PER_USER`).

Each user has a ZSET `ws:user:{USER_ID}` of `POD_ID|CONNECTION_ID` scored by open time.
`register.lua` adds a batch of connections and evicts the oldest ones beyond the limit in one
atomic step, telling their pods over `ws:control:POD_ID`. It touches only the users' keys, so
it runs on a Redis Cluster too (a script may touch one hash slot there: on a cluster a batch is
one call per slot, elsewhere one call). It is pipelined as `EVALSHA` (a cluster pipeline
refuses redis-py's Script objects); a node that answers NOSCRIPT (a promoted replica) gets the
script loaded and the batch is admitted again.

Pod liveness is a lease: each pod keeps its score in the one ZSET `ws:pods` (pod id -> lease
expiry, epoch ms), renewed every third of `POD_LEASE_SECONDS`, and reads the whole ZSET back
each time. The pods whose lease has run out go to `register.lua` in its ARGV and their slots
are dropped before counting, so a crashed pod never counts against a user once its lease is
over. Why not a check inside the script: `ws:pods` is in another hash slot than the users'
keys. Why not a lease per slot: renewing every connection's slot costs a write per connection
every few seconds; one lease per pod costs one. A pod not in the last read (just started)
counts as alive: nothing live is ever dropped. A dead pod's entry is pruned after
`USER_KEY_TTL_SECONDS`: by then every user key that held one of its slots has been registered
into since (dropping it) or has expired.
The names and the evict message are `ordertrack.redis_layout`'s. `UserRegistry` owns every Redis
call of the registry; nothing else touches these keys.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Iterable, Mapping
from importlib.resources import files

from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import NoScriptError, RedisError

from ordertrack import redis_layout

#: a user's registry outlives its connections by at most this long (safety net only)
USER_KEY_TTL_SECONDS = 24 * 3600
#: POD_LEASE_SECONDS' default: a SIGKILLed pod's slots stop counting this long after its last renewal
POD_LEASE_SECONDS = 15.0
#: connections re-registered per pipeline after Redis came back
REREGISTER_CHUNK = 1000
#: slots released per pipeline: a mass close's thousands of releases, in one pipeline, were a
#: stall of their own (building and parsing it holds the loop)
RELEASE_CHUNK = 200

REGISTER_LUA = files("ordertrack.push").joinpath("register.lua").read_text()
REGISTER_SHA = hashlib.sha1(REGISTER_LUA.encode()).hexdigest()

log = logging.getLogger("ordertrack.push.registry")


def dead_pods(leases: Mapping[str, float], now_ms: float, own_pod: str) -> tuple[str, ...]:
    """The pods whose lease (expiry, epoch ms) has run out at `now_ms` (never this pod)."""
    return tuple(sorted(pod for pod, expires in leases.items()
                        if expires <= now_ms and pod != own_pod))


def decode_leases(rows: Iterable[tuple[bytes | str, float]]) -> dict[str, float]:
    """`ZRANGE ws:pods 0 -1 WITHSCORES` -> {pod_id: lease expiry ms}."""
    return {(pod.decode() if isinstance(pod, bytes) else pod): float(score) for pod, score in rows}


def slot_groups(keys: list[str], cluster: bool) -> list[list[int]]:
    """The batch's indexes, one group per script call: all of them, or (on a cluster) one
    group per hash slot, in first-seen order."""
    if not cluster:
        return [list(range(len(keys)))] if keys else []
    groups: dict[int, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key_slot(key.encode()), []).append(index)
    return list(groups.values())


def needs_script(replies: list) -> bool:
    """A node answered NOSCRIPT: load the script, admit the batch again."""
    return any(isinstance(reply, NoScriptError) for reply in replies)


def script_results(replies: list, groups: list[list[int]], count: int) -> list[list | Exception]:
    """A batch script's replies (one per group, each an array of `{1, values...}` or
    `{0, error text}` per key: register.lua, states.lua) -> per connection, its values or the
    error of its key (a whole group's error for each of its connections)."""
    results: list[list | Exception] = [RedisError("no reply")] * count
    for reply, group in zip(replies, groups, strict=True):
        for index, result in zip(group, _group_results(reply, len(group)), strict=True):
            results[index] = result
    return results


def _group_results(reply, count: int) -> list[list | Exception]:
    if isinstance(reply, Exception):
        return [reply] * count
    results: list[list | Exception] = []
    for item in reply:
        if item and item[0] == 1:
            results.append(list(item[1:]))
        else:
            text = item[1] if len(item) > 1 else b"registration failed"
            results.append(RedisError(text.decode(errors="replace") if isinstance(text, bytes) else text))
    return results


class UserRegistry:
    """This pod's side of the registry: register (batched), release (batched, retried),
    re-register after an outage, and the pod's liveness key."""

    def __init__(self, redis, pod_id: str, limit: int, lease_seconds: float = POD_LEASE_SECONDS):
        self.redis = redis
        self.pod_id = pod_id
        self.limit = limit
        self.lease_ms = lease_seconds * 1000
        self.cluster = isinstance(redis, RedisCluster)
        #: every pod's lease expiry (ms) as last read from ws:pods
        self.leases: dict[str, float] = {}
        self._slot_frees: list[tuple[str, str]] = []
        self._slot_free_wakeup = asyncio.Event()

    def queue_register(self, pipe, users_and_ids: list[tuple[str, str]], wall_ms: int
                       ) -> list[list[int]]:
        """Add the `register.lua` calls for the batch to `pipe` (one, or one per hash slot on a
        cluster); returns the groups, for `script_results` over the first len(groups) replies."""
        keys = [redis_layout.user(user_id) for user_id, _ in users_and_ids]
        dead = dead_pods(self.leases, time.time() * 1000, self.pod_id)
        groups = slot_groups(keys, self.cluster)
        for group in groups:
            pipe.execute_command(
                "EVALSHA", REGISTER_SHA, len(group), *(keys[i] for i in group),
                self.pod_id, wall_ms, self.limit, USER_KEY_TTL_SECONDS,
                redis_layout.CONTROL_PREFIX, redis_layout.EVICT, len(dead), *dead,
                *(users_and_ids[i][1] for i in group))
        return groups

    async def load_script(self) -> None:
        """SCRIPT LOAD register.lua (on a cluster: on every master)."""
        await self.redis.script_load(REGISTER_LUA)

    def free_slot(self, user_id: str, connection_id: str) -> None:
        """Free a slot (soon, batched with others)."""
        self._slot_frees.append((user_id, redis_layout.member(self.pod_id, connection_id)))
        self._slot_free_wakeup.set()

    async def run_slot_frees(self) -> None:
        while True:
            await self._slot_free_wakeup.wait()
            self._slot_free_wakeup.clear()
            await self.flush_slot_frees()

    async def flush_slot_frees(self, give_up_on_error: bool = False) -> None:
        while self._slot_frees:
            batch, self._slot_frees = (self._slot_frees[:RELEASE_CHUNK],
                                       self._slot_frees[RELEASE_CHUNK:])
            pipe = self.redis.pipeline(transaction=False)
            for user, slot in batch:
                pipe.zrem(redis_layout.user(user), slot)
            try:
                await pipe.execute()
            except RedisError as exc:
                log.warning("releasing %d registry slots failed: %s; will retry", len(batch), exc)
                self._slot_frees[:0] = batch
                await asyncio.sleep(0.5)
                if give_up_on_error:
                    return

    async def reregister(self, users_and_ids: list[tuple[str, str]]) -> None:
        """Redis may have restarted empty: put these live connections back (score 0: they
        were there first, so a newer one is evicted before them)."""
        await self.heartbeat()
        for start in range(0, len(users_and_ids), REREGISTER_CHUNK):
            pipe = self.redis.pipeline(transaction=False)
            for user, connection_id in users_and_ids[start:start + REREGISTER_CHUNK]:
                key = redis_layout.user(user)
                pipe.zadd(key, {redis_layout.member(self.pod_id, connection_id): 0}, nx=True)
                pipe.expire(key, USER_KEY_TTL_SECONDS)
            await pipe.execute()

    async def heartbeat(self) -> None:
        """Renew this pod's lease in ws:pods (our slots count while it runs), prune long-dead
        pods, read every lease back."""
        now_ms = time.time() * 1000
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(redis_layout.PODS_KEY, {self.pod_id: now_ms + self.lease_ms})
        pipe.zremrangebyscore(redis_layout.PODS_KEY, "-inf", now_ms - USER_KEY_TTL_SECONDS * 1000)
        pipe.zrange(redis_layout.PODS_KEY, 0, -1, withscores=True)
        *_, rows = await pipe.execute()
        self.leases = decode_leases(rows)

    async def forget_pod(self) -> None:
        """A lease over now: slots this pod could not release count no more."""
        try:
            await self.redis.zadd(redis_layout.PODS_KEY, {self.pod_id: 0})
        except RedisError:
            pass
