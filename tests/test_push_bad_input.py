"""Bad messages on `order:tracking:*` (issue 9, "Bad input"): counted as malformed, logged once
per order and rate-limited, never reaching a client, never stopping the other orders.
A real `ordertrack serve`, a real Redis, a websockets client; and MalformedLog on its own."""

from __future__ import annotations

import logging

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from ordertrack import malformed
from ordertrack.gateway.publisher import Publisher
from ordertrack.models import StoredEvent
from tests.support import free_port, wait_for_async
from tests.support.pods import connect, recv_event, recv_json, start_pod_async


@pytest.fixture
async def rasync(redis_url):
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def publish(client, order_id, seq, status, location):
    await Publisher(client).publish(order_id, "dhl", StoredEvent(
        order_id, seq, status, location, f"2025-10-03T14:{seq:02d}:00Z", None))


def metric(text: str, name: str, labels: str = "") -> float:
    for line in text.splitlines():
        if line.startswith(f"{name}{labels} ") or (not labels and line.startswith(name + " ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_malformed_messages_reach_nobody_are_counted_and_the_rest_flows(
        procs, tmp_path, redis_url, keys, rasync):
    metrics_port = free_port()
    pod = await start_pod_async(procs, tmp_path, redis_url, keys, metrics_port=metrics_port)
    token = keys.token("bad", ["ord_bad", "ord_good"])
    bad_ws = await connect(pod, token, "ord_bad")
    good_ws = await connect(pod, token, "ord_good")
    await recv_json(bad_ws)
    await recv_json(good_ws)
    channel = "order:tracking:ord_bad"
    bad = [
        b"not json at all",
        b"[1, 2, 3]",
        orjson.dumps({"status": "in_transit", "seq": "7"}),
        orjson.dumps({"status": "in_transit", "seq": 1, "location": "x" * (10 << 20)}),
    ]
    for seq, payload in enumerate(bad, 1):
        await rasync.publish(channel, payload)
        await publish(rasync, "ord_good", seq, "in_transit", "Newark NJ")
    await rasync.publish("order:tracking:", b'{"status": "in_transit", "seq": 1}')
    for _ in range(10):
        await rasync.publish("order:tracking:ord_unwatched", b'{"status": "x", "seq": 1}')
    await publish(rasync, "ord_bad", 1, "delivered", "Brooklyn NY")
    # the only update the bad order's watcher sees is the good one
    update = await recv_event(bad_ws, "tracking_update")
    assert update["data"]["status"] == "delivered" and update["data"]["seq"] == 1
    # the other order's updates kept flowing in between
    assert [(await recv_event(good_ws, "tracking_update"))["data"]["seq"] for _ in bad] == [1, 2, 3, 4]

    def scraped():
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).text
        return text if metric(text, "ordertrack_ws_redis_messages_total") >= 1 + 4 + 4 + 1 + 10 else None

    text = await wait_for_async(scraped, 5, what="message counters")
    malformed_total = "ordertrack_ws_redis_messages_malformed_total"
    for reason in (malformed.NOT_JSON, malformed.NOT_OBJECT, malformed.BAD_SEQ,
                   malformed.PAYLOAD_TOO_LARGE, malformed.EMPTY_ORDER_ID):
        assert metric(text, malformed_total, f'{{reason="{reason}"}}') == 1, reason
    assert metric(text, "ordertrack_ws_redis_messages_discarded_total") >= 10
    # the good ones were written and timed: 4 to ord_good's watcher, 1 to ord_bad's
    assert metric(text, "ordertrack_ws_updates_delivered_total") == 5
    assert metric(text, "ordertrack_ws_delivery_latency_seconds_count") == 5
    assert metric(text, "ordertrack_ws_delivery_latency_seconds_bucket", '{le="+Inf"}') == 5
    # logged, once per order per window: the first drop of ord_bad, and the empty channel
    drops = [line for line in pod.log_lines() if line.get("msg") == "dropping malformed message"]
    assert [(d["order_id"], d["reason"]) for d in drops] == [
        ("ord_bad", malformed.NOT_JSON), (None, malformed.EMPTY_ORDER_ID)]
    assert all(line.get("level") != "ERROR" for line in pod.log_lines())
    assert pod.ready()
    await bad_ws.close()
    await good_ws.close()


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_malformed_log_is_once_per_order_per_interval_and_capped(caplog):
    clock = Clock()
    drops = malformed.MalformedLog(logging.getLogger("test.malformed"), interval=60, burst=3,
                                   clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.malformed"):
        drops("ord_a", malformed.NOT_JSON)
        drops("ord_a", malformed.BAD_SEQ)        # same order, same window: quiet
        drops("ord_b", malformed.NOT_JSON)
        drops(None, malformed.EMPTY_ORDER_ID)
        drops("ord_c", malformed.NOT_JSON)       # past the burst: quiet
        clock.now = 61
        drops("ord_a", malformed.NOT_OBJECT)     # a new window: said again
    # each line counts the drops left unsaid since the line before it
    said = [(r.fields["order_id"], r.fields["reason"], r.fields["suppressed"]) for r in caplog.records]
    assert said == [("ord_a", "not_json", 0), ("ord_b", "not_json", 1),
                    (None, "empty_order_id", 0), ("ord_a", "not_object", 1)]
