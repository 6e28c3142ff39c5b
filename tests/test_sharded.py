"""PUBSUB_MODE=sharded (issue 22): SPUBLISH on the order's shard channel, pods SSUBSCRIBE per
watched order, one subscription connection per cluster node; against a real Redis Cluster the
test starts (3 masters, with replicas where a master is killed), real `ordertrack serve` pods
and real WebSocket clients. Every test asserts every `seq` reached every watcher exactly once.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest
import redis as sync_redis
from redis.crc import key_slot

from ordertrack import config, malformed, redis_connect, redis_layout
from ordertrack.devtools.redis_server import RedisServer
from ordertrack.devtools.redis_topologies import ClusterTopology
from ordertrack.devtools.resp import bulk, confirmation, feed
from ordertrack.gateway.publisher import Publisher
from ordertrack.models import StoredEvent
from ordertrack.push import pubsub_reader, shard_subscriptions
from ordertrack.push.hub import Watch
from ordertrack.push.shard_subscriptions import SlotMap
from tests.support import REPO, free_port
from tests.support.pods import close_code, connect, recv_json, start_pod
from tests.support.redis_topologies import FreezingProxy
from tests.test_pubsub_reader import Calls

IMPLS = sorted(pubsub_reader.IMPLEMENTATIONS)
FAST = {"redis_subscription_deadline_seconds": 2, "pod_lease_seconds": 1.5}


def smessage(channel: bytes, payload: bytes) -> bytes:
    return b"*3\r\n" + bulk(b"smessage") + bulk(channel) + bulk(payload)


def shard(order_id: str) -> bytes:
    return redis_layout.shard_channel(order_id).encode()


# --- pure parts ----------------------------------------------------------------------------------
def test_publish_channels_per_mode():
    assert redis_layout.publish_channels("o1", "pattern") == ("order:tracking:o1", "")
    assert redis_layout.publish_channels("o1", "sharded") == ("", "order:tracking:shard:{o1}")
    assert redis_layout.publish_channels("o1", "both") == ("order:tracking:o1",
                                                           "order:tracking:shard:{o1}")
    # the shard channel is in the slot of the order's state and stream (publish.lua's keys)
    assert key_slot(shard("o1")) == key_slot(redis_layout.state("o1").encode())
    assert redis_layout.shard_channel_order(shard("ord_ü")) == "ord_ü"
    assert redis_layout.shard_channel_order(b"order:tracking:o1") is None


def test_pubsub_mode_setting():
    assert config.pubsub_mode(" Sharded ") == "sharded"
    with pytest.raises(ValueError, match="pattern, sharded or both"):
        config.pubsub_mode("shards")


def test_slot_map_and_grouping():
    slot_map = SlotMap([(0, 5460, ("a", 1)), (5461, 10922, ("b", 2)), (10923, 16383, ("c", 3))])
    assert slot_map.node_for_slot(0) == ("a", 1)
    assert slot_map.node_for_slot(5461) == ("b", 2)
    assert slot_map.node_for_slot(16383) == ("c", 3)
    assert SlotMap([(0, 10, ("a", 1))]).node_for_slot(11) is None
    orders = [f"ord_{i}" for i in range(30)]
    groups = shard_subscriptions.group_by_node(orders, slot_map)
    assert sorted(o for group in groups.values() for o in group) == sorted(orders)
    for address, group in groups.items():
        assert all(slot_map.node_for(o) == address for o in group)


@pytest.mark.parametrize("impl_name", IMPLS)
def test_reader_smessage_and_shard_confirmations(impl_name):
    calls = Calls()
    shard_calls = []
    reader = pubsub_reader.IMPLEMENTATIONS[impl_name]({"ord_w": Watch()}, subscriptions=0,
                                                      **calls.kwargs())
    reader.on_shard = lambda kind, channel: shard_calls.append((kind, channel))
    feed(reader, confirmation(b"ssubscribe", shard("ord_w"), 1)
         + smessage(shard("ord_other"), b'{"seq": 1}')
         + smessage(shard("ord_w"), b'{"seq": 2}')
         + smessage(b"order:tracking:shard:{}", b"{}")
         + smessage(b"order:tracking:shard:{ord_w", b"{}")
         + smessage(b"order:tracking:ord_w", b"{}")
         + confirmation(b"sunsubscribe", shard("ord_w"), 0))
    assert calls.of("update") == [("update", "ord_w", b'{"seq": 2}')]
    assert [c[2] for c in calls.of("malformed")] == [
        malformed.EMPTY_ORDER_ID, malformed.UNEXPECTED_REPLY, malformed.UNEXPECTED_REPLY]
    assert shard_calls == [(b"ssubscribe", shard("ord_w")), (b"sunsubscribe", shard("ord_w"))]
    assert (reader.received, reader.discarded) == (5, 1)


# --- a cluster of the test's own ---------------------------------------------------------------
@pytest.fixture
def cluster(tmp_path):
    """3 masters with a replica each: a test may kill a master or reshard."""
    topology = ClusterTopology(tmp_path / "cluster", replicas=1)
    try:
        topology.start()
        yield topology
    finally:
        topology.stop()


class Feed:
    """The gateway's publish path (publish.lua through `Publisher`) in a given PUBSUB_MODE,
    numbering each order's events; retries a publish a Redis error failed (as the poller does)."""

    def __init__(self, redis, mode: str):
        self.redis, self.mode = redis, mode
        self.published: dict[str, list[int]] = {}

    async def emit(self, order_id: str) -> None:
        seq = len(self.published.get(order_id, ())) + 1
        event = StoredEvent(order_id, seq, "in_transit", f"Hub {seq}",
                            f"2025-10-03T{seq // 60 % 24:02d}:{seq % 60:02d}:00Z", None)
        while True:
            try:
                await Publisher(self.redis, mode=self.mode).publish(order_id, "dhl", event)
                break
            except (sync_redis.RedisError, OSError):
                await asyncio.sleep(0.05)
        self.published.setdefault(order_id, []).append(seq)

    @property
    def total(self) -> int:
        return sum(len(seqs) for seqs in self.published.values())

    async def advance(self, updates: int, timeout: float = 30.0) -> None:
        """Return once `updates` more have been published (a phase of the test spans real
        traffic, counted, rather than a span of time)."""
        target = self.total + updates
        await wait_until(lambda: self.total >= target, timeout)

    async def run(self, order_ids: list[str], interval: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for order_id in order_ids:
                await self.emit(order_id)
            await asyncio.sleep(interval)


class Watcher:
    """A client: every tracking_update seq; on a close it resumes from its last seq (on
    `self.pod`, which the test may point at another pod)."""

    def __init__(self, pod, token: str, order_id: str):
        self.pod, self.token, self.order_id = pod, token, order_id
        self.seqs: list[int] = []
        self.reconnects = 0
        self.acked_seq = 0
        self.ack_times: list[float] = []

    async def start(self) -> Watcher:
        started = time.monotonic()
        self.ws = await connect(self.pod, self.token, self.order_id)
        ack = await recv_json(self.ws)
        assert ack["event"] == "connection_ack", ack
        self.ack_times.append(time.monotonic() - started)
        self.acked_seq = ack["data"]["seq"]
        self.task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        import websockets

        while True:
            try:
                message = await recv_json(self.ws, timeout=3600)
            except websockets.ConnectionClosed:
                self.reconnects += 1
                last = max(self.seqs, default=self.acked_seq)
                self.ws = await connect(self.pod, self.token, self.order_id, query=f"last_seq={last}")
                continue
            if message["event"] == "tracking_update":
                self.seqs.append(message["data"]["seq"])

    def expected(self, feed: Feed) -> list[int]:
        return [seq for seq in feed.published.get(self.order_id, []) if seq > self.acked_seq]

    async def stop(self) -> None:
        self.task.cancel()
        await self.ws.close()


async def all_delivered(watchers, feed: Feed, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(w.seqs == w.expected(feed) for w in watchers):
            return
        await asyncio.sleep(0.05)
    bad = [(w.order_id, w.acked_seq, w.seqs, w.expected(feed)) for w in watchers
           if w.seqs != w.expected(feed)][:3]
    raise AssertionError(f"not every seq exactly once: {bad}")


def shard_subscribers(cluster: ClusterTopology, order_id: str) -> int:
    port = cluster.master_of_slot(shard_subscriptions.channel_slot(order_id))
    client = sync_redis.Redis(port=port)
    try:
        return client.execute_command("PUBSUB", "SHARDNUMSUB", redis_layout.shard_channel(order_id))[1]
    finally:
        client.close()


def pod_connections(cluster: ClusterTopology) -> dict[int, int]:
    """Per master: connections holding shard subscriptions (CLIENT LIST's `ssub`)."""
    counts = {}
    for port in cluster.master_ports():
        client = sync_redis.Redis(port=port, decode_responses=True)
        try:
            counts[port] = sum(1 for c in client.client_list() if int(c.get("ssub", 0)) > 0)
        finally:
            client.close()
    return counts


def replica_in_sync(cluster: ClusterTopology, master: int) -> bool:
    """A replica of `master` has finished its sync and follows it (INFO replication)."""
    for port in cluster.replica_ports():
        client = sync_redis.Redis(port=port, decode_responses=True)
        try:
            info = client.info("replication")
        finally:
            client.close()
        if int(info.get("master_port", 0)) == master and info.get("master_link_status") == "up":
            return True
    return False


def orders_on_every_master(cluster: ClusterTopology, per_master: int, tag: str) -> list[str]:
    wanted = {port: [] for port in cluster.master_ports()}
    n = 0
    while any(len(v) < per_master for v in wanted.values()):
        order_id = f"ord_{tag}{n}"
        n += 1
        port = cluster.master_of_slot(shard_subscriptions.channel_slot(order_id))
        if len(wanted[port]) < per_master:
            wanted[port].append(order_id)
    return [o for v in wanted.values() for o in v]


@pytest.fixture
async def redis_of(cluster):
    client = redis_connect.command_client(redis_connect.parse_redis_url(cluster.url))
    yield client
    await redis_connect.close_client(client)


async def test_publish_script_spublishes_in_the_orders_slot_by_mode(cluster, redis_of):
    """publish.lua: `sharded` SPUBLISHes only (a PSUBSCRIBEr hears nothing), `both` does both,
    `pattern` PUBLISHes only; Redis 7 accepts the SPUBLISH because the channel is in the slot of
    the script's keys."""
    order_id = "ord_lua"
    port = cluster.master_of_slot(shard_subscriptions.channel_slot(order_id))
    node = sync_redis.Redis(port=port)
    any_node = sync_redis.Redis(port=cluster.master_ports()[0])
    sharded, classic = node.pubsub(), any_node.pubsub()
    sharded.ssubscribe(redis_layout.shard_channel(order_id))
    classic.psubscribe(redis_layout.CHANNEL_PATTERN)
    for sub in (sharded, classic):
        assert sub.get_message(timeout=2)["type"] in ("ssubscribe", "psubscribe")
    feed_by_mode = {mode: Feed(redis_of, mode) for mode in ("sharded", "both", "pattern")}
    got = []
    for seq, mode in enumerate(("sharded", "both", "pattern"), start=1):
        feed_by_mode[mode].published[order_id] = list(range(1, seq))
        await feed_by_mode[mode].emit(order_id)
        for name, sub in (("sharded", sharded), ("classic", classic)):
            message = sub.get_message(timeout=0.5)
            if message:
                got.append((mode, name, message["type"]))
    assert got == [("sharded", "sharded", "smessage"), ("both", "sharded", "smessage"),
                   ("both", "classic", "pmessage"), ("pattern", "classic", "pmessage")]
    for client in (sharded, classic):
        client.close()
    node.close()
    any_node.close()


async def test_sharded_pods_subscribe_only_what_they_watch_every_seq_once(
        procs, tmp_path, keys, cluster, redis_of):
    url = cluster.url
    pods = [start_pod(procs, tmp_path, url, keys, name=f"sh{i}", pubsub_mode="sharded", **FAST)
            for i in range(2)]
    orders = orders_on_every_master(cluster, 2, "e2e")
    unwatched = orders_on_every_master(cluster, 1, "none")
    feed = Feed(redis_of, "sharded")
    for order_id in orders + unwatched:
        await feed.emit(order_id)
    watchers = [await Watcher(pods[i % 2], keys.token(f"u_sh{i}", o), o).start()
                for i, o in enumerate(orders)]
    assert all(w.acked_seq == 1 for w in watchers)
    stop = asyncio.Event()
    task = asyncio.create_task(feed.run(orders + unwatched, 0.02, stop))
    await feed.advance(10 * len(orders))
    stop.set()
    await task
    await all_delivered(watchers, feed)
    # per order: one subscriber (its one pod); unwatched orders: none
    assert [shard_subscribers(cluster, o) for o in orders] == [1] * len(orders)
    assert [shard_subscribers(cluster, o) for o in unwatched] == [0] * len(unwatched)
    # one subscription connection per pod per master, not one per order
    assert pod_connections(cluster) == dict.fromkeys(cluster.master_ports(), 2)
    # the last watcher leaves: SUNSUBSCRIBE
    gone = watchers.pop()
    await gone.stop()
    await wait_until(lambda: shard_subscribers(cluster, gone.order_id) == 0)
    for watcher in watchers:
        await watcher.stop()


async def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_admission_while_the_order_is_updated_every_seq_once(
        procs, tmp_path, keys, cluster, redis_of):
    """New connections for orders the pod does not follow yet, opened while their orders are
    published as fast as the feed goes: each acks a seq, then gets every later one once."""
    pod = start_pod(procs, tmp_path, cluster.url, keys, name="adm", pubsub_mode="sharded", **FAST)
    orders = orders_on_every_master(cluster, 3, "adm")
    feed = Feed(redis_of, "sharded")
    stop = asyncio.Event()
    task = asyncio.create_task(feed.run(orders, 0.0, stop))
    watchers = []
    for order_id in orders:
        await asyncio.sleep(0.05)
        watchers += await asyncio.gather(*(Watcher(pod, keys.token(f"u_adm{n}", order_id),
                                                   order_id).start() for n in range(2)))
    await feed.advance(5 * len(orders))
    stop.set()
    await task
    await all_delivered(watchers, feed)
    # most acks came mid-stream (a seq > 0), so the ack / live boundary was exercised
    assert sum(w.acked_seq > 0 for w in watchers) >= len(watchers) // 2
    for watcher in watchers:
        await watcher.stop()


async def test_no_confirmation_within_the_timeout_closes_4002(procs, tmp_path, keys):
    """The slot map names a node that never answers the SSUBSCRIBE (a frozen master): the
    connection is closed 4002 after REDIS_SUBSCRIBE_TIMEOUT_SECONDS, not acked."""
    server = RedisServer(tmp_path / "one", port=free_port())
    server.start()
    proxy = FreezingProxy(server.port)
    proxy.start()
    try:
        pod = start_pod(procs, tmp_path, f"redis://127.0.0.1:{proxy.port}/0", keys, name="to",
                        pubsub_mode="sharded", redis_subscribe_timeout_seconds=1, **FAST)
        ws = await connect(pod, keys.token("u_to", "ord_ok"), "ord_ok")
        assert (await recv_json(ws))["event"] == "connection_ack"
        proxy.freeze()
        started = time.monotonic()
        ws2 = await connect(pod, keys.token("u_to", "ord_late"), "ord_late")
        assert await close_code(ws2, timeout=10) == 4002
        assert time.monotonic() - started < 5
    finally:
        proxy.stop()
        server.stop()


async def test_master_killed_and_slots_resharded_while_updates_flow(
        procs, tmp_path, keys, cluster, redis_of):
    pods = [start_pod(procs, tmp_path, cluster.url, keys, name=f"ha{i}", pubsub_mode="sharded",
                      **FAST) for i in range(2)]
    masters = cluster.master_ports()
    moved_from, moved_to = masters[0], masters[1]
    first = min(f for f, _, port in cluster.slots() if port == moved_from)
    # watched orders in the slots the reshard moves (redis-cli takes the source's lowest ones)
    moving = [o for o in (f"ord_mv{n}" for n in range(20000))
              if first <= shard_subscriptions.channel_slot(o) < first + 1000][:3]
    orders = moving + orders_on_every_master(cluster, 2, "ha")
    feed = Feed(redis_of, "sharded")
    watchers = [await Watcher(pods[i % 2], keys.token(f"u_ha{i}", o), o).start()
                for i, o in enumerate(orders)]
    stop = asyncio.Event()
    task = asyncio.create_task(feed.run(orders, 0.01, stop))
    await feed.advance(5 * len(orders))
    # a slot range with watched orders moves to another master (redis-cli --cluster reshard)
    await asyncio.to_thread(cluster.reshard, moved_from, moved_to, 1000)
    assert {cluster.master_of_slot(shard_subscriptions.channel_slot(o)) for o in moving} == {moved_to}
    # Redis told the pods (an unrequested sunsubscribe); they resubscribed on the new owner
    await wait_until(lambda: [shard_subscribers(cluster, o) for o in moving] == [1] * len(moving))
    await feed.advance(5 * len(orders))
    # a master is killed: its replica takes over
    victim = cluster.master_of_slot(shard_subscriptions.channel_slot(orders[-1]))
    # as in production, its replica is in sync (one still in its first sync may not take over)
    await wait_until(lambda: replica_in_sync(cluster, victim), timeout=30)
    cluster.kill(victim)
    await asyncio.to_thread(cluster.wait_failed_over, victim)
    await feed.advance(10 * len(orders))
    stop.set()
    await task
    await all_delivered(watchers, feed, timeout=30)
    assert sum(w.reconnects for w in watchers) == 0  # the pods kept every client
    for watcher in watchers:
        await watcher.stop()


async def test_switching_modes_pattern_to_sharded_and_back_while_clients_watch(
        procs, tmp_path, keys, cluster, redis_of):
    """README's procedure: publishers to `both`; roll the pods (a new pod in the new mode, the
    old one drained: its clients resume on the new one); publishers to the new mode."""
    orders = orders_on_every_master(cluster, 2, "sw")
    old = start_pod(procs, tmp_path, cluster.url, keys, name="sw-pattern", **FAST)
    feed = Feed(redis_of, "pattern")
    watchers = [await Watcher(old, keys.token(f"u_sw{i}", o), o).start()
                for i, o in enumerate(orders)]
    stop = asyncio.Event()
    task = asyncio.create_task(feed.run(orders, 0.01, stop))
    for new_mode in ("sharded", "pattern"):
        await feed.advance(3 * len(orders))
        feed.mode = config.PUBSUB_BOTH
        await feed.advance(3 * len(orders))
        new = start_pod(procs, tmp_path, cluster.url, keys, name=f"sw-{new_mode}",
                        pubsub_mode=new_mode, **FAST)
        for watcher in watchers:
            watcher.pod = new
        old.proc.terminate()  # SIGTERM: drain with 1001, the clients resume on `new`
        await asyncio.to_thread(old.proc.wait, 20)
        await wait_until(lambda: all(w.reconnects >= 1 for w in watchers))
        await feed.advance(3 * len(orders))
        feed.mode = new_mode
        old = new
        for watcher in watchers:
            watcher.reconnects = 0
    await feed.advance(3 * len(orders))
    stop.set()
    await task
    await all_delivered(watchers, feed)
    for watcher in watchers:
        await watcher.stop()


def test_a_pod_refuses_both(keys, redis_url):
    out = subprocess.run([sys.executable, "-m", "ordertrack", "serve"], cwd=REPO,
                         env={**os.environ, "PUBSUB_MODE": "both",
                              "REDIS_URL": redis_url, "JWT_PUBLIC_KEY": str(keys.public_path),
                              "PORT": "0"},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "PUBSUB_MODE=both is for publishers" in out.stderr


# --- capacity: the fan-out per mode ---------------------------------------------------------------
def test_capacity_pattern_sends_every_update_to_every_pod_sharded_only_to_its_watchers():
    from ordertrack.commands import capacity
    from tests.test_capacity import LOG

    rate, pods = 3_333, 14
    pattern = capacity.pubsub_plan(LOG, "pattern", rate, pods)
    sharded = capacity.pubsub_plan(LOG, "sharded", rate, pods)
    assert pattern.redis_sends_per_second == rate * pods
    assert pattern.pod_messages_read_per_second == rate
    assert pattern.cluster_bus_messages_per_second_per_master == rate
    assert sharded.redis_sends_per_second == pytest.approx(rate)  # one watcher per order
    assert sharded.pod_messages_read_per_second == pytest.approx(rate / pods)
    assert capacity.recommend_mode(pattern, sharded)[0] == "pattern"
    # two watchers per order on 14 pods: ~1.93 pods per order
    assert capacity.pods_per_order(14, 2) == pytest.approx(2 - 1 / 14)


def test_capacity_recommends_sharded_at_1m_and_pattern_cannot_at_10m():
    from ordertrack.commands import capacity
    from tests.test_capacity import LOG

    for watchers, expected in ((1_000_000, "needs"), (10_000_000, "cannot")):
        rate = watchers / 30
        pods = capacity.pods_needed(watchers, 10_000)
        pattern = capacity.pubsub_plan(LOG, "pattern", rate, pods)
        sharded = capacity.pubsub_plan(LOG, "sharded", rate, pods)
        mode, why = capacity.recommend_mode(pattern, sharded)
        assert mode == "sharded" and expected in why
        assert sharded.redis_masters is not None
        assert sharded.redis_sends_per_second < pattern.redis_sends_per_second / 100


async def test_a_master_added_and_given_slots_while_updates_flow(procs, tmp_path, keys, growing,
                                                                 redis_of_growing):
    """A node joins (`redis-cli --cluster add-node`) and takes slots holding watched orders
    (`--cluster reshard`): the pods follow them to it, every seq exactly once."""
    cluster = growing
    pod = start_pod(procs, tmp_path, cluster.url, keys, name="add", pubsub_mode="sharded", **FAST)
    source = cluster.master_ports()[0]
    first = min(f for f, _, port in cluster.slots() if port == source)
    moving = [o for o in (f"ord_add{n}" for n in range(20000))
              if first <= shard_subscriptions.channel_slot(o) < first + 300][:3]
    others = orders_on_every_master(cluster, 1, "addo")
    feed = Feed(redis_of_growing, "sharded")
    watchers = [await Watcher(pod, keys.token(f"u_add{i}", o), o).start()
                for i, o in enumerate(moving + others)]
    stop = asyncio.Event()
    task = asyncio.create_task(feed.run(moving + others, 0.01, stop))
    new = await asyncio.to_thread(cluster.add_master)
    await asyncio.to_thread(cluster.reshard, source, new, 300)
    assert {cluster.master_of_slot(shard_subscriptions.channel_slot(o)) for o in moving} == {new}
    await wait_until(lambda: [shard_subscribers(cluster, o) for o in moving] == [1] * len(moving))
    await asyncio.sleep(0.5)  # pacing: the feed may be retrying against the new node here
    stop.set()
    await task
    await all_delivered(watchers, feed)
    assert sum(w.reconnects for w in watchers) == 0
    for watcher in watchers:
        await watcher.stop()


@pytest.fixture
def growing(tmp_path):
    """3 masters, no replicas: the test adds a fourth."""
    topology = ClusterTopology(tmp_path / "growing")
    try:
        topology.start()
        yield topology
    finally:
        topology.stop()


@pytest.fixture
async def redis_of_growing(growing):
    client = redis_connect.command_client(redis_connect.parse_redis_url(growing.url))
    yield client
    await redis_connect.close_client(client)
