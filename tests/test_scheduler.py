"""Scheduler: effective period, fairness under a short quota, and claims shared by replicas."""

from __future__ import annotations

import asyncio

import pytest

from ordertrack import redis_layout
from ordertrack.gateway.scheduler import (
    Scheduler,
    effective_period,
    pick_due,
    simulate,
    spacing,
)

# --- pure core ----------------------------------------------------------------------------


def test_interval_is_the_shortest_period_when_the_quota_covers_every_order():
    assert effective_period(10, 60, 2000) == 60
    assert effective_period(33, 60, 2000) == 60  # 33 requests/min fit in 2000/hour
    assert spacing(10, 60, 2000) == 6  # spread over the cycle, not burst
    assert effective_period(0, 90, 1000, 30) == 90


def test_period_stretches_when_the_quota_cannot_cover_every_order():
    assert effective_period(100, 60, 2000) == pytest.approx(180)  # 100 requests at 1.8 s
    assert spacing(100, 60, 2000) == pytest.approx(1.8)  # the quota's own pace
    assert effective_period(1000, 120, 500) == pytest.approx(7200)


def test_fedex_batching_counts_thirty_orders_as_one_request():
    assert effective_period(750, 90, 1000, batch_size=30) == 90  # 25 requests per 90 s
    assert effective_period(750, 90, 1000, batch_size=1) == pytest.approx(2700)
    assert effective_period(3000, 90, 1000, batch_size=30) == pytest.approx(360)


def test_pick_due_takes_most_stale_first_and_skips_busy_and_fresh():
    polled = {"a": 50.0, "b": 10.0, "c": 0.0, "d": 95.0, "e": 30.0}
    assert pick_due(polled, now=100, interval=60, batch_size=2) == ["c", "b"]
    assert pick_due(polled, now=100, interval=60, batch_size=5, busy={"c"}) == ["b", "e"]
    assert pick_due(polled, now=100, interval=60, batch_size=5) == ["c", "b", "e"]  # a, d fresh


def test_round_robin_is_fair_when_the_quota_is_short():
    # 100 DHL orders on 2000 requests/hour: every order every 180 s, none starved
    times = simulate(100, interval=60, requests_per_hour=2000, batch_size=1, duration=3600)
    counts = {len(polls) for polls in times.values()}
    assert max(counts) - min(counts) <= 1 and min(counts) >= 19
    gaps = {round(b - a, 6) for polls in times.values() for a, b in zip(polls, polls[1:], strict=False)}
    assert gaps == {180.0}


def test_ample_quota_polls_every_order_each_interval_spread_out():
    times = simulate(10, interval=60, requests_per_hour=2000, batch_size=1, duration=600)
    first = sorted(polls[0] for polls in times.values())
    assert first == [6.0 * i for i in range(10)]  # starts at once, one request every 6 s
    gaps = {round(b - a, 6) for polls in times.values() for a, b in zip(polls, polls[1:], strict=False)}
    assert gaps == {60.0}


def test_fedex_batches_share_the_quota_fairly():
    times = simulate(95, interval=90, requests_per_hour=1000, batch_size=30, duration=900)
    counts = [len(polls) for polls in times.values()]
    assert max(counts) - min(counts) <= 1
    gaps = {round(b - a, 6) for polls in times.values() for a, b in zip(polls, polls[1:], strict=False)}
    assert gaps == {90.0}


# --- Redis coordination -------------------------------------------------------------------


async def test_first_claim_is_immediate_and_most_stale_first(clients):
    sched = Scheduler(clients[0], "r0")
    assert await sched.sync("dhl", ["ord_1", "ord_2", "ord_3"]) == 3
    await clients[0].zadd(redis_layout.polled("dhl"), {"ord_1": 5.0, "ord_2": 1.0})
    claim = await sched.claim("dhl", interval=60, batch_size=2, spacing_seconds=0.0)
    assert claim.order_ids == ("ord_3", "ord_2")  # never polled, then the oldest
    assert await clients[0].get(redis_layout.claim("dhl", "ord_3")) == b"r0"
    await sched.release("dhl", claim.order_ids)
    assert await clients[0].get(redis_layout.claim("dhl", "ord_3")) is None
    # just polled: not due again before the interval
    rest = await sched.claim("dhl", interval=60, batch_size=5, spacing_seconds=0.0)
    assert rest.order_ids == ("ord_1",)
    nothing = await sched.claim("dhl", interval=60, batch_size=5, spacing_seconds=0.0)
    assert nothing.order_ids == () and 59 < nothing.wait_seconds <= 60


async def test_pace_spreads_requests_across_replicas(clients):
    a, b = Scheduler(clients[0], "a"), Scheduler(clients[1], "b")
    await a.sync("ups", [f"ord_{i}" for i in range(5)])
    first = await a.claim("ups", interval=120, batch_size=1, spacing_seconds=30)
    assert len(first.order_ids) == 1
    second = await b.claim("ups", interval=120, batch_size=1, spacing_seconds=30)
    assert second.order_ids == () and 29 < second.wait_seconds <= 30


async def test_two_replicas_never_hold_the_same_order(clients):
    a, b = Scheduler(clients[0], "a"), Scheduler(clients[1], "b")
    orders = [f"ord_{i}" for i in range(40)]
    await a.sync("fedex", orders)
    await b.sync("fedex", orders)

    async def take(sched: Scheduler) -> list[str]:
        got: list[str] = []
        for _ in range(10):
            claim = await sched.claim("fedex", interval=0.001, batch_size=3, spacing_seconds=0.0)
            got += claim.order_ids
        return got

    got_a, got_b = await asyncio.gather(take(a), take(b))
    # nothing released: a claimed order stays claimed even though its interval passed
    assert len(got_a) + len(got_b) == 40
    assert not set(got_a) & set(got_b)
    assert len(set(got_a)) == len(got_a)
    await b.release("fedex", got_a)  # b cannot release a's claims
    assert await clients[0].get(redis_layout.claim("fedex", got_a[0])) == b"a"


async def test_sync_and_forget_follow_the_active_set(clients):
    sched = Scheduler(clients[0], "r")
    await sched.sync("dhl", ["ord_1", "ord_2"])
    await clients[0].zadd(redis_layout.polled("dhl"), {"ord_1": 1000.0})
    await sched.sync("dhl", ["ord_1", "ord_3"])  # ord_2 delivered, ord_3 new
    assert await sched.last_polled("dhl") == {"ord_3": 0.0, "ord_1": 1000.0}
    await sched.forget("dhl", "ord_1")
    assert set(await sched.last_polled("dhl")) == {"ord_3"}
