"""The pod's ONE Redis pub/sub connection: `PSUBSCRIBE order:tracking:*` plus control channels.

The connection is read by push/pubsub_reader.py's protocol (hiredis parsing, the watched-dict
look-up before anything is built for an order nobody here watches); commands keep using
`redis.asyncio`. Before every (re)connect it asks `redis_connect.subscription_address()` where
to go (a Sentinel failover changes the master; on a cluster any healthy node will do).
`Subscription.run()` keeps the subscription alive: on any error, or when it has been silent past the
watchdog's deadline (push/watchdog.py), it marks itself not live (`/readyz` 503), reconnects
with capped exponential backoff and jitter, re-subscribes, and calls `on_live(resubscribed)` so
the pod can catch up on what was published while it was away. Every connection has a fresh
reader: a Redis that stopped mid-message leaves nothing half-parsed behind.

The watchdog's probe goes the way an update goes: when the subscription is quiet, `probe()`
PUBLISHes on this pod's own control channel through the command client (which follows the
master), so its coming back proves the whole path, not just the socket (a PING on the
subscription would be answered by a demoted or partitioned node too).

From the moment a connection opens until `on_live` (the catch-up after a reconnect) is done,
updates of watched orders are held and then handed on in order: a live update must not
overtake the replay of the ones before it (the client would then never see those, `seq`
being never shown twice). Holding is done by giving the reader a holding `on_update` and
swapping in the real one afterwards, so a live message goes from the reader straight to
`on_update` (the fan-out), with no call of the broker's in between.

A message whose handler fails is that message's alone (logged by the reader, dropped): the
subscription goes on. Counters (`received`, `discarded`, `malformed`) add up over every
connection.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from ordertrack import redis_connect, redis_layout
from ordertrack.push import metrics, pubsub_reader
from ordertrack.push.watchdog import DEFAULT_DEADLINE_SECONDS, SubscriptionWatchdog

log = logging.getLogger("ordertrack.push.broker")

#: a quiet subscription is probed this often (at most); silent for the deadline it is lost
PROBE_SECONDS = 5.0
BACKOFF_FIRST_SECONDS = 0.05
BACKOFF_CAP_SECONDS = 2.0
CONNECT_TIMEOUT_SECONDS = 2.0


def backoff(delay: float) -> float:
    """The next delay: doubled, capped."""
    return min(delay * 2, BACKOFF_CAP_SECONDS)


def jittered(delay: float) -> float:
    """Spread reconnecting pods: 0.5x to 1.5x."""
    return delay * (0.5 + random.random())


def hand_on(held: list, on_update: Callable, logger: logging.Logger) -> None:
    """Updates held while a catch-up ran go on, in order; one's failure is that update's alone
    (dropped and logged, as in the reader)."""
    for order_id, watch, payload in held:
        try:
            on_update(order_id, watch, payload)
        except Exception:  # noqa: BLE001 - as in the reader: that message is dropped
            logger.exception(pubsub_reader.HANDLER_FAILED, order_id)


class ReaderCounts:
    """`received`, `discarded`, `malformed` of a subscription's readers: what its retired readers
    counted plus what its live ones count now (one rule for the pattern subscription and the
    sharded one)."""

    def __init__(self) -> None:
        self._totals: list[int] = [0, 0, 0]

    def _live_readers(self) -> list:
        raise NotImplementedError

    def _retire_counts(self, reader) -> None:
        """A reader going away: its counts stay in the totals."""
        self._totals[0] += reader.received
        self._totals[1] += reader.discarded
        self._totals[2] += reader.malformed

    def _count(self, index: int, name: str) -> int:
        return self._totals[index] + sum(getattr(reader, name) for reader in self._live_readers())

    @property
    def received(self) -> int:
        return self._count(0, "received")

    @property
    def discarded(self) -> int:
        return self._count(1, "discarded")

    @property
    def malformed(self) -> int:
        return self._count(2, "malformed")


class Subscription(ReaderCounts):
    def __init__(
        self,
        target: redis_connect.RedisTarget,
        control_channels: list[str],
        watched: dict,
        on_update: Callable[[str, object, bytes], object],
        on_control: Callable[[bytes], None],
        on_live: Callable[[bool], Awaitable[None]],
        on_lost: Callable[[], None] | None = None,
        on_malformed: Callable[[str | None, str], None] | None = None,
        probe: Callable[[], Awaitable[object]] | None = None,
        deadline: float = DEFAULT_DEADLINE_SECONDS,
        pattern: bool = True,
    ):
        self.target = target
        self.probe = probe
        self._probes: set[asyncio.Task] = set()
        self._silenced = False
        self.control_channels = control_channels
        self.watched = watched
        self.on_update = on_update
        self.on_control = on_control
        self.on_live = on_live
        self.on_lost = on_lost
        self.on_malformed = on_malformed
        self.deadline = deadline
        #: PSUBSCRIBE order:tracking:* (False with PUBSUB_MODE=sharded: control channels only)
        self.pattern = pattern
        self.live = asyncio.Event()
        self.reader = None
        self._stopping = False
        # counters of the readers of earlier connections (the current one counts its own)
        ReaderCounts.__init__(self)
        #: updates held until `on_live` has caught up (see the module docstring)
        self._held: list = []

    # --- counters (ReaderCounts) -------------------------------------------------------------
    def _live_readers(self) -> list:
        return [] if self.reader is None else [self.reader]

    # --- handlers: one message's failure is that message's alone ---------------------------------
    def _hold(self, order_id: str, watch, payload: bytes) -> None:
        self._held.append((order_id, watch, payload))

    def _hand_on_held(self, reader) -> None:
        """The catch-up is done: the held updates go on, in order, then live ones directly."""
        reader.on_update = self.on_update
        held, self._held = self._held, []
        hand_on(held, self.on_update, log)

    def _control(self, payload: bytes) -> None:
        try:
            self.on_control(payload)
        except Exception:  # noqa: BLE001 - likewise
            log.exception("handling a control message failed; dropped it: %r", payload[:100])

    # --- the loop ------------------------------------------------------------------------------
    async def run(self) -> None:
        delay = BACKOFF_FIRST_SECONDS
        first = True
        loop = asyncio.get_running_loop()
        while not self._stopping:
            reader = None
            try:
                address = await redis_connect.subscription_address(self.target)
                self._held = []
                reader = await pubsub_reader.connect(
                    address, self.watched, self._hold, self._control, on_live=self.live.set,
                    on_malformed=self.on_malformed, control_channels=self.control_channels,
                    timeout=CONNECT_TIMEOUT_SECONDS, pattern=self.pattern)
                self.reader = reader
                reader.closed.add_done_callback(lambda _: self.live.clear())
                live = loop.create_task(self.live.wait())
                await asyncio.wait([reader.closed, live], timeout=CONNECT_TIMEOUT_SECONDS * 2,
                                   return_when=asyncio.FIRST_COMPLETED)
                live.cancel()
                if not self.live.is_set():
                    raise ConnectionError(f"subscription not confirmed: {reader.error or 'timeout'}")
                delay = BACKOFF_FIRST_SECONDS
                log.info("subscribed to %s", redis_layout.CHANNEL_PATTERN if self.pattern
                         else "the control channels (PUBSUB_MODE=sharded)",
                         extra={"fields": {"resubscribed": not first,
                                           "redis": f"{address.host}:{address.port}"}})
                watchdog = loop.create_task(self._watch(reader))
                try:
                    await self.on_live(not first)
                    self._hand_on_held(reader)
                    first = False
                    error = await reader.closed
                finally:
                    watchdog.cancel()
                raise ConnectionError(str(error or "connection closed by Redis"))
            except (OSError, TimeoutError, RedisError) as exc:
                silenced, self._silenced = self._silenced, False
                if silenced:
                    if self.on_lost:
                        self.on_lost()
                elif self.live.is_set():
                    metrics.SUBSCRIPTION_LOST.labels("error").inc()
                    log.error("redis subscription lost: %s; reconnecting", exc)
                    if self.on_lost:
                        self.on_lost()
                elif not self._stopping:
                    log.warning("redis subscription not established: %s; retrying in %.2fs",
                                exc or type(exc).__name__, delay)
            finally:
                self.live.clear()
                if reader is not None:
                    self._retire(reader)
            if self._stopping:
                break
            await asyncio.sleep(jittered(delay))
            delay = backoff(delay)

    def _retire(self, reader) -> None:
        if reader.transport is not None:
            reader.transport.abort()
        self._retire_counts(reader)
        if self.reader is reader:
            self.reader = None

    async def _watch(self, reader) -> None:
        """Probe a quiet subscription; one silent past the deadline is cut (and so reconnected)."""
        loop = asyncio.get_running_loop()
        watchdog = SubscriptionWatchdog(min(PROBE_SECONDS, self.deadline / 3), self.deadline,
                                        loop.time())
        replies = reader.replies
        while not reader.closed.done():
            await asyncio.sleep(watchdog.next_check(loop.time()) or 0.01)
            now = loop.time()
            if reader.replies != replies:
                replies = reader.replies
                watchdog.seen(now)
            if watchdog.lost(now):
                metrics.SUBSCRIPTION_LOST.labels("silent").inc()
                log.error("redis subscription silent: nothing for %.1fs (deadline %gs); "
                          "resubscribing", now - watchdog.last_seen, self.deadline,
                          extra={"fields": {"deadline_s": self.deadline}})
                self._silenced = True  # said so here: run() does not count it as an error too
                reader.transport.abort()
                return
            if watchdog.probe_due(now):
                watchdog.probed(now)
                self._send_probe()

    def _send_probe(self) -> None:
        """Publish the probe in the background: a stuck command must not stall the watchdog."""
        probe = self.probe
        if probe is None:
            return

        async def send() -> None:
            try:
                await asyncio.wait_for(probe(), self.deadline / 3)
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("subscription probe not published: %r", exc)

        task = asyncio.get_running_loop().create_task(send())
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    def stop(self) -> None:
        self._stopping = True
        for task in self._probes:
            task.cancel()
        if self.reader is not None and self.reader.transport is not None:
            self.reader.transport.abort()
