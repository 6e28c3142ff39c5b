"""PUBSUB_MODE=sharded: the pod SSUBSCRIBEs only to the orders it has watchers for.

Each update is SPUBLISHed on `order:tracking:shard:{ORDER_ID}` (publish.lua), which Redis
Cluster keeps on the one shard that owns the order's slot. The pod keeps ONE subscription
connection per master it needs (a `Link`, read by push/pubsub_reader.py like the pattern
subscription, `smessage`s going straight to the fan-out), and per order a subscription that
lives while the order has watchers here:

- `ensure(order_ids)` (admission, before the states are read): the orders not yet subscribed
  get their SSUBSCRIBEs, one write per node for the whole batch, and it returns once Redis
  confirmed them (or the orders it could not, after `timeout`: those connections close 4002).
  The state hash is read after the confirmation, so an update published meanwhile is either
  in it or comes on the subscription, held until the ack (push/delivery.py's rules).
- `release(order_id)` (the last watcher left): SUNSUBSCRIBE, batched per loop iteration.
- Slot moved away (resharding, a failover that demoted the node): Redis sends an unrequested
  `sunsubscribe`; a link that drops (node killed) or stays silent past `deadline` loses all its
  orders. Either way the orders are resubscribed where the slot map (CLUSTER SLOTS, re-read)
  now puts them and caught up from their state hash and stream; while that runs, the live
  updates of every link involved are held and handed on afterwards in order, so a live update
  never overtakes the replay of the ones before it. An SSUBSCRIBE the node refuses (-MOVED:
  the slot map was stale; it is re-read every MAP_REFRESH_SECONDS and after every move) ends
  that link like a lost node: coarse (all its orders are resubscribed and caught up), lossless.

Replies are matched per order by counting: every SSUBSCRIBE / SUNSUBSCRIBE we write expects
one reply on that link, in order; a `sunsubscribe` we did not ask for is Redis telling us the
slot moved. Without a cluster (one server, Sentinel) the "slot map" is the one server.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections.abc import Callable, Iterable

import hiredis
from redis.crc import key_slot
from redis.exceptions import RedisError

from ordertrack import config, protocol, redis_connect, redis_layout
from ordertrack.push import metrics, pubsub_reader
from ordertrack.push.catch_up import replay_missed
from ordertrack.push.subscription import (
    BACKOFF_FIRST_SECONDS,
    CONNECT_TIMEOUT_SECONDS,
    ReaderCounts,
    backoff,
    hand_on,
    jittered,
)

log = logging.getLogger("ordertrack.push.shards")

SLOTS = 16384
#: a link quiet this long is PINGed; no reply at all within the deadline cuts it
PING_SECONDS = 5.0
#: the slot map is re-read this often when nothing else made the pod read it
MAP_REFRESH_SECONDS = 10.0
#: the longest an admission batch waits for its subscriptions before it admits the confirmed
#: ones and puts the others back in the queue
ADMISSION_RETRY_SECONDS = 0.5

Address = tuple[str, int]


# --- the slot map (pure) ------------------------------------------------------------------------
class SlotMap:
    """slot -> the master that owns it. `ranges`: (first slot, last slot, (host, port))."""

    def __init__(self, ranges: Iterable[tuple[int, int, Address]]):
        self.ranges = sorted(ranges)
        self._starts = [first for first, _, _ in self.ranges]

    @classmethod
    def single(cls, address: Address) -> SlotMap:
        return cls([(0, SLOTS - 1, address)])

    def node_for_slot(self, slot: int) -> Address | None:
        index = bisect.bisect_right(self._starts, slot) - 1
        if index >= 0:
            first, last, address = self.ranges[index]
            if first <= slot <= last:
                return address
        return None

    def node_for(self, order_id: str) -> Address | None:
        return self.node_for_slot(channel_slot(order_id))

    @property
    def nodes(self) -> set[Address]:
        return {address for _, _, address in self.ranges}


def channel_slot(order_id: str) -> int:
    """The hash slot of the order's shard channel (= of its state and stream keys)."""
    return key_slot(redis_layout.shard_channel(order_id).encode())


def parse_cluster_slots(reply, default_host: str) -> SlotMap:
    """CLUSTER SLOTS' answer -> SlotMap (masters only; an empty host is the node asked)."""
    ranges = []
    for entry in reply:
        first, last, master = int(entry[0]), int(entry[1]), entry[2]
        host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
        ranges.append((first, last, (host or default_host, int(master[1]))))
    return SlotMap(ranges)


def group_by_node(order_ids: Iterable[str], slot_map: SlotMap) -> dict[Address | None, list[str]]:
    groups: dict[Address | None, list[str]] = {}
    for order_id in order_ids:
        groups.setdefault(slot_map.node_for(order_id), []).append(order_id)
    return groups


def commands(verb: str, order_ids: Iterable[str]) -> bytes:
    """One SSUBSCRIBE / SUNSUBSCRIBE per channel (a multi-channel one must stay in one slot),
    pipelined in one write."""
    return b"".join(
        hiredis.pack_command((verb, redis_layout.shard_channel(order_id)))  # type: ignore[arg-type]  # its stub: a 1-tuple
        for order_id in order_ids)


async def read_slot_map(target: redis_connect.RedisTarget, known: Iterable[Address] = ()) -> SlotMap:
    """Where every slot lives now. Not a cluster: the one server (Sentinel: the master now)."""
    if target.topology != redis_connect.CLUSTER:
        address = await redis_connect.subscription_address(target)
        return SlotMap.single((address.host, address.port))
    import random

    import redis.asyncio as aioredis

    candidates = list(dict.fromkeys([*known, *target.hosts]))
    random.shuffle(candidates)
    errors = []
    for host, port in candidates:
        node = aioredis.Redis(host=host, port=port, username=target.username,
                              password=target.password, **redis_connect._probe_options(target))
        try:
            info = await node.cluster("INFO")
            if not isinstance(info, dict) or info.get("cluster_state") != "ok":
                errors.append(f"{host}:{port}: cluster_state not ok")
                continue
            slot_map = parse_cluster_slots(await node.execute_command("CLUSTER SLOTS"), host)
        except RedisError as exc:
            errors.append(f"{host}:{port}: {exc}")
            continue
        finally:
            await node.aclose()
        return slot_map
    raise redis_connect.RedisConnectionError("no cluster node gave a slot map: " + "; ".join(errors))


# --- catch-up ----------------------------------------------------------------------------------
async def catch_up(redis, hub, order_ids: Iterable[str], on_skip=None) -> int:
    """Push, through the hub, every event of these watched orders published after the highest
    `seq` this pod saw (`Watch.seq`): push/catch_up.py's rule for just these orders."""
    watched = [(order_id, hub.watches[order_id]) for order_id in order_ids
               if order_id in hub.watches]
    return await replay_missed(redis, hub, watched, on_skip)


# --- one node's subscription connection ---------------------------------------------------------
class Link:
    """The pod's subscription connection to one node: the orders subscribed there, the replies
    still expected per order, and the hold (see the module docstring)."""

    def __init__(self, address: Address):
        self.address = address
        self.reader = None
        self.connected = asyncio.Event()
        self.orders: set[str] = set()
        #: order -> replies still expected from Redis (our SSUBSCRIBEs and SUNSUBSCRIBEs)
        self.expected: dict[str, int] = {}
        self.queued = bytearray()  # commands written once connected
        self.hold_depth = 0
        self.held: list = []
        self.task: asyncio.Task | None = None

    def write(self, data: bytes) -> None:
        reader = self.reader
        if reader is not None and reader.transport is not None and not reader.transport.is_closing():
            reader.transport.write(data)
        else:
            self.queued += data


class ShardSubscriptions(ReaderCounts):
    def __init__(self, target: redis_connect.RedisTarget, redis, hub, on_update: Callable,
                 on_malformed: Callable | None = None, deadline: float = 15.0):
        self.target = target
        self.redis = redis
        self.hub = hub
        self.on_update = on_update
        self.on_malformed = on_malformed
        self.deadline = deadline
        self.loop = asyncio.get_running_loop()
        self.links: dict[Address, Link] = {}
        self.where: dict[str, Link] = {}
        self.confirmed: set[str] = set()
        self.waiters: dict[str, asyncio.Future] = {}
        self.slot_map: SlotMap | None = None
        #: masters of the last slot map read (asked first next time, with the seeds)
        self._known: set[Address] = set()
        self._map_lock = asyncio.Lock()
        self._lost: set[str] = set()
        #: the orders the recovery loop is resubscribing now
        self._recovering: set[str] = set()
        self._lost_event = asyncio.Event()
        self._releasing: set[str] = set()
        self._release_handle: asyncio.Handle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._stopping = False
        ReaderCounts.__init__(self)
        # figures: subscribe round trips, orders resubscribed after a move or a loss
        self.subscribes = 0
        self.unsubscribes = 0
        self.moved = 0
        self.recovered = 0

    # --- counters (ReaderCounts, as the pattern subscription's) -------------------------------
    def _live_readers(self) -> list:
        return [link.reader for link in self.links.values() if link.reader is not None]

    # --- the pod's hooks ------------------------------------------------------------------------
    async def ensure(self, order_ids: Iterable[str], timeout: float) -> set[str]:
        """Subscribe the orders not subscribed yet (their SSUBSCRIBEs go out together, one write
        per node) and wait for Redis's confirmations; returns the orders left unconfirmed
        after `timeout` seconds."""
        futures: dict[str, asyncio.Future] = {}
        fresh: list[str] = []
        for order_id in set(order_ids):
            if order_id in self.confirmed:
                continue
            waiter = self.waiters.get(order_id)
            if waiter is None or waiter.done():
                waiter = self.waiters[order_id] = self.loop.create_future()
                # an order being recovered is subscribed by the recovery (which holds its
                # link's live updates until the order's old watchers are caught up)
                if (order_id not in self.where and order_id not in self._lost
                        and order_id not in self._recovering):
                    fresh.append(order_id)
            futures[order_id] = waiter
        if not futures:
            return set()
        if fresh:
            self._spawn(self._subscribe_new(fresh))
        await asyncio.wait(list(futures.values()), timeout=timeout)
        return {order_id for order_id, waiter in futures.items()
                if not waiter.done() or waiter.cancelled() or waiter.result() is not True}

    def release(self, order_id: str) -> None:
        """An order's watcher left: once none is left, SUNSUBSCRIBE (batched per loop turn)."""
        if order_id in self.hub.watches:
            return
        self._releasing.add(order_id)
        if self._release_handle is None:
            self._release_handle = self.loop.call_soon(self._flush_releases)

    def stop(self) -> None:
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        for link in list(self.links.values()):
            if link.reader is not None and link.reader.transport is not None:
                link.reader.transport.abort()

    async def run(self) -> None:
        """The recovery loop: orders whose subscription was lost are resubscribed where their
        slot lives now, and caught up (with backoff while that fails)."""
        delay = BACKOFF_FIRST_SECONDS
        while True:
            try:
                await asyncio.wait_for(self._lost_event.wait(), MAP_REFRESH_SECONDS)
            except TimeoutError:
                # quiet: re-read the slot map, so a new order's SSUBSCRIBE rarely goes to a
                # node that gave its slot away (its -MOVED would cut that node's link)
                if self.target.topology == redis_connect.CLUSTER and self.links:
                    try:
                        await self._refresh_map()
                    except (RedisError, OSError, TimeoutError) as exc:
                        log.warning("slot map not refreshed: %s", exc)
                continue
            self._lost_event.clear()
            lost = {order_id for order_id in self._lost if order_id in self.hub.watches}
            self._lost.clear()
            if not lost:
                continue
            self._recovering = lost
            try:
                await self._refresh_map()
                failed = await self._resubscribe(lost)
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("resubscribing %d orders failed: %s; retrying", len(lost), exc)
                failed = lost
            finally:
                self._recovering = set()
            if failed:
                self._lose(failed)
                await asyncio.sleep(jittered(delay))
                delay = backoff(delay)
            else:
                delay = BACKOFF_FIRST_SECONDS

    # --- subscribing ---------------------------------------------------------------------------
    async def _subscribe_new(self, order_ids: list[str]) -> None:
        try:
            slot_map = await self._map()
        except (RedisError, OSError) as exc:
            log.warning("no slot map for %d new orders: %s", len(order_ids), exc)
            self._lose(order_ids)
            return
        for address, group in group_by_node(order_ids, slot_map).items():
            if address is None:  # a slot no master serves (the cluster is changing): retry
                self._lose(group)
            else:
                self._request(self._link(address), group)

    def _request(self, link: Link, order_ids: list[str]) -> None:
        """Write the SSUBSCRIBEs of `order_ids` on `link` (queued until it is connected)."""
        for order_id in order_ids:
            previous = self.where.get(order_id)
            if previous is not None and previous is not link:
                self._forget(previous, order_id)
            self.where[order_id] = link
            link.orders.add(order_id)
            link.expected[order_id] = link.expected.get(order_id, 0) + 1
            if order_id not in self.waiters or self.waiters[order_id].done():
                self.waiters[order_id] = self.loop.create_future()
        self.subscribes += len(order_ids)
        link.write(commands("SSUBSCRIBE", order_ids))

    def _forget(self, link: Link, order_id: str) -> None:
        link.orders.discard(order_id)
        link.expected.pop(order_id, None)

    def _flush_releases(self) -> None:
        self._release_handle = None
        releasing, self._releasing = self._releasing, set()
        by_link: dict[Link, list[str]] = {}
        for order_id in releasing:
            if order_id in self.hub.watches:
                continue  # a watcher came back meanwhile
            link = self.where.pop(order_id, None)
            self.confirmed.discard(order_id)
            waiter = self.waiters.pop(order_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(False)
            if link is not None:
                by_link.setdefault(link, []).append(order_id)
        for link, order_ids in by_link.items():
            for order_id in order_ids:
                link.orders.discard(order_id)
                link.expected[order_id] = link.expected.get(order_id, 0) + 1
            self.unsubscribes += len(order_ids)
            log.debug("unsubscribing %s on %s", order_ids, link.address)
            link.write(commands("SUNSUBSCRIBE", order_ids))

    def _on_shard(self, link: Link, kind: bytes, channel: bytes | None) -> None:
        """A reply to our SSUBSCRIBE / SUNSUBSCRIBE, or Redis's own `sunsubscribe` (slot moved)."""
        order_id = redis_layout.shard_channel_order(channel) if type(channel) is bytes else None
        log.debug("shard reply %s %s on %s", kind, channel, link.address)
        if order_id is None:
            return
        pending = link.expected.get(order_id, 0)
        if pending:
            if pending == 1:
                del link.expected[order_id]
            else:
                link.expected[order_id] = pending - 1
                return
            if self.where.get(order_id) is link:  # the last request was a subscribe here
                self.confirmed.add(order_id)
                waiter = self.waiters.pop(order_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(True)
                if order_id not in self.hub.watches:
                    self.release(order_id)
            return
        if kind == b"sunsubscribe" and self.where.get(order_id) is link:
            # not asked for: the slot moved to another node
            self.moved += 1
            self.confirmed.discard(order_id)
            del self.where[order_id]
            link.orders.discard(order_id)
            self._lose([order_id])

    def _lose(self, order_ids: Iterable[str]) -> None:
        self._lost.update(order_ids)
        self._lost_event.set()

    async def _resubscribe(self, lost: set[str]) -> set[str]:
        """Subscribe `lost` where the slot map puts them, catch them up; the links involved hold
        their live updates meanwhile. Returns the orders that failed."""
        # None here would fail as before; whether it can be (line ~524 clears it) is for its owner
        groups = group_by_node(lost, self.slot_map)  # type: ignore[arg-type]
        failed = set(groups.pop(None, ()))
        links = [self._link(address) for address in groups if address is not None]
        for link in links:
            self._hold(link)
        try:
            for link, group in zip(links, groups.values(), strict=True):
                self._request(link, group)
            futures = {order_id: self.waiters[order_id] for group in groups.values()
                       for order_id in group}
            if futures:
                await asyncio.wait(list(futures.values()), timeout=min(self.deadline, 5.0))
            done = [order_id for order_id, waiter in futures.items()
                    if waiter.done() and not waiter.cancelled() and waiter.result() is True]
            failed |= set(futures) - set(done)
            for link in links:
                # unconfirmed: a late confirmation would let live updates through uncaught-up
                if any(self.where.get(order_id) is link and order_id in self.hub.watches
                       for order_id in set(futures) - set(done)):
                    self._drop(link, "subscriptions not confirmed")
            try:
                missed = await catch_up(self.redis, self.hub, done, self._skip)
            except (RedisError, OSError, TimeoutError) as exc:
                for link in links:
                    self._drop(link, f"catch-up failed: {exc}")
                raise
            self.recovered += len(done)
            if missed:
                metrics.CATCHUP_EVENTS.inc(missed)
            log.info("resubscribed after a slot move or a lost node", extra={"fields": {
                "orders": len(done), "events_replayed": missed, "failed": len(failed)}})
        finally:
            for link in links:
                self._unhold(link)
        return {order_id for order_id in failed if order_id in self.hub.watches}

    def _drop(self, link: Link, why: str) -> None:
        """End a link whose orders were not all caught up (a failover: the command client
        still points at the dead master, a node that does not confirm): what it held is
        dropped and every order on it is lost, so the next round resubscribes them and replays
        their streams from `Watch.seq`. Releasing the hold instead would let a live update
        raise `Watch.seq` past events nobody replayed: lost for good (the fan-out skips a
        `seq` below one already sent)."""
        if link.held or link.orders:
            log.warning("shard subscription to %s:%d dropped: %s", *link.address, why)
        link.held = []
        if self.links.get(link.address) is link:
            del self.links[link.address]  # the next round opens a new one
        if link.reader is not None and link.reader.transport is not None:
            link.reader.transport.abort()  # no update is read after this; _run_link cleans up
        elif link.task is not None:
            link.task.cancel()

    @staticmethod
    def _skip(entry_id, exc) -> None:
        log.warning("skipping unreadable stream entry %s: %s", entry_id, exc)

    # --- holding a link's live updates ----------------------------------------------------------
    def _hold(self, link: Link) -> None:
        link.hold_depth += 1
        if link.reader is not None:
            link.reader.on_update = self._holder(link)

    def _holder(self, link: Link):
        def hold(order_id, watch, payload) -> None:
            link.held.append((order_id, watch, payload))
        return hold

    def _unhold(self, link: Link) -> None:
        link.hold_depth = max(0, link.hold_depth - 1)
        if link.hold_depth > 0:
            return
        held, link.held = link.held, []
        hand_on(held, self.on_update, log)
        if link.reader is not None:
            link.reader.on_update = self.on_update

    # --- links ---------------------------------------------------------------------------------
    def _link(self, address: Address) -> Link:
        link = self.links.get(address)
        if link is None:
            link = self.links[address] = Link(address)
            link.task = self._spawn(self._run_link(link))
        return link

    async def _run_link(self, link: Link) -> None:
        host, port = link.address
        address = redis_connect.SubscriptionAddress(
            host, port, self.target.password, 0, redis_connect.ssl_context(self.target),
            self.target.username)
        reader = None
        try:
            reader = await pubsub_reader.connect(
                address, self.hub.watches,
                self._holder(link) if link.hold_depth else self.on_update,
                on_malformed=self.on_malformed, timeout=CONNECT_TIMEOUT_SECONDS, pattern=False)
            reader.on_shard = lambda kind, channel: self._on_shard(link, kind, channel)
            link.reader = reader
            if link.queued:
                queued, link.queued = bytes(link.queued), bytearray()
                reader.transport.write(queued)
            link.connected.set()
            error = await self._watch(reader)
            if not self._stopping:
                log.error("shard subscription to %s:%d lost: %s", host, port,
                          error or "closed by Redis")
        except (OSError, TimeoutError, RedisError) as exc:
            if not self._stopping:
                log.warning("shard subscription to %s:%d not established: %s", host, port, exc)
        finally:
            if reader is not None:
                if reader.transport is not None:
                    reader.transport.abort()
                self._retire_counts(reader)
            link.reader = None
            if self.links.get(link.address) is link:
                del self.links[link.address]
            lost = [order_id for order_id in link.orders if self.where.get(order_id) is link]
            for order_id in lost:
                del self.where[order_id]
                self.confirmed.discard(order_id)
            link.orders.clear()
            link.expected.clear()
            # what it held is dropped: its orders are caught up from their streams instead
            link.held = []
            if not self._stopping:
                self.slot_map = None  # a lost node: ask the cluster again
                self._lose(lost)

    async def _watch(self, reader) -> BaseException | None:
        """Until the link closes; PINGed when quiet, cut when silent past the deadline."""
        replies = reader.replies
        silent_since = self.loop.time()
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(reader.closed),
                                              min(PING_SECONDS, self.deadline / 3))
            except TimeoutError:
                pass
            now = self.loop.time()
            if reader.replies != replies:
                replies = reader.replies
                silent_since = now
            elif now - silent_since >= self.deadline:
                metrics.SUBSCRIPTION_LOST.labels("silent").inc()
                reader.transport.abort()
                return ConnectionError(f"silent for {now - silent_since:.1f}s")
            reader.transport.write(hiredis.pack_command(("PING",)))

    # --- the slot map ---------------------------------------------------------------------------
    async def _map(self) -> SlotMap:
        if self.slot_map is None:
            async with self._map_lock:
                if self.slot_map is None:  # not read meanwhile by another batch
                    self.slot_map = await read_slot_map(self.target, self._known)
                    self._known = self.slot_map.nodes
        return self.slot_map

    async def _refresh_map(self) -> None:
        async with self._map_lock:
            self.slot_map = await read_slot_map(self.target, self._known)
            self._known = self.slot_map.nodes

    def _spawn(self, coro) -> asyncio.Task:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


# --- metrics -------------------------------------------------------------------------------------
class _ShardMetrics:
    """`ordertrack_ws_redis_shard_subscriptions` (orders subscribed and confirmed now),
    `ordertrack_ws_redis_shard_links` (subscription connections, one per master in use),
    `ordertrack_ws_redis_shard_resubscribed_total{cause}` (`moved`: Redis's sunsubscribe for a
    moved slot; `recovered`: resubscribed after a move or a lost connection)."""

    def __init__(self) -> None:
        self.shards: ShardSubscriptions | None = None

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        shards = self.shards
        subscribed = GaugeMetricFamily("ordertrack_ws_redis_shard_subscriptions",
                                       "Orders this pod SSUBSCRIBEs to (PUBSUB_MODE=sharded)")
        links = GaugeMetricFamily("ordertrack_ws_redis_shard_links",
                                  "Shard subscription connections (one per master in use)")
        resubscribed = CounterMetricFamily("ordertrack_ws_redis_shard_resubscribed",
                                           "Orders resubscribed after a slot move or a lost node",
                                           labels=["cause"])
        subscribed.add_metric([], len(shards.confirmed) if shards else 0)
        links.add_metric([], len(shards.links) if shards else 0)
        resubscribed.add_metric(["moved"], shards.moved if shards else 0)
        resubscribed.add_metric(["recovered"], shards.recovered if shards else 0)
        yield subscribed
        yield links
        yield resubscribed


SHARD_METRICS = _ShardMetrics()
metrics.REGISTRY.register(SHARD_METRICS)


# --- the pod's side ------------------------------------------------------------------------------
def for_pod(pod, cfg) -> ShardSubscriptions | None:
    """The pod's shard subscriptions with PUBSUB_MODE=sharded, else None."""
    if cfg.pubsub_mode != config.PUBSUB_SHARDED:
        return None
    SHARD_METRICS.shards = shards = ShardSubscriptions(redis_connect.target_from_settings(cfg), pod.redis, pod.hub,
                              pod.hub.fanout.publish, pod._on_malformed,
                              cfg.redis_subscription_deadline_seconds)
    return shards


async def subscribe_batch(pod, batch: list) -> list:
    """Admission, sharded: the batch's orders subscribed (one write per node) and confirmed.
    Returns the connections to admit now; one whose order is not confirmed yet goes back to
    the admission queue (so a node that does not answer holds up the others' admissions by
    ADMISSION_RETRY_SECONDS at most), and is closed 4002 once REDIS_SUBSCRIBE_TIMEOUT_SECONDS
    have passed since it opened."""
    limit = pod.cfg.redis_subscribe_timeout_seconds
    soonest = min(conn.opened_at for conn in batch) + limit - pod.loop.time()
    failed = await pod.shards.ensure([conn.order_id for conn in batch],
                                     max(0.0, min(soonest, ADMISSION_RETRY_SECONDS)))
    admitted = []
    now = pod.loop.time()
    for conn in batch:
        if conn.cleaned or conn.close_reason is not None:
            continue
        if conn.order_id not in failed:
            admitted.append(conn)
        elif conn.opened_at + limit <= now:
            conn.close(protocol.INTERNAL_ERROR, "tracking subscription unavailable")
        else:
            pod.admission.add(conn)
    return admitted
