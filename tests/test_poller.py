"""`ordertrack poll` end to end: the real process against the carrier sandbox, a SQLite store
and a private Redis; PagerDuty is a small real HTTP server of the test."""

from __future__ import annotations

import asyncio
import http.server
import json
import signal
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
import orjson
import pytest
import redis

from ordertrack import redis_layout
from ordertrack.config import ConfigError
from ordertrack.gateway.main import carriers_to_poll
from ordertrack.gateway.pagerduty import event_body
from ordertrack.gateway.poller import with_estimate
from ordertrack.gateway.settings import SETTINGS
from ordertrack.models import CarrierResult, Order, TrackingEvent
from ordertrack.store import open_store
from tests.support import free_port, wait_for

FIXTURES = Path(__file__).parent / "fixtures" / "carriers"
NUMBERS = {"dhl": "JD014600006281230704", "fedex": "794843185271", "ups": "1Z12345E0205271688"}


# --- pure parts -----------------------------------------------------------------------------


def test_pagerduty_bodies_follow_events_api_v2():
    body = event_body("rk", "trigger", "ord_1", "dhl failing", "gw/a", {"consecutive_failures": 11})
    assert body == {
        "routing_key": "rk", "event_action": "trigger", "dedup_key": "ordertrack-order-ord_1",
        "payload": {"summary": "dhl failing", "source": "gw/a", "severity": "error",
                    "custom_details": {"consecutive_failures": 11}},
    }
    resolve = event_body("rk", "resolve", "ord_1", "ok", "gw/a", {})
    assert resolve == {"routing_key": "rk", "event_action": "resolve",
                       "dedup_key": "ordertrack-order-ord_1"}


def test_newest_event_carries_the_shipment_estimate():
    events = (TrackingEvent("shipped", "A", "2025-10-03T10:00:00Z"),
              TrackingEvent("in_transit", "B", "2025-10-03T12:00:00Z"))
    result = CarrierResult("N1", True, events, estimated_delivery="2025-10-04")
    out = with_estimate(result)
    assert out[0].estimated_delivery is None and out[1].estimated_delivery == "2025-10-04"


def test_carrier_without_url_is_skipped_and_missing_credentials_refused():
    from ordertrack.config import load

    env = {"UPS_API_URL": "http://x", "UPS_CLIENT_ID": "i", "UPS_CLIENT_SECRET": "s"}
    assert [c.carrier for c in carriers_to_poll(load(SETTINGS, environ=env))] == ["ups"]
    with pytest.raises(ConfigError, match="FEDEX_CLIENT_SECRET"):
        carriers_to_poll(load(SETTINGS, environ={**env, "FEDEX_API_URL": "http://x",
                                                  "FEDEX_CLIENT_ID": "i"}))
    with pytest.raises(ConfigError, match="no carrier"):
        carriers_to_poll(load(SETTINGS, environ={}))


# --- the real process -----------------------------------------------------------------------


def test_unreachable_store_stops_the_gateway_with_one_line(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "DATABASE_URL": f"postgresql://nobody@127.0.0.1:{free_port()}/x",
           "DHL_API_URL": "http://127.0.0.1:9", "DHL_API_KEY": "k", "GATEWAY_METRICS_PORT": "0",
           "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    done = subprocess.run([sys.executable, "-m", "ordertrack", "poll"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    lines = [line for line in done.stderr.strip().splitlines() if " WARNING " not in line]
    assert len(lines) == 1 and lines[0].startswith("ordertrack poll: cannot connect"), lines



@pytest.fixture
def sandbox(sandbox_url):
    httpx.post(f"{sandbox_url}/_admin/reset").raise_for_status()
    return sandbox_url


def add_orders(db_url: str, orders: list[Order]) -> None:
    async def go():
        async with open_store(db_url) as store:
            for order in orders:
                await store.add_order(order)

    asyncio.run(go())


def store_call(db_url: str, method: str, *args):
    async def go():
        async with open_store(db_url) as store:
            return await getattr(store, method)(*args)

    return asyncio.run(go())


def gateway_env(sandbox: str, redis_url: str, db_url: str, **extra: str) -> dict[str, str]:
    env = {
        "REDIS_URL": redis_url, "DATABASE_URL": db_url,
        "DHL_API_URL": sandbox, "DHL_API_KEY": "sandbox-dhl-key",
        "FEDEX_API_URL": sandbox, "FEDEX_CLIENT_ID": "sandbox-fedex-id",
        "FEDEX_CLIENT_SECRET": "sandbox-fedex-secret",
        "UPS_API_URL": sandbox, "UPS_CLIENT_ID": "sandbox-ups-id",
        "UPS_CLIENT_SECRET": "sandbox-ups-secret",
        "DHL_POLL_INTERVAL_SECONDS": "0.3", "FEDEX_POLL_INTERVAL_SECONDS": "0.3",
        "UPS_POLL_INTERVAL_SECONDS": "0.3", "ORDERS_REFRESH_SECONDS": "0.2",
        "DHL_QUOTA_PER_HOUR": "360000", "DHL_BURST_PER_MINUTE": "6000",
        "FEDEX_QUOTA_PER_HOUR": "360000", "UPS_QUOTA_PER_HOUR": "360000",
        "CARRIER_RETRY_BASE_SECONDS": "0.01", "GATEWAY_METRICS_PORT": "0",
    }
    env.update(extra)
    return env


def order(order_id: str, carrier: str, number: str | None = None) -> Order:
    return Order(order_id=order_id, user_id="user_1", carrier=carrier,
                 tracking_number=number or NUMBERS[carrier], status="shipped")


def polls_of(sandbox: str, number: str) -> int:
    stats = httpx.get(f"{sandbox}/_admin/stats").json()
    return sum(c["tracking_numbers"].get(number, 0) for c in stats.values() if isinstance(c, dict))


class Subscriber:
    def __init__(self, redis_url: str):
        self.client = redis.Redis.from_url(redis_url)
        self.pubsub = self.client.pubsub()
        self.pubsub.psubscribe(redis_layout.CHANNEL_PATTERN)
        self.pubsub.get_message(timeout=1.0)  # the psubscribe confirmation

    def next(self, timeout: float = 10.0) -> tuple[str, dict] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if msg and msg["type"] == "pmessage":
                return msg["channel"].decode(), orjson.loads(msg["data"])
        return None

    def close(self):
        self.pubsub.close()
        self.client.close()


def test_new_events_are_stored_and_published_with_matching_seq(sandbox, redis_url, procs,
                                                               tmp_path):
    db = f"sqlite:///{tmp_path}/track.db"
    add_orders(db, [order("ord_dhl", "dhl"), order("ord_fx", "fedex"), order("ord_ups", "ups")])
    sub = Subscriber(redis_url)
    metrics_port = free_port()
    proc = procs.start("poll", env=gateway_env(sandbox, redis_url, db,
                                               GATEWAY_METRICS_PORT=str(metrics_port)),
                       log=tmp_path / "poll.log")
    try:
        got: dict[str, list[dict]] = defaultdict(list)
        while len(got) < 3:  # each order's first event (label created), seq 1
            item = sub.next()
            assert item is not None, (tmp_path / "poll.log").read_text()[-3000:]
            got[item[0]].append(item[1])
        first = got[redis_layout.channel("ord_dhl")][-1]
        assert first["carrier"] == "dhl" and first["status"] == "label_created"
        assert isinstance(first["published_at"], float) and first["raw_carrier_response"]

        httpx.post(f"{sandbox}/_admin/advance",
                   json={"tracking_number": NUMBERS["dhl"], "steps": 1}).raise_for_status()
        item = sub.next()
        while item is not None and item[0] != redis_layout.channel("ord_dhl"):
            item = sub.next()
        assert item is not None
        assert item[1]["seq"] == first["seq"] + 1

        # the unchanged answers that follow publish nothing
        seen = polls_of(sandbox, NUMBERS["dhl"])
        wait_for(lambda: polls_of(sandbox, NUMBERS["dhl"]) >= seen + 3, 10, what="more polls")
        assert sub.next(timeout=0.3) is None

        history = store_call(db, "history", "ord_dhl")
        seqs = [event.seq for event in history]
        assert seqs == list(range(1, item[1]["seq"] + 1))
        assert history[-1].status == item[1]["status"]
        r = redis.Redis.from_url(redis_url)
        entries = r.xrange(redis_layout.stream("ord_dhl"))
        assert [e[0].decode() for e in entries] == [f"{s}-0" for s in seqs]
        assert [orjson.loads(e[1][b"msg"])["seq"] for e in entries] == seqs
        assert r.hget(redis_layout.state("ord_dhl"), "seq") == str(seqs[-1]).encode()
        r.close()

        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        assert 'ordertrack_gateway_polls_total{carrier="dhl",outcome="updated"}' in text
        assert 'ordertrack_gateway_effective_poll_period_seconds{carrier="fedex"} 0.3' in text
    finally:
        sub.close()
    assert procs.stop(proc, signal.SIGTERM) == 0


class PagerDutySink:
    """A real HTTP server standing in for the Events API; records the bodies it gets."""

    def __init__(self):
        self.events: list[dict] = []
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                sink.events.append(json.loads(body))
                reply = b'{"status":"success","message":"Event processed"}'
                self.send_response(202)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v2/enqueue"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_eleven_failures_page_once_and_recovery_resolves(sandbox, redis_url, procs, tmp_path):
    db = f"sqlite:///{tmp_path}/track.db"
    add_orders(db, [order("ord_bad", "dhl"), order("ord_ups", "ups")])
    # 11 failed polls: each is one request + 3 retries of a 503
    httpx.post(f"{sandbox}/_admin/faults", json={
        "carrier": "dhl", "kind": "503", "count": 44, "tracking_number": NUMBERS["dhl"],
    }).raise_for_status()
    # UPS' daily quota is spent: a pause, nobody's failure
    httpx.post(f"{sandbox}/_admin/faults",
               json={"carrier": "ups", "kind": "daily_quota"}).raise_for_status()
    sink = PagerDutySink()
    env = gateway_env(sandbox, redis_url, db, PAGERDUTY_ROUTING_KEY="test-routing-key",
                      PAGERDUTY_EVENTS_URL=sink.url, REPLICA_NAME="gw-test")
    proc = procs.start("poll", env=env, log=tmp_path / "poll.log")
    try:
        wait_for(lambda: sink.events, 20, what="PagerDuty trigger")
        trigger = sink.events[0]
        assert trigger["event_action"] == "trigger"
        assert trigger["routing_key"] == "test-routing-key"
        assert trigger["dedup_key"] == "ordertrack-order-ord_bad"
        assert trigger["payload"]["severity"] == "error"
        assert trigger["payload"]["custom_details"]["consecutive_failures"] == 11
        wait_for(lambda: len(sink.events) >= 2, 20, what="PagerDuty resolve")
        resolve = sink.events[1]
        assert resolve["event_action"] == "resolve"
        assert resolve["dedup_key"] == "ordertrack-order-ord_bad"
        flagged = store_call(db, "get_order", "ord_bad")
        wait_for(lambda: not store_call(db, "get_order", "ord_bad").needs_investigation, 5,
                 what="flag cleared")
        assert flagged.consecutive_failures == 0
        assert len(sink.events) == 2  # one trigger, one resolve

        r = redis.Redis.from_url(redis_url)
        assert r.exists(redis_layout.quota_paused("ups"))
        r.close()
        ups = store_call(db, "get_order", "ord_ups")
        assert ups.consecutive_failures == 0 and not ups.needs_investigation
        assert polls_of(sandbox, NUMBERS["ups"]) == 1  # paused after the first 429
    finally:
        sink.close()
    assert procs.stop(proc, signal.SIGTERM) == 0


def test_two_replicas_never_poll_the_same_order_at_once(sandbox, redis_url, procs, tmp_path):
    db = f"sqlite:///{tmp_path}/track.db"
    numbers = [f"JD0146000062812{i:05d}" for i in range(12)]
    add_orders(db, [order(f"ord_{i}", "dhl", n) for i, n in enumerate(numbers)])
    interval = 1.0
    ports = [free_port(), free_port()]
    started = []
    for name, port in zip(("gw-a", "gw-b"), ports, strict=True):
        env = gateway_env(sandbox, redis_url, db, REPLICA_NAME=name,
                          DHL_POLL_INTERVAL_SECONDS=str(interval),
                          GATEWAY_METRICS_PORT=str(port))
        for var in ("FEDEX_API_URL", "UPS_API_URL"):
            env[var] = ""
        started.append(procs.start("poll", env=env, log=tmp_path / f"{name}.log"))

    def poll_times() -> dict[str, list[float]]:
        times: dict[str, list[float]] = defaultdict(list)
        for entry in httpx.get(f"{sandbox}/_admin/stats").json()["recent"]:
            for number in entry["numbers"]:
                times[number].append(entry["time"])
        return times

    def polls_of(port: int) -> float:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        line = next((line for line in text.splitlines()
                     if line.startswith('ordertrack_gateway_polls_total{carrier="dhl"')), None)
        return float(line.rsplit(" ", 1)[1]) if line else 0.0

    # wait (bounded) until every order was polled twice and both replicas took part: a fixed
    # sleep made this test fail on a loaded machine, where the replicas start slowly
    deadline = time.monotonic() + 30.0
    while True:
        times = poll_times()
        done = (set(times) == set(numbers) and all(len(t) >= 2 for t in times.values())
                and all(polls_of(port) > 0 for port in ports))
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert set(times) == set(numbers)
    for number, polled in times.items():
        polled.sort()
        gaps = [b - a for a, b in zip(polled, polled[1:], strict=False)]
        assert len(polled) >= 2 and min(gaps) > interval / 2, (number, gaps)
    for port in ports:  # both replicas did part of the work
        assert polls_of(port) > 0
    for proc in started:
        assert procs.stop(proc, signal.SIGTERM) == 0


def test_redis_gone_for_a_while_loses_no_event(sandbox, own_redis, procs, tmp_path):
    """Redis stops while a shipment moves on; once it is back, the event is published."""
    db = f"sqlite:///{tmp_path}/track.db"
    add_orders(db, [order("ord_outage", "dhl", "JD0146000OUTAGE1")])
    proc = procs.start("poll", env=gateway_env(sandbox, own_redis.url, db),
                       log=tmp_path / "poll.log")
    sub = Subscriber(own_redis.url)
    first = sub.next()
    assert first is not None and first[1]["seq"] == 1
    sub.close()

    own_redis.stop()
    httpx.post(f"{sandbox}/_admin/advance",
               json={"tracking_number": "JD0146000OUTAGE1", "steps": 1}).raise_for_status()
    time.sleep(1.5)  # several poll cycles fail against the missing Redis
    assert proc.poll() is None, "the gateway must survive a Redis outage"
    own_redis.start()  # back, and empty

    r = redis.Redis.from_url(own_redis.url)
    wait_for(lambda: r.hget(redis_layout.state("ord_outage"), "seq") is not None, 20,
             what="the missed event published after Redis came back")
    history = store_call(db, "history", "ord_outage")
    assert [e.seq for e in history] == [1, 2]
    assert r.hget(redis_layout.state("ord_outage"), "seq") == b"2"
    r.close()
    assert procs.stop(proc, signal.SIGTERM) == 0


# --- in process: the Poller against a scripted carrier answer ---------------------------------


class InProcessGateway:
    """The real Poller, store, quota and publisher; the carrier is an httpx transport."""

    def __init__(self, redis_url: str, db_path: str, answer, publish_redis_url: str | None = None):
        import redis.asyncio as aioredis

        from ordertrack.gateway.carriers.dhl import DhlClient
        from ordertrack.gateway.metrics import Metrics
        from ordertrack.gateway.pagerduty import PagerDuty
        from ordertrack.gateway.poller import Poller
        from ordertrack.gateway.publisher import Publisher
        from ordertrack.gateway.quota import Quota, carrier_limits
        from ordertrack.gateway.retry import RetryPolicy
        from ordertrack.gateway.scheduler import Scheduler

        self.requests: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            self.requests.append(request)
            return answer(request)

        self.db_path = db_path
        self.redis = aioredis.Redis.from_url(redis_url)
        self.quota = Quota(self.redis, carrier_limits(), "r1")
        self.http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        self.client = DhlClient("http://dhl.test", api_key="k", http=self.http,
                                policy=RetryPolicy(base_delay=0.01, max_retry_after=0.2))
        self.metrics = Metrics()
        self.publish_redis = aioredis.Redis.from_url(publish_redis_url or redis_url,
                                                     socket_connect_timeout=0.5)
        self.publisher = Publisher(self.publish_redis)
        self.scheduler = Scheduler(self.redis, "r1")
        self.pager = PagerDuty(None)
        self._poller_cls = Poller

    async def __aenter__(self):
        self.store = await open_store(self.db_path)
        self.poller = self._poller_cls(self.store, self.publisher, self.quota, self.scheduler,
                                       self.pager, self.metrics, replica="r1")
        return self

    async def __aexit__(self, *exc):
        await self.pager.aclose()
        await self.http.aclose()
        await self.store.close()
        await self.redis.aclose()
        await self.publish_redis.aclose()


async def test_long_retry_after_holds_the_carrier_and_is_no_order_failure(redis_url, tmp_path):
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "120"},
                              json={"status": 429, "title": "Too Many Requests",
                                    "detail": "rate limit exceeded"})

    async with InProcessGateway(redis_url, str(tmp_path / "t.db"), answer) as gw:
        await gw.store.add_order(order("ord_ra", "dhl"))
        await gw.poller.poll_batch("dhl", gw.client, [await gw.store.get_order("ord_ra")])
        assert len(gw.requests) == 1          # not retried before the carrier's 120 s
        state = await gw.quota.state("dhl")
        assert state.paused_until is not None and state.paused_until - time.time() > 100
        assert (await gw.store.get_order("ord_ra")).consecutive_failures == 0


async def test_delivered_event_stored_while_redis_fails_is_published_once_it_is_back(
        redis_url, own_redis, tmp_path):
    """The answer that delivers an order arrives while publishing fails: the order leaves the
    active set, so no later poll would publish it; the carrier loop still does."""
    from ordertrack.gateway.poller import CarrierLoop

    body = (FIXTURES / "dhl_delivered_after_failure.json").read_bytes()

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"Content-Type": "application/json"})

    async with InProcessGateway(redis_url, str(tmp_path / "t.db"), answer,
                                publish_redis_url=own_redis.url) as gw:
        await gw.store.add_order(order("ord_dl", "dhl"))
        own_redis.stop()
        await gw.poller.poll_batch("dhl", gw.client, [await gw.store.get_order("ord_dl")])
        stored = await gw.store.history("ord_dl")
        assert stored[-1].status == "delivered"
        assert (await gw.store.get_order("ord_dl")).status == "delivered"
        own_redis.start()

        loop = CarrierLoop(gw.poller, "dhl", gw.client, interval=0.05, requests_per_hour=2000,
                           refresh_seconds=0.05)
        stopping = asyncio.Event()
        running = asyncio.create_task(loop.run(stopping))
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                seq = await gw.publish_redis.hget(redis_layout.state("ord_dl"), "seq")
                if seq is not None and int(seq) == stored[-1].seq:
                    break
                await asyncio.sleep(0.05)
        finally:
            stopping.set()
            await running
        assert int(await gw.publish_redis.hget(redis_layout.state("ord_dl"), "seq")) == stored[-1].seq
        assert (await gw.publish_redis.hget(redis_layout.state("ord_dl"), "status")) == b"delivered"
        assert await gw.publish_redis.xlen(redis_layout.stream("ord_dl")) == len(stored)


def dhl_answer_with(events: int) -> bytes:
    """A DHL answer whose shipment has reached its first `events` scans (newest first)."""
    scans = [{"timestamp": f"2025-10-0{i + 1}T10:00:00Z", "statusCode": "transit",
              "status": "In transit", "description": f"Processed at hub {i}",
              "location": {"address": {"addressLocality": f"Hub {i}", "countryCode": "DE"}}}
             for i in range(events)][::-1]
    return orjson.dumps({"shipments": [{"id": NUMBERS["dhl"], "service": "parcel-de",
                                        "status": scans[0], "events": scans}]})


async def test_event_another_replica_failed_to_publish_is_published_before_newer_ones(
        redis_url, tmp_path):
    """Replica 1 stores seq 2 but cannot reach Redis; replica 2 then finds seq 3: the stream
    must not skip seq 2, or a resuming client would silently miss it."""
    reached = {"events": 1}

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=dhl_answer_with(reached["events"]))

    db = str(tmp_path / "t.db")
    dead = f"redis://127.0.0.1:{free_port()}/0"
    async with InProcessGateway(redis_url, db, answer, publish_redis_url=dead) as gw1, \
            InProcessGateway(redis_url, db, answer) as gw2:
        await gw1.store.add_order(order("ord_gap", "dhl"))
        polled = await gw1.store.get_order("ord_gap")
        await gw2.poller.poll_batch("dhl", gw2.client, [polled])
        reached["events"] = 2
        await gw1.poller.poll_batch("dhl", gw1.client, [polled])   # stored, not published
        reached["events"] = 3
        await gw2.poller.poll_batch("dhl", gw2.client, [polled])
        assert [e.seq for e in await gw2.store.history("ord_gap")] == [1, 2, 3]
        entries = await gw2.redis.xrange(redis_layout.stream("ord_gap"))
        assert [orjson.loads(fields[b"msg"])["seq"] for _, fields in entries] == [1, 2, 3]
        assert await gw2.redis.hget(redis_layout.state("ord_gap"), "seq") == b"3"


async def test_a_scan_the_carrier_repeats_with_other_detail_is_stored_and_published_once(
        redis_url, tmp_path):
    """DHL's shipment `status` repeats its newest event with the country added; the next poll
    has the detail the other way round: each scan is stored once and published once."""
    first = orjson.loads((FIXTURES / "dhl_status_repeats_newest_event.json").read_bytes())
    shipment = first["shipments"][0]
    swapped = orjson.loads(orjson.dumps(first))
    swapped["shipments"][0]["status"]["location"]["address"] = {"addressLocality": "Brooklyn"}
    swapped["shipments"][0]["events"][0]["location"] = shipment["status"]["location"]
    newer = orjson.loads(orjson.dumps(swapped))
    scan = {**shipment["events"][0], "timestamp": "2025-10-04T08:00:00Z",
            "status": "With delivery courier", "description": "Shipment is out for delivery"}
    newer["shipments"][0]["status"] = {**scan, "location": shipment["status"]["location"]}
    newer["shipments"][0]["events"].insert(0, scan)
    answers = [first, swapped, swapped, newer, newer]
    polls = iter(answers)

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=orjson.dumps(next(polls)))

    sub = Subscriber(redis_url)
    try:
        async with InProcessGateway(redis_url, str(tmp_path / "t.db"), answer) as gw:
            await gw.store.add_order(order("ord_dup", "dhl"))
            for _ in answers:
                await gw.poller.poll_batch("dhl", gw.client, [await gw.store.get_order("ord_dup")])
            history = await gw.store.history("ord_dup")
            assert [(e.seq, e.status, e.location) for e in history] == [
                (1, "label_created", None),
                (2, "in_transit", "Cincinnati Hub, OH"),
                (3, "in_transit", "Brooklyn, NY, US"),
                (4, "out_for_delivery", "Brooklyn, NY, US"),
            ]
            entries = await gw.redis.xrange(redis_layout.stream("ord_dup"))
            assert [orjson.loads(fields[b"msg"])["seq"] for _, fields in entries] == [1, 2, 3, 4]
        published = []
        while (item := sub.next(timeout=0.5)) is not None:
            if item[0] == redis_layout.channel("ord_dup"):
                published.append((item[1]["seq"], item[1]["status"], item[1]["location"]))
        assert published == [(e.seq, e.status, e.location) for e in history]
    finally:
        sub.close()
