"""The cluster-wide per-user connection registry (`MAX_CONNECTIONS_PER_USER`).

Each user has a ZSET `ws:user:{USER_ID}` of `POD_ID|CONNECTION_ID` scored by open time.
`register.lua` adds a batch of connections and evicts the oldest ones beyond the limit in one
atomic step, telling their pods over `ws:control:POD_ID`. Each pod keeps `ws:pod:POD_ID` alive with a
short TTL; slots of a pod whose key expired are dropped, so a crashed pod leaks nothing.
The names and the evict message are `ordertrack.redis_layout`'s. `Registry` owns every Redis
call of the registry; nothing else touches these keys.
"""

from __future__ import annotations

import asyncio
import logging
from importlib.resources import files

from redis.exceptions import RedisError

from ordertrack import redis_layout

#: a user's registry outlives its connections by at most this long (safety net only)
USER_KEY_TTL_SECONDS = 24 * 3600
POD_KEY_TTL_SECONDS = 15
#: connections re-registered per pipeline after Redis came back
REREGISTER_CHUNK = 1000

REGISTER_LUA = files("ordertrack.push").joinpath("register.lua").read_text()

log = logging.getLogger("ordertrack.push.registry")


def register_results(reply, count: int) -> list[list | Exception]:
    """`register.lua`'s reply -> per connection, its evicted members or the error of its key."""
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


class Registry:
    """This pod's side of the registry: register (batched), release (batched, retried),
    re-register after an outage, and the pod's liveness key."""

    def __init__(self, redis, pod_id: str, limit: int):
        self.redis = redis
        self.pod_id = pod_id
        self.limit = limit
        self._register = redis.register_script(REGISTER_LUA)
        self._releases: list[tuple[str, str]] = []
        self._release_wakeup = asyncio.Event()

    async def queue_register(self, pipe, users_and_ids: list[tuple[str, str]], wall_ms: int) -> None:
        """Add ONE `register.lua` call for the whole batch to `pipe`; its reply goes through
        `register_results`."""
        await self._register(
            keys=[redis_layout.user(user_id) for user_id, _ in users_and_ids],
            args=[self.pod_id, wall_ms, self.limit, USER_KEY_TTL_SECONDS,
                  redis_layout.POD_PREFIX, redis_layout.CONTROL_PREFIX, redis_layout.EVICT,
                  *(connection_id for _, connection_id in users_and_ids)],
            client=pipe,
        )

    def release(self, user_id: str, connection_id: str) -> None:
        """Free a slot (soon, batched with others)."""
        self._releases.append((user_id, redis_layout.member(self.pod_id, connection_id)))
        self._release_wakeup.set()

    async def run_releases(self) -> None:
        while True:
            await self._release_wakeup.wait()
            self._release_wakeup.clear()
            await self.flush_releases()

    async def flush_releases(self, give_up_on_error: bool = False) -> None:
        while self._releases:
            batch, self._releases = self._releases, []
            pipe = self.redis.pipeline(transaction=False)
            for user, slot in batch:
                pipe.zrem(redis_layout.user(user), slot)
            try:
                await pipe.execute()
            except RedisError as exc:
                log.warning("releasing %d registry slots failed: %s; will retry", len(batch), exc)
                self._releases[:0] = batch
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
        """Keep `ws:pod:POD_ID` alive: our slots count while it exists."""
        await self.redis.set(redis_layout.pod(self.pod_id), b"1", ex=POD_KEY_TTL_SECONDS)

    async def forget_pod(self) -> None:
        try:
            await self.redis.delete(redis_layout.pod(self.pod_id))
        except RedisError:
            pass
