"""The rollout's success criteria, measured (issue 20).

The rules (`ordertrack/rollout.py`) on their own; the API's view and stay endpoints against a
real API and Redis (validation, once per view, rate limit, the operators' answer, metrics);
and the whole path: tracking pages of each variant in Chromium count their views and report
their stays by `navigator.sendBeacon`, a real Prometheus (Debian's, as `ordertrack dev` runs
it) scrapes the API and the pod with deploy/prometheus's rules, and `ordertrack rollout
report` reads the figures back.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import time

import httpx
import pytest
import redis

from ordertrack import redis_layout, rollout
from ordertrack.api.rollout import RateLimiter
from ordertrack.devtools import prometheus as prom
from ordertrack.devtools.processes import ORDERTRACK
from ordertrack.models import Order
from tests.support import free_port, wait_for, wait_http_ok
from tests.test_browser import (  # noqa: F401 - `browser` is a fixture
    ORDER_ID,
    Gateway,
    at,
    browser,
    screenshot,
    watch_sockets,
)

# --- the rules -----------------------------------------------------------------------------------


def figures(realtime=(0, 0, 0, 0), polling=(0, 0, 0, 0)):
    return {"realtime": rollout.VariantFigures("realtime", *realtime),
            "polling": rollout.VariantFigures("polling", *polling)}


GOOD_PROMETHEUS = {"incidents": 0.0, "stability": 0.97, "poll_success": 0.995}


def verdicts(found):
    return {c.name: c.verdict for c in found}


def test_every_criterion_passing_lets_the_ramp_go_ahead():
    # realtime: 200 views of 100 orders, 10 % bounces; polling: 420 of 100, 30 %
    found = rollout.criteria(figures((200, 100, 100, 10), (420, 100, 100, 30)), GOOD_PROMETHEUS, 10)
    assert [c.name for c in found] == ["incidents", "bounce_rate", "views_per_order",
                                       "stability", "poll_success"]
    assert set(verdicts(found).values()) == {"pass"}
    assert rollout.ramp_decision(found)
    by_name = {c.name: c for c in found}
    assert by_name["views_per_order"].value == 2.0
    assert by_name["bounce_rate"].to_json()["polling"] == 0.3


@pytest.mark.parametrize("change, failing", [
    ({"incidents": 1.0}, "incidents"),
    ({"stability": 0.95}, "stability"),          # above 95 %, not at it
    ({"poll_success": 0.99}, "poll_success"),
])
def test_one_failing_rule_based_criterion_holds_the_ramp(change, failing):
    found = rollout.criteria(figures((200, 100, 100, 10), (420, 100, 100, 30)),
                             {**GOOD_PROMETHEUS, **change}, 10)
    assert [name for name, v in verdicts(found).items() if v != "pass"] == [failing]
    assert not rollout.ramp_decision(found)


def test_views_per_order_and_bounce_fail_against_their_thresholds():
    # 3 views per order is not under 3; the same bounce rate as the control is not lower
    found = rollout.criteria(figures((300, 100, 100, 30), (420, 100, 100, 30)), GOOD_PROMETHEUS, 10)
    assert verdicts(found)["views_per_order"] == "fail"
    assert verdicts(found)["bounce_rate"] == "fail"


def test_no_data_is_no_pass():
    found = rollout.criteria(figures(), {"incidents": None, "stability": None,
                                         "poll_success": None}, 10)
    assert set(verdicts(found).values()) == {"no data"}
    assert not rollout.ramp_decision(found)


def test_a_stay_is_a_bounce_under_the_threshold_and_bad_reports_are_refused():
    assert rollout.is_bounce(9.99, 10) and not rollout.is_bounce(10, 10)
    assert rollout.stay_seconds(12.5) == 12.5
    assert rollout.stay_seconds(10 ** 9) == rollout.MAX_STAY_SECONDS
    for bad in (-1, math.nan, math.inf, "12", True, None):
        assert rollout.stay_seconds(bad) is None
    assert rollout.valid_view_id(rollout.new_view_id())
    for bad in ("pv_" + "g" * 32, "pv_123", "x" * 35, 12, None):
        assert not rollout.valid_view_id(bad)


def test_the_rate_limiter_forgets_a_window_and_bounds_its_memory():
    now = [0.0]
    limiter = RateLimiter(limit=2, window=10, max_keys=3, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(3)] == [True, True, False]
    now[0] = 10.0
    assert limiter.allow("a")
    for key in "bcdef":
        limiter.allow(key)
    assert len(limiter._seen) == 3


def test_the_dev_prometheus_config_scrapes_each_process_with_the_rules():
    text = prom.config_text({"order-tracking-api": {"dev-api": "127.0.0.1:8000"}},
                            prom.rules_files())
    config = json.loads(text)
    assert config["rule_files"][0].endswith("deploy/prometheus/alerts.yaml")
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "order-tracking-api"
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:8000"]


# --- the API's endpoints -------------------------------------------------------------------------


@pytest.fixture
def api(tmp_path, redis_url, keys, procs):
    db_url = f"sqlite:///{tmp_path / 'tracking.db'}"
    gateway = Gateway(db_url, redis_url)
    gateway.register(Order(ORDER_ID, "user_1", "dhl", "DHL1234567890"))
    gateway.register(Order("ord_second", "user_1", "dhl", "DHL0000000002"))
    port = free_port()
    procs.start("api", env={"API_HOST": "127.0.0.1", "API_PORT": str(port),
                            "DATABASE_URL": db_url, "REDIS_URL": redis_url,
                            "JWT_PUBLIC_KEY": str(keys.public_path),
                            "BOUNCE_THRESHOLD_SECONDS": "5"},
                log=tmp_path / "api.log")
    base = f"http://127.0.0.1:{port}"
    wait_http_ok(base + "/healthz")
    return base


def view(api, keys, variant="realtime", order_id=ORDER_ID, **kwargs):
    headers = {"Authorization": "Bearer " + keys.token("user_1", order_id)}
    return httpx.post(f"{api}/api/v2/orders/{order_id}/views", headers=headers,
                      json={"variant": variant}, **kwargs)


def stay(api, view_id, seconds):
    return httpx.post(f"{api}/api/v2/page-stays", json={"view_id": view_id, "seconds": seconds})


def metric(api, name, variant):
    for line in httpx.get(api + "/metrics").text.splitlines():
        if line.startswith(f'{name}{{variant="{variant}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_views_are_counted_per_variant_and_order_without_personal_data(api, keys, redis_url):
    ids = [view(api, keys, "realtime").json()["view_id"] for _ in range(3)]
    ids.append(view(api, keys, "realtime", order_id="ord_second").json()["view_id"])
    assert view(api, keys, "polling").status_code == 201
    assert len(set(ids)) == 4 and all(rollout.valid_view_id(i) for i in ids)

    answer = httpx.get(f"{api}/api/v2/rollout").json()
    assert answer["days"] == 7 and answer["bounce_threshold_seconds"] == 5
    assert answer["variants"]["realtime"] == {
        "views": 4, "orders": 2, "views_per_order": 2.0, "stays_reported": 0, "bounces": 0,
        "bounce_rate": None}
    assert answer["variants"]["polling"]["views"] == 1
    assert metric(api, "ordertrack_api_page_views_total", "realtime") == 4
    assert metric(api, "ordertrack_api_page_orders_viewed", "realtime") == 2

    # Redis holds counts and a HyperLogLog: no order id, user or address in plain text
    client = redis.Redis.from_url(redis_url)
    today = rollout.day(time.time())
    assert client.pfcount(redis_layout.rollout_orders("realtime", today)) == 2
    for key in client.keys("rollout:*"):
        value = client.dump(key)
        assert b"user_1" not in value and ORDER_ID.encode() not in value, key
        if b":views:" in key:
            assert client.get(key).isdigit()
        elif b":orders:" in key:
            assert client.get(key).startswith(b"HYLL")
        else:  # a view waiting for its stay: its variant alone
            assert key.startswith(b"rollout:view:pv_") and client.get(key) in (b"realtime",
                                                                               b"polling")


def test_a_stay_is_counted_once_and_a_short_one_is_a_bounce(api, keys):
    long_view = view(api, keys, "realtime").json()["view_id"]
    short_view = view(api, keys, "polling").json()["view_id"]
    assert stay(api, long_view, 42.5).status_code == 204
    assert stay(api, short_view, 1.2).status_code == 204
    again = stay(api, long_view, 3)
    assert again.status_code == 404 and again.json()["error"] == "NOT_FOUND"
    assert stay(api, rollout.new_view_id(), 3).status_code == 404  # never issued

    variants = httpx.get(f"{api}/api/v2/rollout").json()["variants"]
    assert (variants["realtime"]["stays_reported"], variants["realtime"]["bounces"]) == (1, 0)
    assert (variants["polling"]["stays_reported"], variants["polling"]["bounce_rate"]) == (1, 1.0)
    assert metric(api, "ordertrack_api_page_bounces_total", "polling") == 1
    assert metric(api, "ordertrack_api_page_stays_total", "realtime") == 1


def test_bad_reports_get_a_clear_error_and_count_nothing(api, keys):
    assert view(api, keys, "sometimes").json()["error"] == "BAD_REQUEST"
    anonymous = httpx.post(f"{api}/api/v2/orders/{ORDER_ID}/views", json={"variant": "polling"})
    assert anonymous.status_code == 401
    wrong_order = httpx.post(f"{api}/api/v2/orders/ord_second/views",
                             headers={"Authorization": "Bearer " + keys.token("user_1", ORDER_ID)},
                             json={"variant": "polling"})
    assert wrong_order.status_code == 403
    good = view(api, keys).json()["view_id"]
    for body in (b"not json", b'{"view_id": 1, "seconds": 3}', b"[]",
                 json.dumps({"view_id": good, "seconds": -3}).encode(),
                 json.dumps({"view_id": good, "seconds": "3"}).encode()):
        answer = httpx.post(f"{api}/api/v2/page-stays", content=body)
        assert answer.status_code == 400, body
        assert set(answer.json()) == {"error", "message"}
    huge = httpx.post(f"{api}/api/v2/page-stays", content=b" " * 5000)
    assert huge.status_code == 413
    assert httpx.get(f"{api}/api/v2/rollout?days=0").status_code == 400
    # the good view can still report its stay: nothing above used it up
    assert stay(api, good, 30).status_code == 204
    variants = httpx.get(f"{api}/api/v2/rollout").json()["variants"]
    assert variants["realtime"]["views"] == 1 and variants["polling"]["views"] == 0


def test_reports_are_rate_limited_per_client(api, keys):
    answers = [stay(api, rollout.new_view_id(), 1).status_code for _ in range(32)]
    assert answers[:30] == [404] * 30
    assert answers[30:] == [429, 429]
    limited = stay(api, rollout.new_view_id(), 1)
    assert limited.headers["retry-after"] == "60" and limited.json()["error"] == "RATE_LIMITED"


# --- Chromium -> API -> Redis and Prometheus -> `ordertrack rollout report` ----------------------


@pytest.fixture
def stack(tmp_path, redis_url, keys, procs):
    """Redis, store, API (the default 10 s bounce threshold), a push pod and Debian's prometheus scraping
    both with deploy/prometheus's rules, as `ordertrack dev` runs it."""
    assert prom.installed(), "prometheus missing: `make system-deps` installs it"
    db_url = f"sqlite:///{tmp_path / 'tracking.db'}"
    gateway = Gateway(db_url, redis_url)
    gateway.register(Order(ORDER_ID, "user_1", "dhl", "DHL1234567890"))
    gateway.scan("in_transit", "Sort Facility, Columbus OH", at(-3), at(20))
    api_port, pod_port, metrics_port, prom_port = (free_port() for _ in range(4))
    procs.start("api", env={"API_HOST": "127.0.0.1", "API_PORT": str(api_port),
                            "DATABASE_URL": db_url, "REDIS_URL": redis_url,
                            "JWT_PUBLIC_KEY": str(keys.public_path),
                            "REALTIME_WS_URL": f"ws://127.0.0.1:{pod_port}"},
                log=tmp_path / "api.log")
    procs.start("serve", env={"HOST": "127.0.0.1", "PORT": str(pod_port),
                              "METRICS_PORT": str(metrics_port), "REDIS_URL": redis_url,
                              "JWT_PUBLIC_KEY": str(keys.public_path)},
                log=tmp_path / "pod.log")
    config = tmp_path / "prometheus.yml"
    config.write_text(prom.config_text({
        "ws-order-tracking": {"test-pod": f"127.0.0.1:{metrics_port}"},
        "order-tracking-api": {"test-api": f"127.0.0.1:{api_port}"},
    }, prom.rules_files()))
    with open(tmp_path / "prometheus.log", "wb") as log:
        server = subprocess.Popen(prom.argv(config, tmp_path / "tsdb", prom_port), stdout=log,
                                  stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{api_port}"
    prometheus = f"http://127.0.0.1:{prom_port}"
    try:
        wait_http_ok(api + "/healthz")
        wait_http_ok(f"http://127.0.0.1:{pod_port}/readyz")
        wait_http_ok(prometheus + "/-/ready", timeout=30)
        yield api, prometheus
    finally:
        server.terminate()
        server.wait(15)


def open_view(browser, api, token, variant):  # noqa: F811 - the fixture's value
    """A customer's page view; returns (page, the WebSocket URLs it opened)."""
    from playwright.sync_api import expect

    page = browser.new_context(locale="en-US", timezone_id="America/New_York").new_page()
    sockets = watch_sockets(page)
    page.goto(f"{api}/orders/{ORDER_ID}#token={token}&poll=1")
    expect(page.locator("html")).to_have_attribute("data-view-id", re.compile(r"^pv_[0-9a-f]{32}$"),
                                                   timeout=10_000)
    expect(page.locator("html")).to_have_attribute("data-variant", variant)
    mode = "live" if variant == "realtime" else "polling"
    expect(page.locator("#indicator")).to_have_attribute("data-mode", mode, timeout=10_000)
    return page, sockets


def run_report(prometheus, redis_url, *extra):
    done = subprocess.run([*ORDERTRACK, "rollout", "report", "--prometheus", prometheus, *extra],
                          env={**os.environ, "REDIS_URL": redis_url}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_views_and_bounces_of_each_variant_read_back_through_the_report(
        stack, browser, keys, redis_url):  # noqa: F811 - the fixture
    """Two views of each variant: the realtime pages stay over 11 s (the threshold is 10 s),
    the control group's leave at once (bounces); the control group never opens a WebSocket. The
    report reads views per order and bounce rates from Redis and incidents from Prometheus."""
    api, prometheus = stack
    control = redis.Redis.from_url(redis_url)
    token = keys.token("user_1", ORDER_ID)

    # `ordertrack flag --enabled false`: the document, then the pods' control channel
    control.set(redis_layout.FLAG_KEY, b'{"enabled": false}')  # the control group
    control.publish(redis_layout.CONTROL_ALL, redis_layout.encode_flag_changed())
    left = []  # pages navigated away from: closed once their beacons are in
    for _ in range(2):
        page, sockets = open_view(browser, api, token, "polling")
        stayed = page.evaluate("() => performance.now()")
        # the customer leaves (pagehide: the stay goes by sendBeacon); a closed context may
        # drop a beacon still queued, so the context stays until the beacons are counted
        page.goto("about:blank")
        left.append(page)
        assert stayed < 9_000  # well under the threshold: a bounce
        assert sockets == []
    control.delete(redis_layout.FLAG_KEY)
    control.publish(redis_layout.CONTROL_ALL, redis_layout.encode_flag_changed())
    for n in range(2):
        page, sockets = open_view(browser, api, token, "realtime")
        assert sockets  # live: the WebSocket page
        if n == 0:
            screenshot(page, "realtime-variant-live")
        # the stay under test: past the threshold (the page's own clock, as the beacon's)
        page.wait_for_function("() => performance.now() > 11000", timeout=30_000)
        page.goto("about:blank")
        left.append(page)

    def stays_reported():
        variants = httpx.get(f"{api}/api/v2/rollout").json()["variants"]
        return all(variants[v]["stays_reported"] == 2 for v in rollout.VARIANTS) and variants

    variants = wait_for(stays_reported, 30, what="both variants' beacons")
    for page in left:
        page.context.close()
    assert (variants["realtime"]["bounces"], variants["polling"]["bounces"]) == (0, 2)

    # Prometheus has scraped the API and evaluated the rules (the incidents rule included)
    def evaluated():
        answer = httpx.get(f"{prometheus}/api/v1/query",
                           params={"query": "ordertrack:ws_alerts_firing:count"}).json()
        return answer["data"]["result"]

    wait_for(evaluated, 30, interval=0.5, what="the rules evaluated")
    report = json.loads(run_report(prometheus, redis_url, "--json"))
    by_name = {c["name"]: c for c in report["criteria"]}
    assert list(by_name) == ["incidents", "bounce_rate", "views_per_order", "stability",
                             "poll_success"]
    assert (by_name["incidents"]["value"], by_name["incidents"]["verdict"]) == (0, "pass")
    assert {k: by_name["bounce_rate"][k] for k in ("value", "realtime", "polling", "verdict")} == {
        "value": 0.0, "realtime": 0.0, "polling": 1.0, "verdict": "pass"}
    assert (by_name["views_per_order"]["value"], by_name["views_per_order"]["verdict"]) == (
        2.0, "pass")
    assert by_name["poll_success"]["verdict"] == "no data"  # no gateway in this stack
    assert report["ramp"] is False
    assert report["variants"]["polling"] == {"views": 2, "orders": 1, "views_per_order": 2.0,
                                             "stays_reported": 2, "bounces": 2,
                                             "bounce_rate": 1.0}
    text = run_report(prometheus, redis_url)
    assert text.startswith("Ramp realtime_order_tracking to 25 %: HOLD")
    assert "realtime 0.0% of 2, polling 100.0% of 2" in text


def test_the_report_says_in_one_line_when_prometheus_cannot_be_reached(redis_url):
    closed = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "REDIS_URL": redis_url, "DEV_DIR": "/nonexistent"}
    done = subprocess.run([*ORDERTRACK, "rollout", "report", "--prometheus", closed], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith(f"ordertrack rollout: cannot query Prometheus at {closed}")
    assert done.stdout == ""
    bad = subprocess.run([*ORDERTRACK, "rollout", "report", "--prometheus", "ftp://x"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("ordertrack rollout: invalid")
