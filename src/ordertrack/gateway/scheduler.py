"""When to poll which order: a pure core plus Redis coordination between replicas.

Rules (per carrier):
- the poll interval (DHL 60 s, FedEx 90 s, UPS 120 s) is the SHORTEST re-poll period;
- the most stale order goes first (never-polled orders count as infinitely stale);
- requests are spread evenly over the cycle, one every `spacing` seconds, not burst;
- when the hourly quota cannot cover every active order each interval, every order is polled
  less often, equally: the period stretches to `effective_period` (round robin by staleness);
- FedEx tracks 30 numbers per request, so 30 orders cost one request;
- an order whose carrier pushed a scan within `safety_net` seconds (`ordertrack ingest`
  records it in `gateway:pushed:{CARRIER}`) is polled only once `safety_net` after its last
  push: the quota goes to the orders without push. A push channel that goes quiet for an
  order (UPS loses callbacks while we are down) is noticed then, and polling resumes.

Across replicas, the ZSET `gateway:polled:{CARRIER}` holds each order's last-claimed time, the
key `gateway:pace:{CARRIER}` the next request slot, and `gateway:claim:{CARRIER}:ORDER_ID`
(SET NX PX) who is polling the order now; claim.lua does all three atomically on Redis' clock
(one hash tag, the carrier; names in `ordertrack.redis_layout`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ordertrack import redis_layout

CLAIM_SCRIPT = Path(__file__).with_name("claim.lua").read_text()


# --- the pure core ------------------------------------------------------------------------------


def requests_per_cycle(active_orders: int, batch_size: int) -> int:
    """Requests needed to poll every active order once."""
    return math.ceil(active_orders / batch_size) if active_orders > 0 else 0


def effective_period(active_orders: int, interval: float, requests_per_hour: float,
                     batch_size: int = 1) -> float:
    """Seconds between two polls of the same order: the interval, or longer when the quota
    cannot cover every order each interval."""
    needed = requests_per_cycle(active_orders, batch_size)
    return max(interval, needed * 3600.0 / requests_per_hour)


def spacing(active_orders: int, interval: float, requests_per_hour: float,
            batch_size: int = 1) -> float:
    """Seconds between two requests to the carrier (all replicas together)."""
    needed = requests_per_cycle(active_orders, batch_size)
    if needed == 0:
        return interval
    return effective_period(active_orders, interval, requests_per_hour, batch_size) / needed


def _requests_per_interval(polled: int, pushed: int, interval: float, safety_net: float,
                           batch_size: int) -> float:
    """Requests wanted per `interval`: every order without push, and pushed ones as often as
    the safety net says."""
    return (requests_per_cycle(polled, batch_size)
            + requests_per_cycle(pushed, batch_size) * interval / safety_net)


def period_with_push(polled: int, pushed: int, interval: float, safety_net: float,
                     requests_per_hour: float, batch_size: int = 1) -> float:
    """Seconds between two polls of an order WITHOUT recent push, when `pushed` orders are
    polled only every `safety_net`: what `ordertrack_gateway_effective_poll_period_seconds`
    shows. With no pushed order it is `effective_period`."""
    wanted = _requests_per_interval(polled, pushed, interval, safety_net, batch_size)
    return max(interval, wanted * 3600.0 / requests_per_hour)


def spacing_with_push(polled: int, pushed: int, interval: float, safety_net: float,
                      requests_per_hour: float, batch_size: int = 1) -> float:
    """Seconds between two requests when pushed orders are polled every `safety_net`."""
    wanted = _requests_per_interval(polled, pushed, interval, safety_net, batch_size)
    if wanted == 0:
        return interval
    return period_with_push(polled, pushed, interval, safety_net, requests_per_hour,
                            batch_size) / wanted


def deferred_scores(pushed: Mapping[str, float], active: Iterable[str], now: float,
                    interval: float, safety_net: float) -> dict[str, float]:
    """The `gateway:polled` score of each active order pushed within `safety_net`: its last
    push + safety_net - interval, so claim.lua finds it due `safety_net` after that push."""
    return {order_id: pushed[order_id] + safety_net - interval
            for order_id in active
            if order_id in pushed and pushed[order_id] > now - safety_net}


def pick_due(last_polled: Mapping[str, float], now: float, interval: float, batch_size: int,
             busy: Iterable[str] = ()) -> list[str]:
    """The next batch: orders not polled for `interval`, most stale first, not claimed by
    another replica. (claim.lua does the same on Redis.)"""
    held = set(busy)
    due = sorted(
        (polled, order_id)
        for order_id, polled in last_polled.items()
        if polled <= now - interval and order_id not in held
    )
    return [order_id for _, order_id in due[:batch_size]]


def simulate(active_orders: int, interval: float, requests_per_hour: float, batch_size: int,
             duration: float) -> dict[str, list[float]]:
    """Run the pure scheduler over `duration` seconds; the times each order was polled.

    Used by tests (fairness) and by the capacity bench (observed staleness).
    """
    polled = {f"ord_{i}": 0.0 for i in range(active_orders)}
    never = set(polled)
    times: dict[str, list[float]] = {order_id: [] for order_id in polled}
    step = spacing(active_orders, interval, requests_per_hour, batch_size)
    now = 0.0
    while now <= duration:
        view = {o: (-math.inf if o in never else t) for o, t in polled.items()}
        batch = pick_due(view, now, interval, batch_size)
        if batch:
            for order_id in batch:
                polled[order_id] = now
                never.discard(order_id)
                times[order_id].append(now)
            now += step
        else:
            earliest = min(polled.values())
            now = max(now + 1e-6, earliest + interval)
    return times


# --- Redis coordination -------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """Either a batch of order ids this replica now owns, or how long to wait for one."""

    order_ids: tuple[str, ...] = ()
    wait_seconds: float = 0.0


class Scheduler:
    """Shared staleness and claims for one replica."""

    def __init__(self, redis: Any, replica: str, claim_ttl: float = 120.0):
        self.redis = redis
        self.replica = replica
        self.claim_ttl_ms = int(claim_ttl * 1000)
        self._script = redis.register_script(CLAIM_SCRIPT)

    async def sync(self, carrier: str, order_ids: Iterable[str]) -> int:
        """Make the carrier's ZSET hold exactly the active orders: new ones enter as never
        polled (most stale), finished ones leave. Returns how many are active."""
        active = set(order_ids)
        key = redis_layout.polled(carrier)
        present = {member.decode() for member in await self.redis.zrange(key, 0, -1)}
        gone = present - active
        fresh = active - present
        async with self.redis.pipeline(transaction=False) as pipe:
            if fresh:
                pipe.zadd(key, dict.fromkeys(fresh, 0), nx=True)
            if gone:
                pipe.zrem(key, *gone)
            await pipe.execute()
        return len(active)

    async def defer(self, carrier: str, scores: Mapping[str, float]) -> None:
        """Push the next poll of these orders out (never earlier than already planned)."""
        if scores:
            await self.redis.zadd(redis_layout.polled(carrier), dict(scores), xx=True, gt=True)

    async def pushed_since(self, carrier: str, since: float) -> dict[str, float]:
        """Orders pushed after `since` -> their last push; older entries are dropped."""
        key = redis_layout.pushed(carrier)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(key, "-inf", f"({since}")
            pipe.zrangebyscore(key, since, "+inf", withscores=True)
            _, pairs = await pipe.execute()
        return {member.decode(): score for member, score in pairs}

    async def forget(self, carrier: str, order_id: str) -> None:
        """The order left the active set (delivered): stop polling it now."""
        await self.redis.zrem(redis_layout.polled(carrier), order_id)

    async def claim(self, carrier: str, interval: float, batch_size: int,
                    spacing_seconds: float) -> Claim:
        answer = await self._script(
            keys=[redis_layout.polled(carrier), redis_layout.pace(carrier)],
            args=["claim", interval, batch_size, spacing_seconds, self.replica,
                  self.claim_ttl_ms, redis_layout.claim_prefix(carrier)],
        )
        kind = answer[0].decode() if isinstance(answer[0], bytes) else answer[0]
        if kind == "wait":
            return Claim(wait_seconds=float(answer[1]))
        ids = tuple(item.decode() if isinstance(item, bytes) else item for item in answer[2:])
        return Claim(order_ids=ids)

    async def release(self, carrier: str, order_ids: Iterable[str]) -> None:
        ids = list(order_ids)
        if ids:
            await self._script(keys=[redis_layout.polled(carrier)],
                               args=["release", self.replica, redis_layout.claim_prefix(carrier),
                                     *ids])

    async def last_polled(self, carrier: str) -> dict[str, float]:
        pairs = await self.redis.zrange(redis_layout.polled(carrier), 0, -1, withscores=True)
        return {member.decode(): score for member, score in pairs}


async def mark_pushed(redis: Any, carrier: str, order_ids: Iterable[str], now: float) -> None:
    """Record that the carrier pushed scans of these orders now (by `ordertrack ingest`)."""
    ids = list(order_ids)
    if ids:
        await redis.zadd(redis_layout.pushed(carrier), dict.fromkeys(ids, now), gt=True)
