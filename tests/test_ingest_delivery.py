"""What one verified, parsed webhook delivery does (ingest/app.py's `Ingest.deliver`), in
process against a real store (SQLite) and a real Redis: the per-delivery steps without HTTP.
The HTTP contract (signatures, 400/401/503) is tests/test_ingest.py's."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from ordertrack import redis_layout
from ordertrack.gateway.scheduler import Scheduler
from ordertrack.ingest.app import Ingest, OrderLocks
from ordertrack.ingest.metrics import Metrics
from ordertrack.models import CarrierResult, Order, TrackingEvent
from ordertrack.store import open_store


def scan(status: str, timestamp: str, location: str = "Hub") -> TrackingEvent:
    return TrackingEvent(status, location, timestamp)


def result(number: str, *events: TrackingEvent, eta: str | None = None) -> CarrierResult:
    return CarrierResult(number, True, tuple(events), eta)


def sample(metrics: Metrics, name: str) -> float:
    return metrics.registry.get_sample_value(name, {"carrier": "fedex"}) or 0.0


async def next_message(pubsub) -> dict:
    """The next published message (the subscription's confirmation skipped)."""
    async with asyncio.timeout(10):
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:
                return redis_layout.decode_message(message["data"])


async def test_a_delivery_stores_publishes_counts_and_tells_the_scheduler(redis_url, tmp_path):
    redis = aioredis.Redis.from_url(redis_url)
    pubsub = redis.pubsub()
    await pubsub.subscribe(redis_layout.channel("ord_1"))
    metrics = Metrics()
    async with open_store(f"sqlite:///{tmp_path / 'track.db'}") as store:
        await store.add_order(Order("ord_1", "u1", "fedex", "7700001"))
        ingest = Ingest(store, redis, metrics)
        first = result("7700001", scan("picked_up", "2025-10-03T10:00:00Z"),
                       scan("in_transit", "2025-10-03T12:00:00Z"), eta="2025-10-05")
        counts = await ingest.deliver("fedex", [first, result("NOBODY", scan("in_transit",
                                                              "2025-10-03T12:00:00Z"))])
        assert counts == {"stored": 2, "duplicates": 0, "unknown": 1}
        history = await store.history("ord_1")
        assert [(e.seq, e.status) for e in history] == [(1, "picked_up"), (2, "in_transit")]
        assert history[-1].estimated_delivery == "2025-10-05"  # the newest carries the estimate
        # published in seq order, the state hash as the store has the order
        assert [(await next_message(pubsub))["seq"] for _ in range(2)] == [1, 2]
        assert await redis.hget(redis_layout.state("ord_1"), "seq") == b"2"
        # the scheduler learns the carrier pushes this order (it then polls it less)
        assert list(await Scheduler(redis, "r1").pushed_since("fedex", 0)) == ["ord_1"]
        assert sample(metrics, "ordertrack_ingest_events_stored_total") == 2
        assert sample(metrics, "ordertrack_ingest_events_unknown_order_total") == 1

        # the same delivery again (a carrier's retry): nothing stored, nothing published
        again = await ingest.deliver("fedex", [first])
        assert again == {"stored": 0, "duplicates": 2, "unknown": 0}
        assert len(await store.history("ord_1")) == 2
        # a marker published after it is the next message: nothing came in between
        await redis.publish(redis_layout.channel("ord_1"), redis_layout.encode_message(
            "fedex", 99, "in_transit", None, "2025-10-03T13:00:00Z", None, None, 0.0))
        assert (await next_message(pubsub))["seq"] == 99
        assert sample(metrics, "ordertrack_ingest_events_duplicate_total") == 2
    await pubsub.aclose()
    await redis.aclose()


async def test_a_retry_publishes_what_a_failed_call_stored_but_did_not_publish(redis_url,
                                                                               tmp_path):
    redis = aioredis.Redis.from_url(redis_url)
    async with open_store(f"sqlite:///{tmp_path / 'track.db'}") as store:
        await store.add_order(Order("ord_2", "u2", "fedex", "7700002"))
        # stored by an earlier call whose publish failed: Redis knows nothing of it
        await store.append_events("ord_2", [scan("picked_up", "2025-10-03T10:00:00Z")])
        counts = await Ingest(store, redis, Metrics()).deliver(
            "fedex", [result("7700002", scan("picked_up", "2025-10-03T10:00:00Z"))])
        assert counts == {"stored": 0, "duplicates": 1, "unknown": 0}
        assert await redis.hget(redis_layout.state("ord_2"), "seq") == b"1"
        assert await redis.xlen(redis_layout.stream("ord_2")) == 1
    await redis.aclose()


async def test_one_orders_deliveries_take_turns_and_its_lock_goes_with_the_last_user():
    locks = OrderLocks()
    order: list[str] = []
    inside = asyncio.Event()
    release = asyncio.Event()

    async def first():
        async with locks.hold("ord_1"):
            order.append("first in")
            inside.set()
            await release.wait()
            order.append("first out")

    async def second():
        await inside.wait()
        async with locks.hold("ord_1"):
            order.append("second in")

    async def other():
        await inside.wait()
        async with locks.hold("ord_2"):  # another order is not held up
            order.append("other")
        release.set()

    await asyncio.gather(first(), second(), other())
    assert order == ["first in", "other", "first out", "second in"]
    assert locks._locks == {}  # nothing kept per order once nobody holds it
