"""The tracking page in headless Chromium against the real API, a real push pod and Redis.

A customer's view: the page shows the order, a published update appears at once, killing the
pod flips the page to polling and updates still arrive through REST, and a restarted pod
brings it back to live, with every event shown exactly once.
"""

from __future__ import annotations

import asyncio
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis.asyncio as aioredis

from ordertrack.gateway.publisher import publish_event
from ordertrack.models import Order, TrackingEvent
from ordertrack.store import open_store
from tests.support import REPO, free_port, wait_http_ok

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ORDER_ID = "ord_1a2b3c4d5e6f"
FLAG_KEY = "ws:flag:realtime_order_tracking"
ARTIFACTS = REPO / "artifacts"


def run_async(factory):
    """Run a coroutine to completion on a thread of its own (Playwright's sync API keeps an
    event loop running on the test's thread)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


class Gateway:
    """Does what the logistics gateway does with a new scan: store it, then publish it."""

    def __init__(self, db_url: str, redis_url: str):
        self.db_url = db_url
        self.redis_url = redis_url

    def register(self, order: Order) -> None:
        async def run() -> None:
            store = await open_store(self.db_url)
            try:
                await store.add_order(order)
            finally:
                await store.close()

        run_async(run)

    def scan(self, status: str, location: str, timestamp: str, eta: str | None = None) -> int:
        async def run() -> int:
            store = await open_store(self.db_url)
            client = aioredis.Redis.from_url(self.redis_url)
            try:
                (stored,) = await store.append_events(
                    ORDER_ID, [TrackingEvent(status, location, timestamp, eta)])
                await publish_event(client, ORDER_ID, "dhl", stored.seq, status, location,
                                    timestamp, eta)
                return stored.seq
            finally:
                await client.aclose()
                await store.close()

        return run_async(run)


@pytest.fixture
def system(tmp_path, redis_url, keys, procs):
    """Redis + store + `ordertrack api` + `ordertrack serve`; `system.start_pod()` restarts."""
    db_url = f"sqlite:///{tmp_path / 'tracking.db'}"
    gateway = Gateway(db_url, redis_url)
    gateway.register(Order(ORDER_ID, "user_1", "dhl", "DHL1234567890"))
    gateway.scan("shipped", "Warehouse, Chicago IL", "2025-10-01T10:00:00Z", "2025-10-04T18:00:00Z")
    gateway.scan("in_transit", "Sort Facility, Columbus OH", "2025-10-02T06:00:00Z")

    api_port, pod_port = free_port(), free_port()
    procs.start("api", env={
        "API_HOST": "127.0.0.1", "API_PORT": str(api_port), "DATABASE_URL": db_url,
        "REDIS_URL": redis_url, "JWT_PUBLIC_KEY": str(keys.public_path),
        "REALTIME_WS_URL": f"ws://127.0.0.1:{pod_port}", "REST_CACHE_TTL_SECONDS": "30",
    }, log=tmp_path / "api.log")
    pod_env = {
        "HOST": "127.0.0.1", "PORT": str(pod_port), "METRICS_PORT": "0",
        "REDIS_URL": redis_url, "JWT_PUBLIC_KEY": str(keys.public_path),
        "DRAIN_SECONDS": "0.2",
    }

    class System:
        api = f"http://127.0.0.1:{api_port}"
        pod = None

        def start_pod(self, **extra_env: str):
            self.pod = procs.start("serve", env={**pod_env, **extra_env},
                                   log=tmp_path / f"pod-{time.time()}.log")
            wait_http_ok(f"http://127.0.0.1:{pod_port}/readyz")

        def kill_pod(self):
            procs.stop(self.pod, signal.SIGKILL)

    System.pod_url = f"ws://127.0.0.1:{pod_port}"
    system = System()
    system.gateway = gateway
    system.start_pod()
    wait_http_ok(system.api + "/healthz")
    return system


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser):
    return browser.new_context(viewport={"width": 800, "height": 900}).new_page()


def watch_sockets(page) -> list[str]:
    """The URLs of the WebSockets the page opens, in order (grows as the page runs)."""
    urls: list[str] = []
    page.on("websocket", lambda ws: urls.append(ws.url))
    return urls


def timeline_seqs(page) -> list[int]:
    return [int(seq) for seq in
            page.locator("#timeline li").evaluate_all("items => items.map(li => li.dataset.seq)")]


def fallback_polls(api: str) -> float:
    for line in httpx.get(f"{api}/metrics").text.splitlines():
        if line.startswith('ordertrack_api_fallback_requests_total{reason="websocket_disconnected"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_live_updates_fall_back_to_rest_and_come_back_without_loss(system, page, keys):
    from playwright.sync_api import expect

    token = keys.token("user_1", ORDER_ID)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{system.api}/orders/{ORDER_ID}#token={token}&poll=1&hb=1&hbtimeout=1"
              "&reconnect=0.25")

    indicator = page.locator("#indicator")
    expect(indicator).to_have_attribute("data-mode", "live", timeout=10_000)
    expect(page.locator("#indicator-text")).to_have_text("live")
    expect(page.locator("#status")).to_have_text("In transit")
    expect(page.locator("#location")).to_have_text("Sort Facility, Columbus OH")
    assert timeline_seqs(page) == [2, 1]

    # live: a published update appears within 1 s
    system.gateway.scan("in_transit", "Distribution Center, Newark NJ", "2025-10-03T14:02:00Z",
                        "2025-10-04T18:00:00Z")
    expect(page.locator("#location")).to_have_text("Distribution Center, Newark NJ",
                                                   timeout=1_000)
    assert timeline_seqs(page) == [3, 2, 1]

    # the pod dies: the page says it polls, and the next update still arrives through REST
    polls_before = fallback_polls(system.api)
    system.kill_pod()
    expect(indicator).to_have_attribute("data-mode", "polling", timeout=5_000)
    expect(page.locator("#indicator-text")).to_have_text("updating every 1 s")
    system.gateway.scan("out_for_delivery", "Local Delivery Vehicle, Brooklyn NY",
                        "2025-10-03T14:08:00Z", "2025-10-03T17:00:00Z")
    expect(page.locator("#status")).to_have_text("Out for delivery", timeout=5_000)
    assert timeline_seqs(page) == [4, 3, 2, 1]
    assert fallback_polls(system.api) > polls_before

    # an event published while the page is still polling and the pod is coming back ...
    system.start_pod()
    system.gateway.scan("out_for_delivery", "Brooklyn NY, 2 stops away", "2025-10-03T16:20:00Z")
    expect(indicator).to_have_attribute("data-mode", "live", timeout=15_000)
    expect(page.locator("#location")).to_have_text("Brooklyn NY, 2 stops away", timeout=5_000)
    # ... and one published live after the reconnect
    system.gateway.scan("delivered", "Front door, Brooklyn NY", "2025-10-03T16:40:00Z")
    expect(page.locator("#status")).to_have_text("Delivered", timeout=1_000)

    # nothing missed, nothing shown twice
    assert timeline_seqs(page) == [6, 5, 4, 3, 2, 1]
    expect(page.locator("#eta")).not_to_have_text("—")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "tracking-page.png"), full_page=True)
    assert errors == []


def test_kill_switch_moves_the_page_to_polling_for_good(system, page, keys, redis_url):
    import redis
    from playwright.sync_api import expect

    token = keys.token("user_1", ORDER_ID)
    page.goto(f"{system.api}/orders/{ORDER_ID}#token={token}&poll=1&reconnect=0.25")
    indicator = page.locator("#indicator")
    expect(indicator).to_have_attribute("data-mode", "live", timeout=10_000)

    # `ordertrack flag off`: the flag document, then the pods' control channel
    control = redis.Redis.from_url(redis_url)
    control.set(FLAG_KEY, b'{"enabled": false}')
    control.publish("ws:control:all", b'{"op":"flag"}')
    expect(indicator).to_have_attribute("data-reason", "feature_disabled", timeout=5_000)
    expect(indicator).to_have_attribute("data-mode", "polling")
    expect(page.locator("#indicator-text")).to_have_text("updating every 1 s")

    # updates still arrive, through REST
    system.gateway.scan("in_transit", "Distribution Center, Newark NJ", "2025-10-03T14:02:00Z")
    expect(page.locator("#location")).to_have_text("Distribution Center, Newark NJ",
                                                   timeout=5_000)

    # switched back on, the page stays on REST (close 4003 means: never reconnect)
    control.delete(FLAG_KEY)
    control.publish("ws:control:all", b'{"op":"flag"}')
    page.wait_for_timeout(2_000)
    expect(indicator).to_have_attribute("data-mode", "polling")
    assert timeline_seqs(page) == [3, 2, 1]


def test_a_frozen_pod_is_noticed_by_the_heartbeat(system, page, keys):
    """A pod that stops answering without closing (a zombie TCP connection): the missing
    heartbeat_ack flips the page to polling; once the pod answers again the page goes live."""
    from playwright.sync_api import expect

    token = keys.token("user_1", ORDER_ID)
    page.goto(f"{system.api}/orders/{ORDER_ID}#token={token}&poll=1&hb=0.5&hbtimeout=0.5"
              "&reconnect=0.25")
    indicator = page.locator("#indicator")
    expect(indicator).to_have_attribute("data-mode", "live", timeout=10_000)

    system.pod.send_signal(signal.SIGSTOP)
    try:
        expect(indicator).to_have_attribute("data-mode", "polling", timeout=5_000)
        system.gateway.scan("in_transit", "Distribution Center, Newark NJ",
                            "2025-10-03T14:02:00Z")
        expect(page.locator("#location")).to_have_text("Distribution Center, Newark NJ",
                                                       timeout=5_000)
    finally:
        system.pod.send_signal(signal.SIGCONT)
    expect(indicator).to_have_attribute("data-mode", "live", timeout=15_000)
    system.gateway.scan("out_for_delivery", "Local Delivery Vehicle, Brooklyn NY",
                        "2025-10-03T14:08:00Z")
    expect(page.locator("#status")).to_have_text("Out for delivery", timeout=1_000)
    assert timeline_seqs(page) == [4, 3, 2, 1]


def test_page_without_overrides_uses_the_contract_timings_and_realtime_url(system, page, keys):
    """No overrides: 30 s polls, 25 s heartbeats, 10 s ack timeout, 1 s first reconnect; the
    socket goes to the REST answer's realtime.url (a `ws=` in the link is not obeyed), and the
    token travels in headers and the subprotocol, never in a URL."""
    from playwright.sync_api import expect

    token = keys.token("user_1", ORDER_ID)
    sockets = watch_sockets(page)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{system.api}/orders/{ORDER_ID}#token={token}&ws=ws://127.0.0.1:9/elsewhere")
    expect(page.locator("#indicator")).to_have_attribute("data-mode", "live", timeout=10_000)
    config = page.evaluate("() => globalThis.trackingClient.config")
    assert {name: config[name] for name in ("pollInterval", "heartbeatInterval",
                                            "heartbeatTimeout", "reconnectDelay")} == {
        "pollInterval": 30_000, "heartbeatInterval": 25_000, "heartbeatTimeout": 10_000,
        "reconnectDelay": 1_000}
    assert sockets == [f"{system.pod_url}/ws/orders/{ORDER_ID}/track"]
    assert requested and not [url for url in requested + sockets if token in url]


def test_realtime_disabled_means_no_socket_until_it_is_enabled(system, page, keys, redis_url):
    """`realtime.enabled: false` in the REST answer: the client polls and opens no WebSocket,
    not even to reconnect after a drop; once enabled again it goes live."""
    import redis
    from playwright.sync_api import expect

    control = redis.Redis.from_url(redis_url)
    token = keys.token("user_1", ORDER_ID)
    sockets = watch_sockets(page)
    page.goto(f"{system.api}/orders/{ORDER_ID}#token={token}&poll=0.3&reconnect=0.25")
    indicator = page.locator("#indicator")
    expect(indicator).to_have_attribute("data-mode", "live", timeout=10_000)

    # the pod dies; while the page polls, realtime is switched off for this user
    system.kill_pod()
    expect(indicator).to_have_attribute("data-mode", "polling", timeout=5_000)
    control.set(FLAG_KEY, b'{"enabled": false}')
    page.wait_for_timeout(1_000)  # a few polls: the page has read realtime.enabled = false
    opened = len(sockets)
    system.start_pod()
    page.wait_for_timeout(2_500)
    assert len(sockets) == opened
    expect(indicator).to_have_attribute("data-mode", "polling")

    control.delete(FLAG_KEY)
    expect(indicator).to_have_attribute("data-mode", "live", timeout=5_000)
    system.gateway.scan("in_transit", "Distribution Center, Newark NJ", "2025-10-03T14:02:00Z")
    expect(page.locator("#location")).to_have_text("Distribution Center, Newark NJ",
                                                   timeout=1_000)
    assert timeline_seqs(page) == [3, 2, 1]


def test_page_goes_live_after_a_failed_first_rest_answer(system, page, keys):
    """The API answers 503 when the page loads: the page polls, and goes live once it answers."""
    from playwright.sync_api import expect

    failures = {"left": 1}

    def flaky(route):
        if failures["left"]:
            failures["left"] -= 1
            route.fulfill(status=503, content_type="application/json; charset=utf-8",
                          body='{"error": "UNAVAILABLE", "message": "retry shortly"}')
        else:
            route.continue_()

    page.route("**/api/v2/orders/**", flaky)
    token = keys.token("user_1", ORDER_ID)
    page.goto(f"{system.api}/orders/{ORDER_ID}#token={token}&poll=0.3&reconnect=0.25")
    expect(page.locator("#indicator")).to_have_attribute("data-mode", "live", timeout=5_000)
    assert timeline_seqs(page) == [2, 1]


def test_a_second_connection_over_the_users_limit_moves_the_first_page_to_rest(
        system, browser, keys):
    """MAX_CONNECTIONS_PER_USER=1: a second page of the same user closes the first one's socket
    with 4001; that page polls REST for good (no reconnect) and still gets updates."""
    from playwright.sync_api import expect

    system.kill_pod()
    system.start_pod(MAX_CONNECTIONS_PER_USER="1")
    url = (f"{system.api}/orders/{ORDER_ID}#token={keys.token('user_1', ORDER_ID)}"
           "&poll=0.5&reconnect=0.25")
    first = browser.new_context().new_page()
    first_sockets = watch_sockets(first)
    first.goto(url)
    expect(first.locator("#indicator")).to_have_attribute("data-mode", "live", timeout=10_000)

    second = browser.new_context().new_page()
    second.goto(url)
    expect(second.locator("#indicator")).to_have_attribute("data-mode", "live", timeout=10_000)
    expect(first.locator("#indicator")).to_have_attribute("data-reason", "connection_limit",
                                                          timeout=5_000)
    expect(first.locator("#indicator")).to_have_attribute("data-mode", "polling")
    expect(first.locator("#indicator-text")).to_have_text("updating every 0.5 s")

    system.gateway.scan("in_transit", "Distribution Center, Newark NJ", "2025-10-03T14:02:00Z")
    for page in (first, second):
        expect(page.locator("#location")).to_have_text("Distribution Center, Newark NJ",
                                                       timeout=5_000)
    first.wait_for_timeout(1_500)
    assert len(first_sockets) == 1
    expect(first.locator("#indicator")).to_have_attribute("data-mode", "polling")
    expect(second.locator("#indicator")).to_have_attribute("data-mode", "live")
    assert timeline_seqs(first) == [3, 2, 1]


def test_an_expired_token_is_said_on_the_page(system, page, keys):
    """401 from REST: the page says the link has expired and stops updating (no retry loop)."""
    from playwright.sync_api import expect

    sockets = watch_sockets(page)
    token = keys.token("user_1", ORDER_ID, ttl=-60)
    page.goto(f"{system.api}/orders/{ORDER_ID}#token={token}&poll=0.3")
    notice = page.locator("#notice")
    expect(notice).to_be_visible(timeout=5_000)
    expect(notice).to_contain_text("expired")
    expect(page.locator("#indicator")).to_have_attribute("data-mode", "stopped")
    expect(page.locator("#indicator-text")).to_have_text("not updating")
    page.wait_for_timeout(1_000)
    assert sockets == []


def test_a_socket_that_never_opens_does_not_keep_the_page_from_updating(system, page, keys):
    """The pod accepts TCP but never answers the upgrade (frozen) when the page loads: after the
    heartbeat timeout without a connection_ack the page polls REST, and goes live later."""
    from playwright.sync_api import expect

    token = keys.token("user_1", ORDER_ID)
    system.pod.send_signal(signal.SIGSTOP)
    try:
        page.goto(f"{system.api}/orders/{ORDER_ID}#token={token}&poll=0.3&hbtimeout=0.5"
                  "&reconnect=0.25")
        indicator = page.locator("#indicator")
        expect(indicator).to_have_attribute("data-mode", "polling", timeout=3_000)
        system.gateway.scan("in_transit", "Distribution Center, Newark NJ",
                            "2025-10-03T14:02:00Z")
        expect(page.locator("#location")).to_have_text("Distribution Center, Newark NJ",
                                                       timeout=3_000)
    finally:
        system.pod.send_signal(signal.SIGCONT)
    expect(indicator).to_have_attribute("data-mode", "live", timeout=15_000)
    assert timeline_seqs(page) == [3, 2, 1]
