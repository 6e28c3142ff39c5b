"""LATENCY_SAMPLE_EVERY (issue 23): a pod told to time every Nth update exports the sampled
stages and its loop's lag; by default it exports none. A real `ordertrack serve`, a real
Redis, a websockets client."""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest
import redis.asyncio as aioredis

from ordertrack.gateway.publisher import Publisher
from ordertrack.models import StoredEvent
from ordertrack.push.latency_probe import LagProbe
from tests.support import free_port, wait_for
from tests.support.pods import connect, recv_event, recv_json, start_pod

PROBE = "ordertrack_ws_latency_probe_seconds"


@pytest.fixture
async def rasync(redis_url):
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


def counts(text: str) -> dict[str, float]:
    """stage -> observation count of the probe histogram."""
    out = {}
    for line in text.splitlines():
        if line.startswith(f"{PROBE}_count{{"):
            stage = line.split('stage="', 1)[1].split('"', 1)[0]
            out[stage] = float(line.rsplit(" ", 1)[1])
    return out


async def deliver(pod, keys, rasync, order_id: str, updates: int) -> None:
    ws = await connect(pod, keys.token("probe", [order_id]), order_id)
    await recv_json(ws)  # connection_ack
    publisher = Publisher(rasync)
    for seq in range(1, updates + 1):
        await publisher.publish(order_id, "dhl", StoredEvent(
            order_id, seq, "in_transit", "Newark NJ", f"2026-12-06T10:{seq:02d}:00Z", None))
        assert (await recv_event(ws, "tracking_update"))["data"]["seq"] == seq
    await ws.close()


async def test_every_nth_update_is_timed_by_stage_and_the_loop_lag_is_probed(
        procs, tmp_path, redis_url, keys, rasync):
    metrics_port = free_port()
    pod = start_pod(procs, tmp_path, redis_url, keys, metrics_port=metrics_port,
                    latency_sample_every=2)
    await deliver(pod, keys, rasync, "ord_probe", 6)

    def sampled():
        seen = counts(httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).text)
        return seen if seen.get("fanout") == 3 and seen.get("loop_lag", 0) >= 2 else None

    seen = wait_for(sampled, 10, what="3 of 6 updates timed and the loop's lag probed")
    assert seen["redis_to_read"] == 3  # the gateway's messages carry published_at


async def test_by_default_nothing_is_sampled(procs, tmp_path, redis_url, keys, rasync):
    metrics_port = free_port()
    pod = start_pod(procs, tmp_path, redis_url, keys, metrics_port=metrics_port)
    await deliver(pod, keys, rasync, "ord_unprobed", 3)

    def delivered():
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).text
        return text if "ordertrack_ws_delivery_latency_seconds_count 3.0" in text else None

    assert counts(wait_for(delivered, 10, what="3 updates delivered")) == {}


async def test_the_lag_probe_reads_a_kernel_timer_and_lets_it_go_when_stopped():
    """On Linux the probe is a timerfd the loop reads like a socket (what a client's frame
    waits, to the microsecond); stopped, it leaves the loop and closes its descriptor."""
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    three = loop.create_future()

    def observe(lag: float) -> None:
        lags.append(lag)
        if len(lags) == 3 and not three.done():
            three.set_result(None)

    probe = LagProbe(loop, observe, interval=0.01)
    probe.start()
    assert probe.kind == "timerfd"
    fd = probe.fd
    await asyncio.wait_for(three, 5)
    probe.stop()
    assert all(lag >= 0.0 for lag in lags)
    with pytest.raises(OSError):
        os.fstat(fd)
