"""The per-user registry (push/user_registry.py + register.lua) against a real redis-server."""

from __future__ import annotations

import asyncio
import time

import orjson
import redis.asyncio as aioredis
import uvloop

from ordertrack import redis_layout
from ordertrack.push import user_registry
from tests.support import wait_for_async


def run(coro):
    return uvloop.run(coro)


async def register(reg: user_registry.UserRegistry, client, users_and_ids, wall_ms=1000):
    await reg.load_script()
    pipe = client.pipeline(transaction=False)
    groups = reg.queue_register(pipe, users_and_ids, wall_ms)
    pipe.ping()
    replies = await pipe.execute(raise_on_error=False)
    assert len(groups) == 1 and replies[1] is True  # one command: the next reply is the ping's
    return user_registry.script_results(replies[:1], groups, len(users_and_ids))


def test_a_batch_registers_every_connection_in_one_script_call(redis_url):
    async def scenario():
        client = aioredis.Redis.from_url(redis_url)
        reg = user_registry.UserRegistry(client, "podA", limit=5)
        await reg.heartbeat()
        results = await register(reg, client, [("u1", "c1"), ("u2", "c2"), ("u1", "c3")])
        assert results == [[], [], []]
        assert await client.zrange(redis_layout.user("u1"), 0, -1) == [b"podA|c1", b"podA|c3"]
        assert await client.zrange(redis_layout.user("u2"), 0, -1) == [b"podA|c2"]
        assert 0 < await client.ttl(redis_layout.user("u1")) <= user_registry.USER_KEY_TTL_SECONDS
        await client.aclose()

    run(scenario())


def test_the_sixth_connection_evicts_the_oldest_and_tells_its_pod(redis_url):
    async def scenario():
        client = aioredis.Redis.from_url(redis_url)
        other = user_registry.UserRegistry(client, "podB", limit=5)
        await other.heartbeat()
        await register(other, client, [("u", f"old{i}") for i in range(5)], wall_ms=1)
        pubsub = client.pubsub()
        await pubsub.subscribe(redis_layout.control("podB"))
        await pubsub.get_message(timeout=1)  # the subscribe confirmation
        mine = user_registry.UserRegistry(client, "podA", limit=5)
        # two of this pod's own in one batch: the second one evicts one more
        results = await register(mine, client, [("u", "new1"), ("u", "new2")], wall_ms=2)
        assert results == [[b"podB|old0"], [b"podB|old1"]]
        told = [await pubsub.get_message(timeout=1) for _ in range(2)]
        assert [orjson.loads(m["data"]) for m in told] == [
            {"op": "evict", "connection_id": "old0"}, {"op": "evict", "connection_id": "old1"}]
        assert await client.zcard(redis_layout.user("u")) == 5
        await pubsub.aclose()
        await client.aclose()

    run(scenario())


def test_slots_of_a_dead_pod_are_dropped_before_counting(redis_url):
    async def scenario():
        client = aioredis.Redis.from_url(redis_url)
        dead = user_registry.UserRegistry(client, "podDead", limit=5, lease_seconds=0.05)
        await dead.heartbeat()  # its lease, then it renews it no more
        await register(dead, client, [("u", f"d{i}") for i in range(5)])
        mine = user_registry.UserRegistry(client, "podA", limit=5)
        lease_end_ms = await client.zscore(redis_layout.PODS_KEY, "podDead")
        await wait_for_async(lambda: time.time() * 1000 > lease_end_ms, 5, interval=0.01,
                             what="podDead's lease over")
        await mine.heartbeat()  # reads every lease: podDead's has run out
        assert await register(mine, client, [("u", "c1")]) == [[]]
        assert await client.zrange(redis_layout.user("u"), 0, -1) == [b"podA|c1"]
        await client.aclose()

    run(scenario())


def test_an_unusable_user_key_fails_that_connection_alone(redis_url):
    async def scenario():
        client = aioredis.Redis.from_url(redis_url)
        await client.set(redis_layout.user("broken"), "not a zset")
        reg = user_registry.UserRegistry(client, "podA", limit=5)
        results = await register(reg, client, [("ok1", "c1"), ("broken", "c2"), ("ok2", "c3")])
        assert results[0] == [] and results[2] == []
        assert isinstance(results[1], Exception) and "WRONGTYPE" in str(results[1])
        assert await client.zcard(redis_layout.user("ok2")) == 1
        await client.aclose()

    run(scenario())


def test_releases_free_the_slots_in_one_batch(redis_url):
    async def scenario():
        client = aioredis.Redis.from_url(redis_url)
        reg = user_registry.UserRegistry(client, "podA", limit=5)
        await register(reg, client, [("u", "c1"), ("u", "c2"), ("v", "c3")])
        task = asyncio.get_running_loop().create_task(reg.run_slot_frees())
        reg.free_slot("u", "c1")
        reg.free_slot("v", "c3")
        async def released() -> bool:
            return await client.zcard(redis_layout.user("v")) == 0

        await wait_for_async(released, 10, what="the releases applied")
        assert await client.zrange(redis_layout.user("u"), 0, -1) == [b"podA|c2"]
        assert await client.zcard(redis_layout.user("v")) == 0
        task.cancel()
        await client.aclose()

    run(scenario())


def test_reregister_puts_live_connections_back_after_an_empty_restart(redis_url):
    async def scenario():
        client = aioredis.Redis.from_url(redis_url)
        reg = user_registry.UserRegistry(client, "podA", limit=5)
        await reg.reregister([("u", "c1"), ("w", "c2")])
        assert await client.zrange(redis_layout.user("u"), 0, -1, withscores=True) == [(b"podA|c1", 0.0)]
        assert await client.zscore(redis_layout.PODS_KEY, "podA") > time.time() * 1000
        await reg.forget_pod()
        assert await client.zscore(redis_layout.PODS_KEY, "podA") == 0
        await client.aclose()

    run(scenario())


def test_a_batch_reads_every_order_state_in_one_script_call(redis_url):
    """states.lua (push/admission.py): each connection_ack's state in one call; an order whose
    key is unusable fails its own connection, not the batch."""
    async def scenario():
        from ordertrack.push import admission

        client = aioredis.Redis.from_url(redis_url)
        await client.hset(redis_layout.state("o1"), mapping={
            "status": "in_transit", "carrier": "dhl", "seq": "7", "location": "Newark NJ"})
        await client.set(redis_layout.state("o3"), "not a hash")
        await client.script_load(admission.STATES_LUA)
        pipe = client.pipeline(transaction=False)
        groups = admission.queue_states(pipe, ["o1", "o2", "o3"], cluster=False)
        pipe.ping()
        replies = await pipe.execute(raise_on_error=False)
        assert len(groups) == 1 and replies[1] is True  # one command: the next reply is the ping's
        first, missing, broken = user_registry.script_results(replies[:1], groups, 3)
        assert admission.decode_states(first) == redis_layout.OrderStateHash(
            status="in_transit", location="Newark NJ", carrier="dhl", seq=7)
        assert admission.decode_states(missing) == redis_layout.OrderStateHash()
        assert isinstance(broken, Exception) and "WRONGTYPE" in str(broken)
        await client.aclose()

    run(scenario())


def test_dead_pods_are_those_whose_lease_ran_out():
    leases = user_registry.decode_leases([(b"pod-a:1", 1000.0), (b"pod-b:2", 5000.0), (b"me:3", 10.0),
                                     (b"stopped:4", 0.0)])
    # a lease over at `now` is dead; this pod never is (its own renewal may just be late);
    # a pod not in the last read (just started) is not listed, so it counts as alive
    assert user_registry.dead_pods(leases, 1000.0, own_pod="me:3") == ("pod-a:1", "stopped:4")
    assert user_registry.dead_pods(leases, 999.0, own_pod="me:3") == ("stopped:4",)


def test_a_batch_is_one_script_call_per_hash_slot_on_a_cluster_only():
    keys = [redis_layout.user(u) for u in ("alice", "bob", "alice", "carol")]
    assert user_registry.slot_groups(keys, cluster=False) == [[0, 1, 2, 3]]
    groups = user_registry.slot_groups(keys, cluster=True)
    assert [0, 2] in groups and sorted(i for g in groups for i in g) == [0, 1, 2, 3]
    assert user_registry.slot_groups([], cluster=False) == []
