"""Push subscriptions: the gateway subscribes active orders where the carrier needs it
(UPS Track Alert, DHL push) and renews UPS subscriptions before their 14 days end.

FedEx needs none: its webhook is set up once per account and covers every shipment.
The ZSET `gateway:subscribed:{carrier}` holds tracking number -> when its subscription ends
(+inf for DHL, whose subscriptions last until the shipment ends), shared by all replicas.
A failed subscription call is logged and retried next round: polling covers the order
meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from ordertrack import redis_layout
from ordertrack.gateway.carriers.common import CarrierError
from ordertrack.gateway.carriers.ups import SUBSCRIBE_BATCH, SUBSCRIPTION_SECONDS
from ordertrack.gateway.poller import sleep_or_stop

log = logging.getLogger("ordertrack.gateway.subscriptions")



def due(numbers: Iterable[str], ends: Mapping[str, float], now: float,
        renew_before: float) -> list[str]:
    """The numbers never subscribed, or whose subscription ends within `renew_before`."""
    return sorted({n for n in numbers if ends.get(n, -math.inf) <= now + renew_before})


def batches(numbers: list[str], size: int) -> list[list[str]]:
    return [numbers[i:i + size] for i in range(0, len(numbers), size)]


@dataclass(eq=False)
class Subscriber:
    """One carrier's subscription round: read active orders, subscribe what is due.

    `clock` (epoch seconds) decides what is due and when a new subscription ends; tests pass
    their own to cross the 14 days without waiting."""

    redis: Any
    store: Any
    carrier: str
    client: Any
    url: str
    credential: str
    header: str = ""
    renew_before: float = 2 * 86400.0
    clock: Callable[[], float] = time.time

    async def round(self) -> int:
        """Subscribe the due numbers; how many were subscribed."""
        key = redis_layout.subscribed(self.carrier)
        numbers = {o.tracking_number for o in await self.store.active_orders(self.carrier)}
        ends = {m.decode(): s for m, s in await self.redis.zrange(key, 0, -1, withscores=True)}
        gone = set(ends) - numbers
        if gone:
            await self.redis.zrem(key, *gone)
        now = self.clock()
        todo = due(numbers, ends, now, self.renew_before)
        done = 0
        if self.carrier == "ups":
            for batch in batches(todo, SUBSCRIBE_BATCH):
                valid, invalid = await self.client.subscribe(batch, self.url, self.credential)
                if invalid:
                    log.warning("ups: Track Alert refused %s; polling covers them", invalid)
                if valid:
                    await self.redis.zadd(key, dict.fromkeys(valid, now + SUBSCRIPTION_SECONDS))
                done += len(valid)
        else:
            for number in todo:
                await self.client.subscribe(number, self.url, self.header, self.credential)
                await self.redis.zadd(key, {number: math.inf})
                done += 1
        if done:
            log.info("%s: %d push subscription(s) made or renewed", self.carrier, done)
        return done

    async def run(self, stopping: asyncio.Event, every: float) -> None:
        while not stopping.is_set():
            try:
                await self.round()
            except (CarrierError, RedisError, OSError) as exc:
                log.warning("%s: push subscriptions failed (%s); retrying in %.0f s",
                            self.carrier, exc, every)
            except Exception:
                log.exception("%s: push subscription round failed", self.carrier)
            await sleep_or_stop(stopping, every)
