"""The shared carrier quota: replicas together never exceed it; pauses reach every replica."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from ordertrack.gateway.quota import Quota, Window, carrier_limits, hourly_rate, next_utc_midnight
from tests.support import wait_for_async


async def _hammer(quota: Quota, carrier: str, seconds: float) -> int:
    granted = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        allowed, wait = await quota.acquire(carrier)
        if allowed:
            granted += 1
        else:
            assert wait > 0
            await asyncio.sleep(0.01)
    return granted


async def test_two_replicas_together_never_exceed_the_quota(clients):
    limits = {"ups": (Window(50, 60),)}
    replicas = [Quota(client, limits, replica=f"r{i}") for i, client in enumerate(clients)]
    # each replica runs several concurrent pollers, like the gateway does
    counts = await asyncio.gather(*(_hammer(q, "ups", 1.0) for q in replicas for _ in range(3)))
    assert sum(counts) == 50
    assert counts[0] > 0 and counts[3] > 0  # both replicas got a share
    allowed, wait = await replicas[1].acquire("ups")
    assert not allowed and 55 < wait <= 60
    assert await replicas[0].remaining("ups") == 0


async def test_burst_window_and_hourly_window_both_hold(clients):
    limits = {"dhl": (Window(8, 3600), Window(5, 60))}
    a, b = (Quota(client, limits) for client in clients)
    results = [await (a if i % 2 else b).acquire("dhl") for i in range(7)]
    assert [allowed for allowed, _ in results] == [True] * 5 + [False] * 2
    assert 55 < results[-1][1] <= 60  # the minute window frees up first
    assert await a.remaining("dhl") == 0


async def test_refund_gives_the_request_back(clients):
    quota = Quota(clients[0], {"fedex": (Window(2, 3600),)})
    state, member = await quota.acquire_request("fedex")
    assert state.allowed and state.remaining == 1
    await quota.refund("fedex", member)
    assert await quota.remaining("fedex") == 2


async def test_pause_is_seen_by_every_replica_and_never_shortened(clients):
    limits = carrier_limits()
    a, b = (Quota(client, limits) for client in clients)
    until = time.time() + 30
    await a.pause("dhl", until)
    allowed, wait = await b.acquire("dhl")
    assert not allowed and 25 < wait <= 30.5
    await b.pause("dhl", time.time() + 5)  # a shorter pause does not cut the longer one
    state = await a.state("dhl")
    assert state.paused_until == pytest.approx(until, abs=0.01)
    assert (await a.acquire("fedex"))[0]  # other carriers are not paused
    assert state.remaining == 100  # refused requests used nothing (tightest: the minute window)


async def test_pause_ends_by_itself(clients):
    quota = Quota(clients[0], carrier_limits())
    until = time.time() + 1.0
    await quota.pause("ups", until)
    allowed, wait = await quota.acquire("ups")
    assert not allowed and 0 < wait <= 1.0
    # the first request granted again comes once the pause is over, not before
    async def granted() -> bool:
        return (await quota.acquire("ups"))[0]

    await wait_for_async(granted, 10, interval=0.02, what="the pause over")
    assert time.time() >= until - 0.01


def test_contract_limits_and_daily_reset():
    limits = carrier_limits()
    assert hourly_rate(limits["dhl"]) == 2000  # the 100/minute burst allows more than the hour
    assert hourly_rate(limits["fedex"]) == 1000 and hourly_rate(limits["ups"]) == 500
    assert hourly_rate(carrier_limits(dhl_burst_per_minute=10)["dhl"]) == 600
    now = datetime(2025, 10, 3, 23, 59, 30, tzinfo=UTC).timestamp()
    assert next_utc_midnight(now) == datetime(2025, 10, 4, tzinfo=UTC).timestamp()
