"""The push pod: composes its parts on one event loop and owns their lifecycle.

push/__init__.py has the parts and the path of a message and of a connection. The pod builds
them, each given what it needs: the hub (the one index of open connections), the heartbeat
(timer wheel), the admission, the connections' `Lifecycle`, the flag watch and the broker (the
ONE subscription); it starts and stops their loops, drains, answers the broker's `on_live`
(re-register, catch up, re-read the flag) and control messages, and renews its lease.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets

from redis.exceptions import RedisError

from ordertrack import config, protocol, redis_connect, redis_layout
from ordertrack.flags import providers
from ordertrack.flags.source import FlagSource
from ordertrack.malformed import MalformedLog
from ordertrack.models import CARRIERS
from ordertrack.push import (
    connection,
    fanout,
    metrics,
    pubsub_reader,
    shard_subscriptions,
    timer_wheel,
    user_registry,
)
from ordertrack.push.admission import Admission
from ordertrack.push.catch_up import catch_up
from ordertrack.push.close_scheduler import CloseScheduler
from ordertrack.push.flag_watch import FlagWatch
from ordertrack.push.heartbeat import Heartbeat
from ordertrack.push.hub import Hub
from ordertrack.push.latency_probe import install as latency_probe
from ordertrack.push.lifecycle import Lifecycle
from ordertrack.push.server import make_listener_factory
from ordertrack.push.subscription import Subscription

log = logging.getLogger("ordertrack.push")


class Pod:
    def __init__(self, cfg, verifier):
        self.cfg = cfg
        self.verifier = verifier
        self.pod_id = f"{cfg.pod_name}:{secrets.token_hex(3)}"
        self.loop = asyncio.get_running_loop()
        # pooled, retrying a dead connection on a fresh one; follows a Sentinel failover
        self.redis = redis_connect.command_client(cfg, max_connections=32)
        self.user_registry = user_registry.UserRegistry(self.redis, self.pod_id, cfg.max_connections_per_user,
                                          cfg.pod_lease_seconds)
        #: the lease is renewed (and the flag re-read) this often
        self.housekeeping_seconds = cfg.pod_lease_seconds / 3
        self.malformed_log = MalformedLog(logging.getLogger("ordertrack.push.malformed"))
        self.hub = Hub(on_malformed=self._on_malformed)
        interval, timeout = cfg.heartbeat_interval_seconds, cfg.heartbeat_timeout_seconds
        self.flags = FlagSource(
            providers.build(cfg), loop=self.loop, region=cfg.region,
            heartbeat_defaults=(interval, timeout), carriers=CARRIERS, registry=metrics.REGISTRY)
        #: every server-initiated close is carried out through it, a few per loop iteration
        self.closes = CloseScheduler(self.loop.call_soon)
        self.heartbeat = Heartbeat(self.loop, self.flags, interval, timeout, self.closes)
        self.flag_watch = FlagWatch(self.flags, self.redis, self.hub, self.spawn)
        self.flags.on_change(self.flag_watch.on_change)
        self.draining = False
        self._tasks: list[asyncio.Task] = []
        self._background: set[asyncio.Task] = set()
        self._stopping = False
        self.subscription = Subscription(
            redis_connect.target_from_settings(cfg),
            control_channels=[redis_layout.control(self.pod_id), redis_layout.CONTROL_ALL],
            watched=self.hub.watches,
            # LATENCY_SAMPLE_EVERY=0 (the default): the fan-out itself, nothing added
            on_update=latency_probe(self.loop, self.hub.fanout.publish, cfg.latency_sample_every),
            on_control=self._on_control,
            on_live=self._on_live,
            on_lost=lambda: metrics.SUBSCRIBED.set(0),
            on_malformed=self._on_malformed,
            probe=lambda: self.redis.publish(redis_layout.control(self.pod_id),
                                             redis_layout.encode_probe()),
            deadline=cfg.redis_subscription_deadline_seconds,
            pattern=cfg.pubsub_mode != config.PUBSUB_SHARDED,
        )
        #: PUBSUB_MODE=sharded: the per-order SSUBSCRIBEs (push/shard_subscriptions.py)
        self.shards = shard_subscriptions.for_pod(self, cfg)
        self.admission = Admission(
            self.redis, self.user_registry, self.hub, self.flags, self.subscription.live, self.spawn,
            self.loop, cfg.redis_subscribe_timeout_seconds, self.pod_id,
            before_admit=self._subscribe_batch if self.shards is not None else None)
        #: every connection's `events`
        self.lifecycle = Lifecycle(self.loop, self.hub, self.heartbeat, self.admission,
                                   self.user_registry, self.pod_id, self.closes, self.shards)
        metrics.REDIS_MESSAGES.watch(self.shards or self.subscription)
        metrics.DELIVERY.watch(self.hub)

    def listener_factory(self):
        """picows' listener factory for this pod's port (push/server.py)."""
        return make_listener_factory(self.cfg, self.verifier, self, self.hub, self.flags,
                                     self.lifecycle)

    # --- start / stop --------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await self.flag_watch.refresh()
            await self.user_registry.heartbeat()
            await self.admission.load_scripts()
        except RedisError as exc:
            log.warning("redis not reachable at start (%s); continuing, will retry", exc)
        # named as /healthz reports them: "<loop> stopped"
        loops = {"subscription": self.subscription.run(), "admission": self.admission.run(),
                 "releases": self.user_registry.run_slot_frees(), "housekeeping": self._housekeeping_loop()}
        if self.shards is not None:
            loops["shards"] = self.shards.run()
        if self.cfg.datadog_agent_host:
            loops["datadog"] = metrics.datadog_loop(
                self.cfg, lambda: metrics.connections_by_carrier(self.hub.by_carrier))
        log.info("hot path", extra={"fields": {
            "pubsub_reader": pubsub_reader.IMPLEMENTATION, "fanout": fanout.IMPLEMENTATION,
            "wheel": timer_wheel.IMPLEMENTATION, "connection": connection.IMPLEMENTATION}})
        for name, coro in loops.items():
            task = self.loop.create_task(coro, name=name)
            task.add_done_callback(self._on_task_done)
            self._tasks.append(task)
        self.heartbeat.start()

    @property
    def ready(self) -> bool:
        return self.subscription.live.is_set() and not self.draining

    @property
    def dead_task(self) -> str | None:
        """The first of the pod's long-running loops that has ended (it never should before
        `stop`): `/healthz` then fails, so Kubernetes restarts the pod."""
        if self._stopping:
            return None
        return next((task.get_name() for task in self._tasks if task.done()), None)

    def _on_task_done(self, task: asyncio.Task) -> None:
        if self._stopping:
            return
        exc = None if task.cancelled() else task.exception()
        log.error("pod loop %s ended; /healthz now fails", task.get_name(),
                  exc_info=(type(exc), exc, exc.__traceback__) if exc else None)

    async def drain(self, seconds: float) -> None:
        """Stop accepting, close every connection with 1001 in batches spread over `seconds`."""
        self.draining = True
        conns = list(self.hub.connections.values())
        log.info("draining %d connections over %.1fs", len(conns), seconds)
        if conns:
            step = 0.05
            steps = max(1, int(seconds / step))
            batch = max(1, math.ceil(len(conns) / steps))
            for start in range(0, len(conns), batch):
                for conn in conns[start:start + batch]:
                    conn.close(protocol.SERVER_SHUTDOWN)
                if start + batch < len(conns):
                    await asyncio.sleep(step)
        deadline = self.loop.time() + max(2.0, self.heartbeat.timeout)
        while self.hub.connections and self.loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        await self.user_registry.flush_slot_frees(give_up_on_error=True)

    async def stop(self) -> None:
        self._stopping = True
        self.subscription.stop()
        if self.shards is not None:
            self.shards.stop()
        self.heartbeat.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.user_registry.forget_pod()
        self.flags.close()
        await redis_connect.close_client(self.redis)

    async def _subscribe_batch(self, batch: list) -> list:
        return await shard_subscriptions.subscribe_batch(self, batch)

    def spawn(self, coro) -> None:
        """A short-lived task, referenced until done (the loop only keeps weak references)."""
        task = self.loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- Redis messages --------------------------------------------------------------------------
    def _on_malformed(self, order_id: str | None, reason: str) -> None:
        metrics.MALFORMED.labels(reason).inc()
        self.malformed_log(order_id, reason)

    def _on_control(self, payload: bytes) -> None:
        try:
            message = redis_layout.decode_control(payload)
        except redis_layout.MalformedControl as exc:
            log.warning("ignoring %s", exc)
            return
        if message.op == redis_layout.EVICT:
            conn = self.hub.connections.get(message.connection_id)
            if conn is not None:
                conn.close(protocol.CONNECTION_LIMIT)
        elif message.op == redis_layout.FLAG:
            self.spawn(self.flag_watch.refresh())

    async def _on_live(self, resubscribed: bool) -> None:
        metrics.SUBSCRIBED.set(1)
        self.admission.wake()
        delay = 0.05
        while resubscribed and self.subscription.live.is_set():
            try:
                await self._reregister()
                await catch_up(self.redis, self.hub)
                await self.flag_watch.refresh()
                return
            except RedisError as exc:
                log.error("catch-up after reconnect failed: %s; retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _reregister(self) -> None:
        """Redis may have restarted empty: put this pod's live connections back in the registry."""
        await self.user_registry.reregister([(c.user_id, c.connection_id)
                                        for c in self.hub.connections.values()
                                        if c.registered and not c.cleaned])

    async def _housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.housekeeping_seconds)
            try:
                await self.user_registry.heartbeat()
                await self.flag_watch.refresh()
            except RedisError as exc:
                log.warning("housekeeping: redis unavailable (%s)", exc)
            metrics.set_active_connections(self.cfg.pod_name, self.cfg.region,
                                           self.hub.by_carrier)
