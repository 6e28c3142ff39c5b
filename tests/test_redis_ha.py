"""The fault suite (issue 12): real redis-server / redis-sentinel / cluster processes on loopback,
real `ordertrack serve` and `ordertrack api` processes, real WebSocket clients.

Each test prints its figures (failover time, events lost, duplicates) with `-s`; bench/
bench_redis_ha.py runs the same scenarios for BENCHMARKS.md.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import httpx
import pytest
import redis as sync_redis
import websockets
from redis.exceptions import RedisError

from ordertrack import config, redis_connect, redis_layout
from ordertrack.api.main import SETTINGS as API
from ordertrack.commands.flag import SETTINGS as FLAG
from ordertrack.gateway.publisher import Publisher
from ordertrack.gateway.quota import Quota, Window
from ordertrack.gateway.scheduler import Scheduler, mark_pushed
from ordertrack.gateway.settings import SETTINGS as GATEWAY
from ordertrack.ingest.settings import SETTINGS as INGEST
from ordertrack.models import Order, TrackingEvent
from ordertrack.push import user_registry
from ordertrack.push.settings import SETTINGS as POD
from ordertrack.store import open_store
from ordertrack.store import sqlite as sqlite_store
from tests import test_poller
from tests.pods import close_code, connect, recv_event, recv_json, start_pod
from tests.redis_topologies import FreezingProxy
from tests.support import REPO, wait_for
from tests.test_api import get_tracking, running_api
from tests.test_poller import gateway_env, store_call

#: the carrier sandbox, reset for each test (conftest's sandbox_url), as the gateway's tests use it
sandbox = test_poller.sandbox

#: short settings: the watchdog's deadline, the pods' lease
FAST = {"redis_subscription_deadline_seconds": 2, "pod_lease_seconds": 1.5}


class Watcher:
    """A customer's client: every `tracking_update` seq it got; reconnects with resume if dropped."""

    def __init__(self, pod, token: str, order_id: str):
        self.pod, self.token, self.order_id = pod, token, order_id
        self.seqs: list[int] = []
        self.resumes = 0
        self.task: asyncio.Task | None = None

    async def start(self) -> Watcher:
        self.ws = await connect(self.pod, self.token, self.order_id)
        ack = await recv_json(self.ws)
        assert ack["event"] == "connection_ack"
        self.acked_seq = ack["data"]["seq"]
        self.task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        while True:
            try:
                message = await recv_json(self.ws, timeout=3600)
            except websockets.ConnectionClosed as exc:
                if exc.rcvd and exc.rcvd.code in (4001, 4003):  # the client must not reconnect
                    return
                self.resumes += 1
                last = max(self.seqs, default=self.acked_seq)
                self.ws = await connect(self.pod, self.token, self.order_id, query=f"last_seq={last}")
                continue
            if message["event"] == "tracking_update":
                self.seqs.append(message["data"]["seq"])

    async def stop(self) -> None:
        self.task.cancel()
        await self.ws.close()


class Gateway:
    """The gateway's write path: the store first, then `Publisher.publish` (the gateway's own
    publish); a publish that fails on a Redis error is retried until Redis takes it, as the
    poller republishes what a failed Redis call left out."""

    def __init__(self, store, redis, carrier: str = "dhl"):
        self.store, self.publisher, self.carrier = store, Publisher(redis), carrier
        self.published: dict[str, list[int]] = {}
        self.retries = 0

    async def emit(self, order_id: str, n: int) -> None:
        event = TrackingEvent("in_transit", f"Hub {n}", f"2025-10-03T{n // 60 % 24:02d}:{n % 60:02d}:00Z",
                              "2025-10-04T18:00:00Z")
        (stored,) = await self.store.append_events(order_id, [event])
        while True:
            try:
                await self.publisher.publish(order_id, self.carrier, stored)
                break
            except (RedisError, OSError):
                self.retries += 1
                await asyncio.sleep(0.1)
        self.published.setdefault(order_id, []).append(stored.seq)

    async def run(self, order_ids: list[str], count: int, interval: float) -> None:
        for n in range(1, count + 1):
            for order_id in order_ids:
                await self.emit(order_id, n)
            await asyncio.sleep(interval)


class Readiness:
    """Polls the pods' /readyz every 50 ms: (time, port, status) samples."""

    def __init__(self, pods):
        self.pods = pods
        self.samples: list[tuple[float, int, int]] = []

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=1) as client:
            while True:
                for pod in self.pods:
                    try:
                        status = (await client.get(pod.base + "/readyz")).status_code
                    except httpx.HTTPError:
                        status = 0
                    self.samples.append((time.monotonic(), pod.port, status))
                await asyncio.sleep(0.05)

    def statuses(self, pod, after: float) -> list[int]:
        return [status for at, port, status in self.samples if port == pod.port and at >= after]

    def live_again(self, pod, after: float) -> float | None:
        """When the pod was ready again after its first 503 following `after`."""
        down = False
        for at, port, status in self.samples:
            if port != pod.port or at < after:
                continue
            if status != 200:
                down = True
            elif down:
                return at
        return None


async def background(coro) -> asyncio.Task:
    return asyncio.create_task(coro)


async def stop(*tasks) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def add_orders(store, order_ids: list[str], user_for) -> None:
    for order_id in order_ids:
        await store.add_order(Order(order_id, user_for(order_id), "dhl", f"JD{order_id}"))


async def wait_all_delivered(watchers, gateway, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(len(w.seqs) >= len(gateway.published[w.order_id]) for w in watchers):
            return
        await asyncio.sleep(0.05)


def api_dir(tmp_path):
    directory = tmp_path / "api"
    directory.mkdir()
    return directory


def log_time(line: dict) -> float:
    """A JSON log line's `ts` as epoch seconds."""
    from datetime import datetime

    return datetime.fromisoformat(line["ts"].replace("Z", "+00:00")).timestamp()


def lost_and_duplicated(watchers, gateway) -> tuple[int, int]:
    lost = sum(len(set(gateway.published[w.order_id]) - set(w.seqs)) for w in watchers)
    duplicated = sum(len(w.seqs) - len(set(w.seqs)) for w in watchers)
    return lost, duplicated


# --- Sentinel ---------------------------------------------------------------------------------
async def test_sentinel_failover_every_client_gets_every_event_once(procs, tmp_path, keys,
                                                                    sentinel_topology):
    url = sentinel_topology.url
    pods = [start_pod(procs, tmp_path, url, keys, name=f"pod{i}", **FAST) for i in range(2)]
    orders = [f"ord_fo{i}" for i in range(4)]
    with running_api(SimpleNamespace(url=url), keys, api_dir(tmp_path)) as api:
        store = await open_store(api.db)
        redis = redis_connect.command_client(redis_connect.parse_redis_url(url))
        try:
            await add_orders(store, orders, lambda order_id: f"user_{order_id}")
            gateway = Gateway(store, redis)
            await gateway.emit(orders[0], 0)  # Redis reachable through the sentinels
            gateway.published.clear()
            # each order watched twice, once on each pod
            watchers = [await Watcher(pod, keys.token(f"user_{order_id}", order_id), order_id).start()
                        for order_id in orders for pod in pods]
            readiness = Readiness(pods)
            rest_statuses: list[int] = []

            async def rest_poll():
                token = keys.token(f"user_{orders[0]}", orders[0])
                while True:
                    response = await asyncio.to_thread(get_tracking, api, orders[0], token)
                    rest_statuses.append(response.status_code)
                    await asyncio.sleep(0.2)

            monitor = await background(readiness.run())
            rest = await background(rest_poll())
            feed = await background(gateway.run(orders, count=40, interval=0.1))
            try:
                async with asyncio.timeout(40):
                    await asyncio.sleep(1.0)
                    killed_at = time.monotonic()
                    sentinel_topology.kill_primary()
                    await asyncio.to_thread(sentinel_topology.wait_promoted)
                    await feed
                    await wait_all_delivered(watchers, gateway)
                    await asyncio.sleep(0.3)  # nothing more (no duplicate) arrives late
            finally:
                await stop(monitor, rest, feed)

            for watcher in watchers:
                assert watcher.seqs == gateway.published[watcher.order_id], watcher.order_id
                assert watcher.resumes <= 1
            lost, duplicated = lost_and_duplicated(watchers, gateway)
            assert (lost, duplicated) == (0, 0)
            for pod in pods:
                assert 503 in readiness.statuses(pod, killed_at), "readyz stayed 200 in the gap"
                assert readiness.statuses(pod, killed_at)[-1] == 200
            assert rest_statuses and set(rest_statuses) == {200}
            failover = max(readiness.live_again(pod, killed_at) for pod in pods) - killed_at
            print(f"\nsentinel failover: every pod live again {failover:.2f}s after SIGKILL; "
                  f"events {sum(map(len, gateway.published.values()))}, lost {lost}, "
                  f"duplicates {duplicated}, gateway retries {gateway.retries}")
            for watcher in watchers:
                await watcher.stop()
        finally:
            await redis_connect.close_client(redis)
            await store.close()


# --- a silent subscription --------------------------------------------------------------------
async def test_silent_subscription_is_noticed_within_the_deadline_and_loses_nothing(
        procs, tmp_path, keys, own_redis):
    proxy = FreezingProxy(own_redis.port)
    proxy.start()
    try:
        pod = start_pod(procs, tmp_path, proxy.url, keys, **FAST)
        redis = redis_connect.command_client(redis_connect.parse_redis_url(own_redis.url))
        store = await open_store(f"sqlite:///{tmp_path / 'tracking.db'}")
        try:
            await add_orders(store, ["ord_quiet"], lambda order_id: "u_quiet")
            gateway = Gateway(store, redis)
            watcher = await Watcher(pod, keys.token("u_quiet", "ord_quiet"), "ord_quiet").start()
            for n in (1, 2):
                await gateway.emit("ord_quiet", n)
            await asyncio.sleep(0.3)
            assert proxy.freeze() >= 1  # the subscription (and the pooled commands) go silent
            frozen_wall = time.time()
            for n in range(3, 8):
                await gateway.emit("ord_quiet", n)
                await asyncio.sleep(0.2)
            await wait_all_delivered([watcher], gateway)
            assert watcher.seqs == [1, 2, 3, 4, 5, 6, 7]
            assert watcher.resumes == 0
            # noticed within the deadline (2 s after the last message) and said so once; the
            # pod is not ready from then until resubscribed (a few ms here), ready after
            silent = [line for line in pod.log_lines()
                      if line.get("msg", "").startswith("redis subscription silent")]
            assert len(silent) == 1 and silent[0]["level"] == "error"
            noticed = log_time(silent[0]) - frozen_wall
            assert noticed < FAST["redis_subscription_deadline_seconds"] + 1
            resubscribed = [line for line in pod.log_lines() if line.get("resubscribed") is True]
            live_again = log_time(resubscribed[0]) - frozen_wall
            await asyncio.to_thread(wait_for, pod.ready, 5, what="pod ready")
            print(f"\nsilent subscription: noticed {noticed:.2f}s, live again {live_again:.2f}s "
                  f"after the freeze (deadline {FAST['redis_subscription_deadline_seconds']}s); "
                  f"lost 0, duplicates 0")
            await watcher.stop()
        finally:
            await redis_connect.close_client(redis)
            await store.close()
    finally:
        proxy.stop()


# --- Redis Cluster ----------------------------------------------------------------------------
async def test_cluster_whole_flow(procs, tmp_path, keys, redis_cluster):
    url = redis_cluster.url
    pods = [start_pod(procs, tmp_path, url, keys, name=f"cpod{i}", **FAST) for i in range(2)]
    orders = [f"ord_cl{i}" for i in range(6)]  # spread over the three masters' slots
    with running_api(SimpleNamespace(url=url), keys, api_dir(tmp_path)) as api:
        store = await open_store(api.db)
        redis = redis_connect.command_client(redis_connect.parse_redis_url(url))
        try:
            await add_orders(store, orders, lambda order_id: "c_user")
            gateway = Gateway(store, redis)
            watchers = [await Watcher(pods[i % 2], keys.token("c_user", order_id), order_id).start()
                        for i, order_id in enumerate(orders[:5])]
            await gateway.run(orders, count=5, interval=0.02)
            await wait_all_delivered(watchers, gateway)
            for watcher in watchers:
                assert watcher.seqs == [1, 2, 3, 4, 5]
            # per-user limit across the two pods: the 6th connection closes the oldest with 4001
            oldest = watchers[0]
            oldest.task.cancel()
            sixth = await connect(pods[1], keys.token("c_user", orders[5]), orders[5])
            assert (await recv_json(sixth))["event"] == "connection_ack"
            assert await close_code(oldest.ws) == 4001
            assert await redis.zcard(redis_layout.user("c_user")) == 5
            # resume: the stream on its master replays what came after last_seq
            async with await connect(pods[0], keys.token("c_user", orders[1]), orders[1],
                                     query="last_seq=3") as ws:
                assert (await recv_json(ws))["data"]["seq"] == 5
                assert [(await recv_event(ws, "tracking_update"))["data"]["seq"]
                        for _ in range(2)] == [4, 5]
            # REST from the store, its seq from the state hash
            body = get_tracking(api, orders[2], keys.token("c_user", orders[2])).json()
            assert body["seq"] == 5 and len(body["history"]) == 5
            assert body["realtime"]["enabled"] is True
            await sixth.close()
            for watcher in watchers[1:]:
                await watcher.stop()
        finally:
            await redis_connect.close_client(redis)
            await store.close()


# --- three pods on one Redis ------------------------------------------------------------------
async def test_three_pods_limit_kill_switch_and_a_killed_pods_slots(procs, tmp_path, keys, redis_url):
    pods = [start_pod(procs, tmp_path, redis_url, keys, name=f"tri{i}", **FAST) for i in range(3)]
    redis = redis_connect.command_client(redis_connect.parse_redis_url(redis_url))
    store = await open_store(f"sqlite:///{tmp_path / 'tracking.db'}")
    try:
        await add_orders(store, ["ord_tri"], lambda order_id: "tri_user")
        token = keys.token("tri_user", "ord_tri")
        # five connections over three pods, the oldest on tri0
        watchers = [await Watcher(pods[i % 3], token, "ord_tri").start() for i in range(5)]
        gateway = Gateway(store, redis)
        await gateway.emit("ord_tri", 1)
        await wait_all_delivered(watchers, gateway)
        assert all(w.seqs == [1] for w in watchers)
        # the 6th anywhere closes the oldest with 4001
        watchers[0].task.cancel()
        sixth = await connect(pods[2], token, "ord_tri")
        await recv_json(sixth)
        assert await close_code(watchers[0].ws) == 4001
        await sixth.close()
        await asyncio.sleep(0.2)
        # tri1 is SIGKILLed (it holds watchers 1 and 4): once its lease is over, its clients
        # reconnect elsewhere and none of the live ones is evicted for the ghosts
        for watcher in watchers:
            watcher.task.cancel()
        pods[1].proc.kill()
        pods[1].proc.wait()
        await asyncio.sleep(FAST["pod_lease_seconds"] + 1)
        moved = [await Watcher(pods[0], token, "ord_tri").start() for _ in range(2)]
        kept = [watchers[2], watchers[3]]  # on tri2 and tri0
        for watcher in kept:
            await watcher.ws.send('{"event":"heartbeat"}')
            assert (await recv_event(watcher.ws, "heartbeat_ack"))["event"] == "heartbeat_ack"
        # the ghosts are gone (without that the 6th member would evict one ghost, the other stays)
        assert await redis.zcard(redis_layout.user("tri_user")) == 4
        reasons = [d["reason"] for pod in (pods[0], pods[2]) for d in pod.disconnects()]
        assert reasons.count("connection_limit") == 1  # watcher 0's, nothing since
        for watcher in moved:
            watcher.task.cancel()
        # the kill switch closes every pod's connections with 4003
        await redis.set(redis_layout.FLAG_KEY, b'{"enabled": false}')
        await redis.publish(redis_layout.CONTROL_ALL, redis_layout.encode_flag_changed())
        codes = [await close_code(w.ws) for w in (*kept, *(m for m in moved))]
        assert codes == [4003] * 4
    finally:
        await redis_connect.close_client(redis)
        await store.close()


async def test_cluster_gateway_scripts_quota_claims_and_pushes(redis_cluster):
    """The gateway's atomic scripts (quota, claims) and pipelines run on a cluster: each script's
    keys share the carrier's hash tag."""
    redis = redis_connect.command_client(redis_connect.parse_redis_url(redis_cluster.url))
    try:
        quota = Quota(redis, {"ups": (Window(3, 60),)}, replica="r0")
        granted = [(await quota.acquire("ups"))[0] for _ in range(4)]
        assert granted == [True, True, True, False]
        await quota.pause("ups", time.time() + 30)
        assert (await quota.acquire("ups"))[0] is False
        scheduler = Scheduler(redis, "r0")
        assert await scheduler.sync("fedex", ["ord_q1", "ord_q2"]) == 2
        claim = await scheduler.claim("fedex", interval=60, batch_size=5, spacing_seconds=0.0)
        assert sorted(claim.order_ids) == ["ord_q1", "ord_q2"]
        assert await redis.get(redis_layout.claim("fedex", "ord_q1")) == b"r0"
        await scheduler.release("fedex", claim.order_ids)
        assert await redis.get(redis_layout.claim("fedex", "ord_q1")) is None
        await mark_pushed(redis, "fedex", ["ord_q1"], time.time())
        assert list(await scheduler.pushed_since("fedex", 0)) == ["ord_q1"]
    finally:
        await redis_connect.close_client(redis)


def test_every_process_takes_every_redis_url_form():
    """The shared REDIS group: one parser (redis_connect's) for the pod, API, gateway, ingest and
    the operator commands; a bad URL is one line with its password hidden."""
    forms = {
        "redis+sentinel://:pw@s1:26379,s2/tracking-events-prod/2": redis_connect.SENTINEL,
        "redis+cluster://r1:6379,r2:6379": redis_connect.CLUSTER,
        "rediss://:pw@redis.internal:6380/0": redis_connect.STANDALONE,
    }
    for settings in (POD, API, GATEWAY, INGEST, FLAG):
        for url, topology in forms.items():
            cfg = config.load(settings, environ={"REDIS_URL": url})
            assert redis_connect.target_from_settings(cfg).topology == topology
        cfg = config.load(settings, environ={"REDIS_URL": "redis://seed:6379", "REDIS_CLUSTER": "1"})
        assert redis_connect.target_from_settings(cfg).topology == redis_connect.CLUSTER
        with pytest.raises(config.ConfigError) as bad:
            config.load(settings, environ={"REDIS_URL": "redis+sentinel://:s3cret@s1:26379"})
        assert "s3cret" not in str(bad.value) and "***" in str(bad.value)
        assert "service name" in str(bad.value)


def test_flag_command_on_a_cluster(redis_cluster):
    result = subprocess.run([sys.executable, "-m", "ordertrack", "flag", "--enabled", "false"],
                            env={**os.environ, "REDIS_URL": redis_cluster.url},
                            capture_output=True, text=True, cwd=REPO, timeout=30)
    assert result.returncode == 0, result.stderr
    assert '"enabled":false' in result.stdout.replace(" ", "")
    node = sync_redis.RedisCluster(host="127.0.0.1", port=redis_cluster.ports[0])
    try:
        assert b'"enabled":false' in node.get(redis_layout.FLAG_KEY).replace(b" ", b"")
        node.delete(redis_layout.FLAG_KEY)
    finally:
        node.close()


# --- the gateway killed mid-cycle, the store unavailable for a while ---------------------------
#: the sandbox's DHL allows 100 requests a minute: two orders polled every 1.5 s stay under it
SLOW_DHL = {"DHL_POLL_INTERVAL_SECONDS": "1.5"}


def _numbers(tag: str, count: int) -> list[str]:
    return [f"JD0146000{tag}{i}" for i in range(count)]


async def _watch_gateway_orders(procs, tmp_path, keys, redis_url, db, ids, numbers):
    orders = [test_poller.order(i, "dhl", n) for i, n in zip(ids, numbers, strict=True)]
    await asyncio.to_thread(test_poller.add_orders, db, orders)
    pod = start_pod(procs, tmp_path, redis_url, keys, name="gwpod")
    watchers = [await Watcher(pod, keys.token("user_1", order_id), order_id).start() for order_id in ids]
    return pod, watchers


def _advance(sandbox_base: str, numbers: list[str]) -> None:
    for number in numbers:
        httpx.post(f"{sandbox_base}/_admin/advance",
                   json={"tracking_number": number, "steps": 1}).raise_for_status()


async def _all_published(db, watchers, events: int) -> dict[str, list[int]]:
    """Wait until the store has `events` events of every order and every watcher got them all;
    returns the store's seqs by order."""
    def history() -> dict[str, list[int]]:
        return {w.order_id: [e.seq for e in store_call(db, "history", w.order_id)] for w in watchers}

    def caught_up() -> bool:
        stored = history()
        return all(len(stored[w.order_id]) >= events and stored[w.order_id] == w.seqs
                   for w in watchers)

    await asyncio.to_thread(wait_for, caught_up, 20, what="every stored event delivered")
    return await asyncio.to_thread(history)


async def test_gateway_killed_mid_cycle_loses_and_duplicates_nothing(sandbox, procs, tmp_path,
                                                                     keys, redis_url):
    db = f"sqlite:///{tmp_path}/track.db"
    ids, numbers = [f"ord_gk{i}" for i in range(2)], _numbers("GWKILL", 2)
    _pod, watchers = await _watch_gateway_orders(procs, tmp_path, keys, redis_url, db, ids, numbers)
    env = gateway_env(sandbox, redis_url, db, **SLOW_DHL)
    gateway = procs.start("poll", env=env, log=tmp_path / "poll1.log")
    await asyncio.to_thread(wait_for, lambda: all(w.seqs for w in watchers), 15,
                            what="first events delivered")
    _advance(sandbox, numbers)
    await asyncio.sleep(0.6)  # mid-cycle: some orders polled and published, some not yet
    gateway.kill()
    gateway.wait()
    # the orders it had claimed stay claimed for the claim TTL (120 s, not a setting): expire
    # those claims as time would (nothing is lost meanwhile, only late)
    client = sync_redis.Redis.from_url(redis_url)
    for key in client.keys(redis_layout.claim_prefix("dhl").replace("{", "[{]").replace("}", "[}]") + "*"):
        client.delete(key)
    client.close()
    _advance(sandbox, numbers)  # the shipments move on while no gateway runs
    gateway = procs.start("poll", env=env, log=tmp_path / "poll2.log")
    history = await _all_published(db, watchers, 3)
    for watcher in watchers:
        assert watcher.seqs == history[watcher.order_id] == [1, 2, 3]  # each once, in order
    for watcher in watchers:
        await watcher.stop()


async def test_store_unavailable_for_a_while_the_gateway_keeps_its_place(sandbox, procs, tmp_path,
                                                                         keys, redis_url):
    import sqlite3

    path = tmp_path / "track.db"
    db = f"sqlite:///{path}"
    ids, numbers = [f"ord_su{i}" for i in range(2)], _numbers("STORE", 2)
    _pod, watchers = await _watch_gateway_orders(procs, tmp_path, keys, redis_url, db, ids, numbers)
    gateway = procs.start("poll", env=gateway_env(sandbox, redis_url, db, **SLOW_DHL),
                          log=tmp_path / "poll.log")
    await asyncio.to_thread(wait_for, lambda: all(w.seqs for w in watchers), 15,
                            what="first events delivered")
    # the store refuses writes for a while (an exclusive lock held past the store's 10 s busy
    # timeout), as a database failover would
    lock = sqlite3.connect(path, timeout=1, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    _advance(sandbox, numbers)
    await asyncio.sleep(sqlite_store.BUSY_TIMEOUT_MS / 1000 + 1.5)
    assert gateway.poll() is None, "the gateway must survive a store outage"
    assert "database is locked" in (tmp_path / "poll.log").read_text()  # it did fail
    assert all(len(w.seqs) == 1 for w in watchers)  # nothing published that was not stored
    lock.execute("ROLLBACK")
    lock.close()
    history = await _all_published(db, watchers, 2)
    for watcher in watchers:
        assert watcher.seqs == history[watcher.order_id] == [1, 2]
    for watcher in watchers:
        await watcher.stop()


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

