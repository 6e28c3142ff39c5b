"""Carrier push: `ordertrack ingest` end to end against the sandbox's webhooks, a real pod,
a private Redis and a SQLite store; plus the pure rules (authentication, push parsing,
push-aware polling)."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time

import httpx
import orjson
import pytest
import redis

from ordertrack import redis_layout
from ordertrack.gateway.carriers import dhl, fedex, push, ups
from ordertrack.gateway.publisher import Publisher
from ordertrack.gateway.scheduler import deferred_scores, effective_period, period_with_push
from ordertrack.ingest import auth
from ordertrack.models import StoredEvent, TrackingEvent
from ordertrack.sandbox import push as sandbox_push
from ordertrack.sandbox import shapes
from ordertrack.sandbox.shipments import new_shipment
from tests.pods import connect, recv_event, start_pod
from tests.support import free_port, wait_for, wait_http_ok
from tests.test_poller import (  # noqa: F401 - fixtures
    add_orders,
    gateway_env,
    order,
    polls_of,
    sandbox,
    store_call,
)

FEDEX_SECRET = "fedex-security-token"
UPS_CREDENTIAL = "ups-callback-credential"
DHL_SECRET = "dhl-static-header-value"
TIMELINE = [{"kind": "label_created", "city": "Memphis"},
            {"kind": "in_transit", "city": "Chicago"},
            {"kind": "out_for_delivery", "city": "Brooklyn"}]


# --- pure rules ------------------------------------------------------------------------------


def test_fedex_signature_is_checked_over_the_raw_body():
    body = b'{"trackingNumber":"794843185271","trackResults":[]}'
    signature = auth.fedex_signature(body, FEDEX_SECRET)
    assert auth.fedex_verified(body, signature, FEDEX_SECRET)
    assert not auth.fedex_verified(body + b" ", signature, FEDEX_SECRET)  # one byte more
    assert not auth.fedex_verified(body, auth.fedex_signature(body, "other"), FEDEX_SECRET)
    assert not auth.fedex_verified(body, None, FEDEX_SECRET)
    assert not auth.fedex_verified(body, "not base64 ☃", FEDEX_SECRET)


def test_header_credentials_bearer_and_api_key_header():
    assert auth.header_verified({"authorization": "Bearer c1"}, "Authorization", "c1")
    assert not auth.header_verified({"authorization": "c1"}, "Authorization", "c1")
    assert auth.header_verified({"x-webhook-token": "s"}, "X-Webhook-Token", "s")
    assert not auth.header_verified({"x-webhook-token": "s2"}, "X-Webhook-Token", "s")
    assert not auth.header_verified({}, "X-Webhook-Token", "s")


@pytest.mark.parametrize("carrier", ["dhl", "fedex", "ups"])
def test_a_pushed_scan_normalises_as_the_same_scan_polled(carrier):
    shipment = new_shipment(carrier, "PUSH1", time.time() - 10, 1.0, TIMELINE)
    shipment.advance(3, time.time())
    events = shipment.events()
    polled = {"dhl": lambda: dhl.parse_response(shapes.dhl_body(shipment), "PUSH1"),
              "fedex": lambda: fedex.parse_response(shapes.fedex_body("t", [
                  shapes.fedex_complete_result("PUSH1", [shipment])]), ["PUSH1"]),
              "ups": lambda: ups.parse_response(shapes.ups_body(shipment), "PUSH1")}[carrier]()
    webhook = sandbox_push.Webhook("http://x", secret="s", header="h", value="v")
    for event, polled_event in zip(events, polled["PUSH1"].events, strict=True):
        body, _ = sandbox_push.delivery(carrier, webhook, shipment, event)
        (result,) = push.PARSERS[carrier](body)
        assert result.tracking_number == "PUSH1"
        pushed = result.events[-1]
        assert pushed.identity == polled_event.identity
        assert pushed.location == polled_event.location or carrier == "dhl"


def test_malformed_push_bodies_name_what_is_wrong():
    from ordertrack.gateway.carriers.common import CarrierParseError

    with pytest.raises(CarrierParseError, match="not JSON"):
        push.parse_fedex(b"{oops")
    with pytest.raises(CarrierParseError, match="trackingNumber"):
        push.parse_ups(b'{"activityStatus": {"type": "I"}}')
    with pytest.raises(CarrierParseError, match="shipments"):
        push.parse_dhl(b'{"events": []}')


def test_orders_with_push_free_the_quota_for_the_others():
    # UPS at the contract quota: 1,000 orders, none pushed: every 2 hours
    assert effective_period(1000, 120, 500) == period_with_push(1000, 0, 120, 1800, 500) == 7200
    # 700 of them pushed (polled every 30 min as a safety net): the 300 others far more often
    assert period_with_push(300, 700, 120, 1800, 500) < 7200 / 2
    now = 3000.0
    scores = deferred_scores({"a": 2990.0, "b": 100.0, "gone": 2999.0}, ["a", "b"], now, 120,
                             1800)
    assert scores == {"a": 2990.0 + 1800 - 120}  # b's push is older than the safety net


async def test_a_late_scan_gets_its_seq_but_leaves_the_current_state(redis_url):
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(redis_url)
    publisher = Publisher(r)
    newer = StoredEvent("ord_late", 1, "in_transit", "Chicago IL, US", "2025-10-03T14:00:00Z")
    older = StoredEvent("ord_late", 2, "shipped", "Memphis TN, US", "2025-10-03T09:00:00Z")
    assert await publisher.publish("ord_late", "fedex", newer)
    assert await publisher.publish("ord_late", "fedex", older)
    state = {k.decode(): v.decode() for k, v in (await r.hgetall(redis_layout.state("ord_late"))).items()}
    assert state["seq"] == "2" and state["status"] == "in_transit"
    assert state["timestamp"] == "2025-10-03T14:00:00Z"
    assert len(await r.xrange(redis_layout.stream("ord_late"))) == 2
    await r.aclose()


# --- end to end --------------------------------------------------------------------------------


def start_ingest(procs, tmp_path, redis_url: str, db: str, port: int | None = None,
                 **extra: str) -> str:
    port = port or free_port()
    env = {"REDIS_URL": redis_url, "DATABASE_URL": db, "INGEST_HOST": "127.0.0.1",
           "INGEST_PORT": str(port), "FEDEX_WEBHOOK_SECRET": FEDEX_SECRET,
           "UPS_WEBHOOK_CREDENTIAL": UPS_CREDENTIAL, "DHL_WEBHOOK_SECRET": DHL_SECRET, **extra}
    procs.start("ingest", env=env, log=tmp_path / f"ingest-{port}.log")
    base = f"http://127.0.0.1:{port}"
    wait_http_ok(base + "/healthz")
    return base


def shipment(base: str, carrier: str, number: str, reached: int) -> None:
    httpx.post(f"{base}/_admin/shipments", json={
        "carrier": carrier, "tracking_number": number, "events": TIMELINE}).raise_for_status()
    if reached > 1:
        httpx.post(f"{base}/_admin/advance",
                   json={"tracking_number": number, "steps": reached - 1}).raise_for_status()


def fedex_webhook(base: str, ingest: str) -> None:
    httpx.post(f"{base}/_admin/webhooks", json={
        "carrier": "fedex", "url": f"{ingest}/webhooks/fedex", "secret": FEDEX_SECRET,
        "auto": False}).raise_for_status()


def push_now(base: str, carrier: str, number: str, **extra) -> list[dict]:
    """Have the sandbox deliver the shipment's scans now; its deliveries' outcomes."""
    response = httpx.post(f"{base}/_admin/push", json={
        "carrier": carrier, "tracking_number": number, **extra}, timeout=30)
    response.raise_for_status()
    return response.json()["deliveries"]


def metric(base: str, sample: str) -> float:
    """The value of one sample (`name{labels}`) on `base`/metrics (0 when absent)."""
    for line in httpx.get(base + "/metrics").text.splitlines():
        if line.split(" ")[0] == sample:
            return float(line.split(" ")[1])
    return 0.0


def test_a_pushed_fedex_scan_reaches_a_websocket_client_with_its_seq(
        sandbox, redis_url, procs, tmp_path, keys):  # noqa: F811
    db = f"sqlite:///{tmp_path}/track.db"
    add_orders(db, [order("ord_fx", "fedex", "FXPUSH1")])
    pod = start_pod(procs, tmp_path, redis_url, keys)
    ingest = start_ingest(procs, tmp_path, redis_url, db)
    shipment(sandbox, "fedex", "FXPUSH1", reached=1)
    fedex_webhook(sandbox, ingest)

    async def watch():
        ws = await connect(pod, keys.token("user_1", "ord_fx"), "ord_fx")
        assert (await recv_event(ws, "connection_ack"))["data"]["seq"] == 0
        (delivered,) = await asyncio.to_thread(push_now, sandbox, "fedex", "FXPUSH1")
        assert delivered["status"] == 200
        first = (await recv_event(ws, "tracking_update"))["data"]
        await asyncio.to_thread(httpx.post, f"{sandbox}/_admin/advance",
                                json={"tracking_number": "FXPUSH1", "steps": 1})
        await asyncio.to_thread(push_now, sandbox, "fedex", "FXPUSH1")
        second = (await recv_event(ws, "tracking_update"))["data"]
        await ws.close()
        return first, second

    first, second = asyncio.run(watch())
    assert (first["seq"], first["status"], first["carrier"]) == (1, "label_created", "fedex")
    assert (second["seq"], second["status"], second["location"]) == (2, "in_transit",
                                                                      "CHICAGO, IL, US")
    assert "raw_carrier_response" not in second
    history = store_call(db, "history", "ord_fx")
    assert [(e.seq, e.status) for e in history] == [(1, "label_created"), (2, "in_transit")]
    assert metric(ingest, 'ordertrack_ingest_events_stored_total{carrier="fedex"}') == 2


def test_forged_duplicate_and_out_of_order_deliveries(sandbox, redis_url, procs,  # noqa: F811
                                                      tmp_path):
    db = f"sqlite:///{tmp_path}/track.db"
    add_orders(db, [order("ord_fx", "fedex", "FXPUSH2")])
    ingest = start_ingest(procs, tmp_path, redis_url, db)
    shipment(sandbox, "fedex", "FXPUSH2", reached=2)
    fedex_webhook(sandbox, ingest)
    r = redis.Redis.from_url(redis_url)

    # a forged signature: 401, nothing stored, nothing published
    forged = push_now(sandbox, "fedex", "FXPUSH2", events="all", fault="bad_signature")
    assert [d["status"] for d in forged] == [401, 401]
    assert store_call(db, "history", "ord_fx") == []
    assert r.exists(redis_layout.state("ord_fx"), redis_layout.stream("ord_fx")) == 0
    refused = 'ordertrack_ingest_deliveries_refused_total{carrier="fedex",reason="unauthorized"}'
    assert metric(ingest, refused) == 2

    # out of order: the newer scan first, then the older one
    late = push_now(sandbox, "fedex", "FXPUSH2", events="all", fault="out_of_order")
    assert [d["status"] for d in late] == [200, 200]
    history = store_call(db, "history", "ord_fx")
    assert [(e.seq, e.status) for e in history] == [(1, "in_transit"), (2, "label_created")]
    timeline = sorted(history, key=lambda e: e.timestamp)
    assert [e.status for e in timeline] == ["label_created", "in_transit"]
    current = store_call(db, "get_order", "ord_fx")
    assert (current.status, current.last_update, current.seq) == (
        "in_transit", history[0].timestamp, 2)
    state = r.hgetall(redis_layout.state("ord_fx"))
    assert state[b"status"] == b"in_transit" and state[b"seq"] == b"2"

    # a duplicate delivery (and a burst of the same scans) changes nothing
    stream_before = r.xrange(redis_layout.stream("ord_fx"))
    again = push_now(sandbox, "fedex", "FXPUSH2", events="all", fault="duplicate")
    again += push_now(sandbox, "fedex", "FXPUSH2", events="all", fault="burst")
    assert {d["status"] for d in again} == {200}
    assert store_call(db, "history", "ord_fx") == history
    assert r.xrange(redis_layout.stream("ord_fx")) == stream_before
    assert r.hgetall(redis_layout.state("ord_fx")) == state
    assert metric(ingest, 'ordertrack_ingest_events_duplicate_total{carrier="fedex"}') == 6
    r.close()


def test_bad_bodies_and_unconfigured_carriers_are_refused_clearly(sandbox, redis_url,  # noqa: F811
                                                                   procs, tmp_path):
    db = f"sqlite:///{tmp_path}/track.db"
    add_orders(db, [order("ord_fx", "fedex", "FXPUSH3")])
    ingest = start_ingest(procs, tmp_path, redis_url, db)
    body = b'{"trackingNumber": "FXPUSH3"}'
    response = httpx.post(f"{ingest}/webhooks/fedex", content=body, headers={
        "fdx-signature": auth.fedex_signature(body, FEDEX_SECRET)})
    assert response.status_code == 400
    assert response.json() == {"error": "BAD_REQUEST", "message": "fedex: malformed - missing "
                               "trackResults"}
    assert httpx.post(f"{ingest}/webhooks/acme", content=b"{}").json()["error"] == "NOT_FOUND"
    assert httpx.post(f"{ingest}/webhooks/dhl", content=b"{}").status_code == 401
    assert store_call(db, "history", "ord_fx") == []


def test_ups_callback_lost_while_down_is_caught_by_polling_which_adapts_to_push(
        sandbox, redis_url, procs, tmp_path):  # noqa: F811
    db = f"sqlite:///{tmp_path}/track.db"
    numbers = ["1ZPUSH0001", "1ZPUSH0002", "1ZPUSH0003"]
    add_orders(db, [order(f"ord_{i}", "ups", n) for i, n in enumerate(numbers)])
    for number in numbers:
        shipment(sandbox, "ups", number, reached=1)
    httpx.post(f"{sandbox}/_admin/webhooks", json={"auto": False}).raise_for_status()
    port = free_port()
    ingest = start_ingest(procs, tmp_path, redis_url, db, port)
    ingest_proc = procs.procs[-1]
    # the gateway subscribes the orders to UPS Track Alert, with our credential
    metrics_port = free_port()
    env = gateway_env(sandbox, redis_url, db, UPS_QUOTA_PER_HOUR="3600",
                      PUSH_SAFETY_NET_SECONDS="4", GATEWAY_METRICS_PORT=str(metrics_port),
                      UPS_WEBHOOK_URL=f"{ingest}/webhooks/ups",
                      UPS_WEBHOOK_CREDENTIAL=UPS_CREDENTIAL)
    for key in ("DHL_API_URL", "FEDEX_API_URL"):
        env.pop(key)
    poller = procs.start("poll", env=env, log=tmp_path / "poll.log")
    gauge = 'ordertrack_gateway_effective_poll_period_seconds{carrier="ups"}'
    wait_for(lambda: metric(f"http://127.0.0.1:{metrics_port}", gauge) == 3.0, 15,
             what="3 UPS orders at 1 request/s: each polled every 3 s")
    wait_for(lambda: len(httpx.get(f"{sandbox}/_admin/webhooks").json()["subscriptions"]) == 3,
             15, what="UPS Track Alert subscriptions")

    # two orders get pushes: they drop to the safety net, the third is polled more often
    httpx.post(f"{sandbox}/_admin/advance", json={"tracking_number": numbers[0], "steps": 1})
    httpx.post(f"{sandbox}/_admin/advance", json={"tracking_number": numbers[1], "steps": 1})
    for number in numbers[:2]:
        assert [d["status"] for d in push_now(sandbox, "ups", number, events="latest")] == [200]
    wait_for(lambda: metric(f"http://127.0.0.1:{metrics_port}", gauge) < 3.0, 15,
             what="the effective period of orders without push shortens")
    wait_for(lambda: metric(f"http://127.0.0.1:{metrics_port}",
                            'ordertrack_gateway_pushed_orders{carrier="ups"}') == 2, 15,
             what="both pushed orders counted")
    assert store_call(db, "history", "ord_0")[-1].status == "in_transit"
    # while the order without push is polled twice more, a pushed one is polled at most once
    # (counted in polls, not seconds: a loaded machine stretches the seconds)
    before = polls_of(sandbox, numbers[0]), polls_of(sandbox, numbers[2])
    wait_for(lambda: polls_of(sandbox, numbers[2]) - before[1] >= 2, 15,
             what="the order without push polled twice more")
    after = polls_of(sandbox, numbers[0]), polls_of(sandbox, numbers[2])
    assert after[0] - before[0] <= 1 < after[1] - before[1], (before, after)

    # our endpoint goes down; UPS's callback for the next scan is lost (UPS does not retry)
    procs.stop(ingest_proc, signal.SIGTERM)
    httpx.post(f"{sandbox}/_admin/advance", json={"tracking_number": numbers[0], "steps": 1})
    (lost,) = push_now(sandbox, "ups", numbers[0], events="latest")
    assert lost["lost"] and lost["attempts"] == 1
    # the push channel is quiet for the order: after the safety net, polling picks it up
    wait_for(lambda: store_call(db, "history", "ord_0")[-1].status == "out_for_delivery", 20,
             what="the lost scan, polled")
    assert procs.stop(poller, signal.SIGTERM) == 0


def test_a_retry_publishes_scans_stored_while_redis_was_down_before_the_first_publish(
        sandbox, own_redis, procs, tmp_path):  # noqa: F811
    """Redis is down for an order's very first scan: the delivery is stored, answered 503;
    once Redis is back the carrier's retry of the same delivery publishes it (state, stream,
    channel), without waiting for the order's next scan."""
    db = f"sqlite:///{tmp_path}/track.db"
    add_orders(db, [order("ord_fx", "fedex", "FXPUSH7")])
    ingest = start_ingest(procs, tmp_path, own_redis.url, db)
    shipment(sandbox, "fedex", "FXPUSH7", reached=1)
    fedex_webhook(sandbox, ingest)

    own_redis.stop()
    (failed,) = push_now(sandbox, "fedex", "FXPUSH7", events="latest")
    assert failed["status"] == 503 and failed["lost"]
    assert [(e.seq, e.status) for e in store_call(db, "history", "ord_fx")] == [(1, "label_created")]

    own_redis.start()  # empty: it keeps nothing across a restart
    r = redis.Redis.from_url(own_redis.url)
    channel = r.pubsub()
    channel.subscribe(redis_layout.channel("ord_fx"))
    assert channel.get_message(timeout=5)["type"] == "subscribe"
    (retried,) = push_now(sandbox, "fedex", "FXPUSH7", events="latest")
    assert retried["status"] == 200
    message = channel.get_message(timeout=5)
    assert message is not None and message["type"] == "message"
    assert (orjson.loads(message["data"])["seq"], orjson.loads(message["data"])["status"]) == (
        1, "label_created")
    state = r.hgetall(redis_layout.state("ord_fx"))
    assert (state[b"seq"], state[b"status"]) == (b"1", b"label_created")
    assert [entry_id for entry_id, _ in r.xrange(redis_layout.stream("ord_fx"))] == [b"1-0"]
    channel.close()
    r.close()


# --- push subscriptions (gateway/subscriptions.py) against the sandbox ---------------------------

DAY = 86400.0


def subscriptions_of(base: str, carrier: str) -> dict[str, dict]:
    listed = httpx.get(f"{base}/_admin/webhooks").json()["subscriptions"]
    return {s["tracking_number"]: s for s in listed if s["carrier"] == carrier}


async def subscription_round(carrier: str, base: str, redis_url: str, db: str, url: str,
                             credential: str, header: str, at: float) -> tuple[int, dict]:
    """One Subscriber round with the clock at `at`: (subscribed, Redis number -> end)."""
    import redis.asyncio as aioredis

    from ordertrack.gateway.subscriptions import Subscriber
    from ordertrack.store import open_store
    from tests.test_carrier_clients import make_dhl, make_ups

    client = make_ups(base) if carrier == "ups" else make_dhl(base)
    r = aioredis.Redis.from_url(redis_url)
    try:
        async with open_store(db) as store:
            done = await Subscriber(r, store, carrier, client, url, credential, header,
                                    clock=lambda: at).round()
        ends = {m.decode(): s for m, s in await r.zrange(redis_layout.subscribed(carrier), 0, -1,
                                                          withscores=True)}
    finally:
        await r.aclose()
        await client.aclose()
    return done, ends


def test_ups_track_alert_subscriptions_are_renewed_two_days_before_their_14_days_end(
        sandbox, redis_url, tmp_path):  # noqa: F811
    db = f"sqlite:///{tmp_path}/track.db"
    numbers = ["1ZSUB0001", "1ZSUB0002"]
    add_orders(db, [order("ord_a", "ups", numbers[0]), order("ord_b", "ups", numbers[1]),
                    dataclasses.replace(order("ord_done", "ups", "1ZSUB0003"),
                                        status="delivered")])
    url = "http://127.0.0.1:8600/webhooks/ups"

    def at(when: float) -> tuple[int, dict]:
        return asyncio.run(subscription_round("ups", sandbox, redis_url, db, url,
                                              UPS_CREDENTIAL, "", when))

    t0 = time.time()
    done, ends = at(t0)
    assert done == 2 and ends == dict.fromkeys(numbers, t0 + 14 * DAY)
    subs = subscriptions_of(sandbox, "ups")
    assert sorted(subs) == numbers  # the delivered order is not subscribed
    assert {(s["url"], s["header"], s["value"], s["calls"]) for s in subs.values()} == {
        (url, "Authorization", f"Bearer {UPS_CREDENTIAL}", 1)}

    # 11 days on (3 days left): nothing is due, no call to UPS
    assert at(t0 + 11 * DAY) == (0, ends)
    # just over 2 days left: still not due
    assert at(t0 + 12 * DAY - 60)[0] == 0
    assert {s["calls"] for s in subscriptions_of(sandbox, "ups").values()} == {1}
    # under 2 days left: both renewed, for 14 days from then
    renewed_at = t0 + 12 * DAY + 60
    done, ends = at(renewed_at)
    assert done == 2 and ends == dict.fromkeys(numbers, renewed_at + 14 * DAY)
    assert {s["calls"] for s in subscriptions_of(sandbox, "ups").values()} == {2}

    # an order delivered meanwhile is dropped from the subscription set, never renewed
    store_call(db, "append_events", "ord_b",
               [TrackingEvent("delivered", "Brooklyn", "2025-10-02T10:00:00Z")])
    done, ends = at(renewed_at + 13 * DAY)
    assert done == 1 and ends == {numbers[0]: renewed_at + 27 * DAY}
    assert subscriptions_of(sandbox, "ups")[numbers[1]]["calls"] == 2


def test_dhl_push_subscriptions_are_made_once_and_deliver_to_ingest(
        sandbox, redis_url, procs, tmp_path):  # noqa: F811
    db = f"sqlite:///{tmp_path}/track.db"
    add_orders(db, [order("ord_dhl", "dhl", "JDSUB0001")])
    ingest = start_ingest(procs, tmp_path, redis_url, db)
    shipment(sandbox, "dhl", "JDSUB0001", reached=2)
    httpx.post(f"{sandbox}/_admin/webhooks", json={"auto": False}).raise_for_status()
    url = f"{ingest}/webhooks/dhl"

    def at(when: float) -> tuple[int, dict]:
        return asyncio.run(subscription_round("dhl", sandbox, redis_url, db, url, DHL_SECRET,
                                              "X-Webhook-Token", when))

    t0 = time.time()
    assert at(t0) == (1, {"JDSUB0001": float("inf")})
    (sub,) = subscriptions_of(sandbox, "dhl").values()
    assert (sub["url"], sub["header"], sub["value"], sub["expires_at"]) == (
        url, "X-Webhook-Token", DHL_SECRET, None)
    # a DHL subscription lasts as long as the shipment: a month on, nothing to renew
    assert at(t0 + 30 * DAY) == (0, {"JDSUB0001": float("inf")})
    assert subscriptions_of(sandbox, "dhl")["JDSUB0001"]["calls"] == 1

    # the sandbox delivers the shipment's scans with our static header: stored
    deliveries = push_now(sandbox, "dhl", "JDSUB0001", events="all")
    assert [d["status"] for d in deliveries] == [200, 200]
    assert [e.status for e in store_call(db, "history", "ord_dhl")] == ["label_created", "in_transit"]
