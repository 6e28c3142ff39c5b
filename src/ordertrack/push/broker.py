"""The pod's ONE Redis pub/sub connection: `PSUBSCRIBE order:tracking:*` plus control channels.

`Broker.run()` keeps the subscription alive. Before every (re)connect it asks
`redis_connect.subscription_address()` where to go (a Sentinel failover changes the master; on a
cluster any healthy node will do). On any error, and when the subscription watchdog
(`watchdog.py`) finds it silent beyond `deadline`, it marks itself not live (`/readyz` 503),
reconnects with capped exponential backoff and jitter, re-subscribes, and calls
`on_live(resubscribed)` so the pod can catch up on what was published while it was away.

The watchdog's probe goes the way a tracking update goes: `probe()` PUBLISHes on this pod's
own control channel through the command client (which follows the master), so the message
coming back on the subscription proves the whole path, not just the socket (a PING would be
answered by a demoted or partitioned node too).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from ordertrack import redis_connect, redis_layout
from ordertrack.push import metrics
from ordertrack.push.watchdog import SubscriptionWatchdog

log = logging.getLogger("ordertrack.push.broker")

PATTERN = redis_layout.CHANNEL_PATTERN.encode()
PREFIX_LEN = len(redis_layout.CHANNEL_PREFIX)


class SubscriptionSilent(Exception):
    """Nothing arrived on the subscription within the watchdog's deadline."""


class Broker:
    def __init__(
        self,
        target: redis_connect.RedisTarget,
        control_channels: list[str],
        on_update: Callable[[str, bytes], None],
        on_control: Callable[[bytes], None],
        on_live: Callable[[bool], Awaitable[None]],
        on_lost: Callable[[], None] | None = None,
        probe: Callable[[], Awaitable[object]] | None = None,
        deadline: float = 15.0,
    ):
        self.target = target
        self.control_channels = control_channels
        self.on_update = on_update
        self.on_control = on_control
        self.on_live = on_live
        self.on_lost = on_lost
        self.probe = probe
        self.deadline = deadline
        self.live = asyncio.Event()
        self._stopping = False
        self._subscriptions_expected = 1 + len(control_channels)
        self._probes: set[asyncio.Task] = set()

    async def _make_client(self) -> aioredis.Redis:
        """A client to the one node the subscription goes to now. Errors must surface here,
        not be retried inside redis-py: we re-subscribe (and re-resolve) ourselves."""
        address = await redis_connect.subscription_address(self.target)
        where = ({"unix_socket_path": address.path} if address.path
                 else {"host": address.host, "port": address.port})
        return aioredis.Redis(
            **where, db=address.db, username=address.username, password=address.password,
            retry=Retry(NoBackoff(), 0), socket_connect_timeout=2.0, socket_keepalive=True,
            **redis_connect.tls_options(self.target),
        )

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        delay = 0.05
        first = True
        while not self._stopping:
            client = pubsub = None
            watchdog = SubscriptionWatchdog(self.deadline / 3, self.deadline, loop.time())
            try:
                client = await self._make_client()
                pubsub = client.pubsub()
                await pubsub.psubscribe(redis_layout.CHANNEL_PATTERN)
                if self.control_channels:
                    await pubsub.subscribe(*self.control_channels)
                watchdog.reset(loop.time())
                confirmed = 0
                while not self._stopping:
                    now = loop.time()
                    if watchdog.lost(now):
                        raise SubscriptionSilent(
                            f"nothing arrived for {now - watchdog.last_seen:.1f}s "
                            f"(deadline {self.deadline:g}s)")
                    if confirmed == self._subscriptions_expected and watchdog.probe_due(now):
                        watchdog.probed(now)
                        self._send_probe()
                    message = await pubsub.get_message(
                        timeout=min(1.0, max(watchdog.next_check(now), 0.01)))
                    if message is None:
                        continue
                    watchdog.seen(loop.time())
                    kind = message["type"]
                    if kind in ("pmessage", "message"):
                        self._dispatch(kind, message)
                    elif kind in ("psubscribe", "subscribe"):
                        confirmed += 1
                        if confirmed == self._subscriptions_expected:
                            delay = 0.05
                            self.live.set()
                            log.info("subscribed to %s", redis_layout.CHANNEL_PATTERN,
                                     extra={"fields": {"resubscribed": not first,
                                                       "redis": self.target.describe()}})
                            await self.on_live(not first)
                            first = False
            except SubscriptionSilent as exc:
                metrics.SUBSCRIPTION_LOST.labels("silent").inc()
                log.error("redis subscription silent: %s; resubscribing", exc, extra={"fields": {
                    "deadline_s": self.deadline, "was_live": self.live.is_set()}})
                if self.on_lost:
                    self.on_lost()
            except (RedisError, OSError) as exc:
                if self.live.is_set():
                    metrics.SUBSCRIPTION_LOST.labels("error").inc()
                    log.error("redis subscription lost: %s; reconnecting", exc)
                    if self.on_lost:
                        self.on_lost()
                else:
                    log.warning("redis subscription not established: %s; retrying in %.2fs", exc, delay)
            finally:
                self.live.clear()
                try:
                    if pubsub is not None:
                        await pubsub.aclose()
                    if client is not None:
                        await client.aclose()
                except Exception:  # noqa: BLE001 - the connection is already broken
                    pass
            if self._stopping:
                break
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)

    def _send_probe(self) -> None:
        """Publish the probe in the background: a stuck command must not stall the reader."""
        if self.probe is None:
            return

        async def send() -> None:
            try:
                await asyncio.wait_for(self.probe(), self.deadline / 3)
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("subscription probe not published: %s", repr(exc))

        task = asyncio.get_running_loop().create_task(send())
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    def _dispatch(self, kind: str, message: dict) -> None:
        """One message's failure is that message's alone: the subscription loop goes on."""
        try:
            if kind == "pmessage":
                channel = message["channel"]
                self.on_update(channel[PREFIX_LEN:].decode("utf-8", "replace"), message["data"])
            else:
                self.on_control(message["data"])
        except Exception:  # noqa: BLE001 - a bug in a handler must not end the subscription
            log.exception("handling a message on %r failed; dropped it", message.get("channel"))

    def stop(self) -> None:
        self._stopping = True
        for task in self._probes:
            task.cancel()
