"""The publish script writes stream, state and channel together and refuses stale seqs."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import redis.asyncio as aioredis

from ordertrack import redis_layout
from ordertrack.gateway.publisher import Publisher
from ordertrack.models import StoredEvent


@pytest.fixture
async def r(redis_url):
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def _next_message(pubsub, within: float = 5.0) -> dict:
    async def wait():
        while True:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=within)
            if msg is not None:
                return msg

    return await asyncio.wait_for(wait(), within)


async def test_publish_writes_stream_state_and_channel(r):
    pubsub = r.pubsub()
    await pubsub.subscribe(redis_layout.channel("ord_1"))
    publisher = Publisher(r)
    event = StoredEvent(
        order_id="ord_1", seq=1, status="in_transit", location="Newark NJ",
        timestamp="2025-10-03T14:02:00Z", estimated_delivery=None, raw={"statusCode": "transit"},
    )
    assert await publisher.publish("ord_1", "dhl", event) is True

    msg = await _next_message(pubsub)
    assert msg["channel"] == redis_layout.channel("ord_1").encode()
    body = orjson.loads(msg["data"])
    assert set(body) == {
        "status", "location", "timestamp", "estimated_delivery", "carrier",
        "raw_carrier_response", "seq", "published_at",
    }
    assert body["status"] == "in_transit" and body["seq"] == 1 and body["carrier"] == "dhl"
    assert body["estimated_delivery"] is None
    assert body["raw_carrier_response"] == {"statusCode": "transit"}
    assert isinstance(body["published_at"], float)

    entries = await r.xrange(redis_layout.stream("ord_1"))
    assert [(entry_id, fields[b"msg"]) for entry_id, fields in entries] == [(b"1-0", msg["data"])]
    state = await r.hgetall(redis_layout.state("ord_1"))
    assert state == {
        b"status": b"in_transit", b"location": b"Newark NJ",
        b"timestamp": b"2025-10-03T14:02:00Z", b"estimated_delivery": b"",
        b"carrier": b"dhl", b"seq": b"1",
    }
    await pubsub.aclose()


async def test_stale_or_replayed_seq_is_refused_and_not_published(r):
    publisher = Publisher(r)
    pubsub = r.pubsub()
    await pubsub.subscribe(redis_layout.channel("ord_2"))
    ts = "2025-10-03T14:0{}:00Z"
    assert await publisher.publish("ord_2", "ups",
        StoredEvent("ord_2", 1, "shipped", "Louisville KY", ts.format(1), None))
    assert await publisher.publish("ord_2", "ups",
        StoredEvent("ord_2", 2, "in_transit", "Newark NJ", ts.format(2), "2025-10-04T18:00:00Z"))
    # replay of seq 2 and an older seq 1: refused, nothing written, nothing published
    assert not await publisher.publish("ord_2", "ups",
        StoredEvent("ord_2", 2, "in_transit", "X", ts.format(2), None))
    assert not await publisher.publish("ord_2", "ups",
        StoredEvent("ord_2", 1, "delivered", "Y", ts.format(3), None))
    assert await publisher.publish("ord_2", "ups",
        StoredEvent("ord_2", 3, "delivered", "Brooklyn NY", ts.format(3), None))

    seqs = [orjson.loads((await _next_message(pubsub))["data"])["seq"] for _ in range(3)]
    assert seqs == [1, 2, 3]
    assert await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2) is None

    ids = [entry_id for entry_id, _ in await r.xrange(redis_layout.stream("ord_2"))]
    assert ids == [b"1-0", b"2-0", b"3-0"]
    # XRANGE from last_seq+1 is "everything after last_seq"
    after_one = await r.xrange(redis_layout.stream("ord_2"), min="2-0", max="+")
    assert [orjson.loads(f[b"msg"])["status"] for _, f in after_one] == ["in_transit", "delivered"]
    state = await r.hgetall(redis_layout.state("ord_2"))
    assert state[b"seq"] == b"3" and state[b"status"] == b"delivered"
    assert state[b"location"] == b"Brooklyn NY"
    await pubsub.aclose()


async def test_stream_is_bounded_and_keys_expire(r):
    publisher = Publisher(r, maxlen=10, ttl=600)
    for seq in range(1, 301):
        await publisher.publish("ord_3", "fedex", StoredEvent(
            "ord_3", seq, "in_transit", None, f"2025-10-03T14:00:{seq % 60:02d}Z"))
    length = await r.xlen(redis_layout.stream("ord_3"))
    assert 10 <= length < 300
    last_id, _ = (await r.xrevrange(redis_layout.stream("ord_3"), count=1))[0]
    assert last_id == b"300-0"
    assert 0 < await r.ttl(redis_layout.state("ord_3")) <= 600
    assert 0 < await r.ttl(redis_layout.stream("ord_3")) <= 600


async def test_state_lost_but_stream_newer_still_refuses(r):
    """A stream ahead of the state (state evicted) must not make XADD fail or go backwards."""
    publisher = Publisher(r)
    assert await publisher.publish("ord_4", "dhl",
        StoredEvent("ord_4", 5, "in_transit", None, "2025-10-03T14:00:00Z", None))
    await r.delete(redis_layout.state("ord_4"))
    assert not await publisher.publish("ord_4", "dhl",
        StoredEvent("ord_4", 4, "in_transit", None, "2025-10-03T13:00:00Z", None))
    assert await publisher.publish("ord_4", "dhl",
        StoredEvent("ord_4", 6, "delivered", None, "2025-10-03T15:00:00Z", None))


async def test_non_positive_seq_is_a_programming_error(r):
    publisher = Publisher(r)
    with pytest.raises(ValueError):
        await publisher.publish("ord_5", "dhl",
            StoredEvent("ord_5", 0, "in_transit", None, "2025-10-03T14:00:00Z", None))
