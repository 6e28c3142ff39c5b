"""The pod's ONE Redis pub/sub connection: `PSUBSCRIBE order:tracking:*` plus control channels.

`Broker.run()` keeps the subscription alive: on any error it marks itself not live, reconnects
with capped exponential backoff and jitter, re-subscribes, and calls `on_live(resubscribed)`
so the pod can catch up on what was published while it was away.
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

from ordertrack import redis_layout

log = logging.getLogger("ordertrack.push.broker")

PATTERN = redis_layout.CHANNEL_PATTERN.encode()
PREFIX_LEN = len(redis_layout.CHANNEL_PREFIX)


class Broker:
    def __init__(
        self,
        url: str,
        control_channels: list[str],
        on_update: Callable[[str, bytes], None],
        on_control: Callable[[bytes], None],
        on_live: Callable[[bool], Awaitable[None]],
        on_lost: Callable[[], None] | None = None,
    ):
        self.url = url
        self.control_channels = control_channels
        self.on_update = on_update
        self.on_control = on_control
        self.on_live = on_live
        self.on_lost = on_lost
        self.live = asyncio.Event()
        self._client: aioredis.Redis | None = None
        self._stopping = False
        self._subscriptions_expected = 1 + len(control_channels)

    def _make_client(self) -> aioredis.Redis:
        # errors must surface here, not be retried inside redis-py: we re-subscribe ourselves
        return aioredis.Redis.from_url(
            self.url,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=2.0,
            socket_keepalive=True,
            health_check_interval=5,
        )

    async def run(self) -> None:
        delay = 0.05
        first = True
        while not self._stopping:
            client = self._make_client()
            pubsub = client.pubsub()
            try:
                await pubsub.psubscribe(redis_layout.CHANNEL_PATTERN)
                if self.control_channels:
                    await pubsub.subscribe(*self.control_channels)
                confirmed = 0
                while not self._stopping:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    kind = message["type"]
                    if kind in ("pmessage", "message"):
                        self._dispatch(kind, message)
                    elif kind in ("psubscribe", "subscribe"):
                        confirmed += 1
                        if confirmed == self._subscriptions_expected:
                            delay = 0.05
                            self.live.set()
                            log.info("subscribed to %s", redis_layout.CHANNEL_PATTERN,
                                     extra={"fields": {"resubscribed": not first}})
                            await self.on_live(not first)
                            first = False
            except (RedisError, OSError) as exc:
                if self.live.is_set():
                    log.error("redis subscription lost: %s; reconnecting", exc)
                    if self.on_lost:
                        self.on_lost()
                else:
                    log.warning("redis subscription not established: %s; retrying in %.2fs", exc, delay)
            finally:
                self.live.clear()
                try:
                    await pubsub.aclose()
                    await client.aclose()
                except Exception:  # noqa: BLE001 - the connection is already broken
                    pass
            if self._stopping:
                break
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)

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
