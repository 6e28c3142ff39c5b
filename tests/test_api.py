"""The REST fallback (`ordertrack api`) as a client sees it: a real uvicorn process, real Redis,
a SQLite tracking store, RS256 tokens.

One API process serves the whole module (it starts in about a second); each test uses its own
order ids, so the API's caches never mix tests.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import orjson
import pytest
import redis

from ordertrack import redis_layout
from ordertrack.gateway.publisher import Publisher
from ordertrack.models import Order, StoredEvent, TrackingEvent
from ordertrack.store import open_store
from tests.support import (
    REPO,
    ProcessGroup,
    free_port,
    generate_keys,
    jwks_server,
    wait_for,
    wait_http_ok,
)

JSON_TYPE = "application/json; charset=utf-8"
WS_BASE = "ws://127.0.0.1:18080"

LOG_EVENTS = [  # the log's REST trace, DOCUMENT 1
    TrackingEvent("shipped", "Warehouse, Chicago IL", "2025-10-01T10:00:00Z",
                  "2025-10-04T18:00:00Z"),
    TrackingEvent("in_transit", "Sort Facility, Columbus OH", "2025-10-02T06:00:00Z",
                  "2025-10-04T18:00:00Z"),
    TrackingEvent("in_transit", "Distribution Center, Newark NJ", "2025-10-03T14:02:00Z",
                  "2025-10-04T18:00:00Z"),
    TrackingEvent("out_for_delivery", "Local Delivery Vehicle, Brooklyn NY",
                  "2025-10-03T14:08:00Z", "2025-10-03T17:00:00Z"),
]


@contextlib.contextmanager
def running_api(redis_server, keys, workdir: Path, **env: str):
    """A running `ordertrack api` on a free port (`env` overrides its settings): yields an
    object with its base URL, port, database URL, Redis URL and log file."""
    db = workdir / "tracking.db"
    port = free_port()
    group = ProcessGroup()
    log = workdir / "api.log"
    group.start("api", env={
        "API_HOST": "127.0.0.1",
        "API_PORT": str(port),
        "DATABASE_URL": f"sqlite:///{db}",
        "REDIS_URL": redis_server.url,
        "JWT_PUBLIC_KEY": str(keys.public_path),
        "REALTIME_WS_URL": WS_BASE,
        "REST_CACHE_TTL_SECONDS": "60",
        **env,
    }, log=log)
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_http_ok(base + "/healthz")
        except TimeoutError:
            pytest.fail(f"ordertrack api did not start:\n{log.read_text()}")
        yield type("Api", (), {"base": base, "port": port, "db": f"sqlite:///{db}",
                               "redis": redis_server.url, "log": log})
    finally:
        group.stop_all()


@pytest.fixture(scope="module")
def api(redis_server, keys, tmp_path_factory):
    """A running `ordertrack api`: its base URL, database URL and Redis URL."""
    with running_api(redis_server, keys, tmp_path_factory.mktemp("api")) as running:
        yield running


@pytest.fixture
def order_id():
    return f"ord_{uuid.uuid4().hex[:12]}"


async def add_order(api, order_id: str, events=LOG_EVENTS, user: str = "user_1") -> None:
    store = await open_store(api.db)
    try:
        await store.add_order(Order(order_id, user, "dhl", "DHL1234567890"))
        if events:
            await store.append_events(order_id, list(events))
    finally:
        await store.close()


def get_tracking(api, order_id: str, token: str | None, params: dict[str, str] | None = None,
                 **headers: str) -> httpx.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    headers = {name.replace("_", "-"): value for name, value in headers.items()}
    return httpx.get(f"{api.base}/api/v2/orders/{order_id}/tracking", headers=headers,
                     params=params, timeout=5)


# --- answers -----------------------------------------------------------------------------------


async def test_answer_is_the_logs_shape_plus_seq_and_realtime(api, keys, order_id, redis_url):
    await add_order(api, order_id)
    response = get_tracking(api, order_id, keys.token("user_1", order_id),
                            X_Request_ID="req_track_poll_001")
    assert response.status_code == 200
    assert response.headers["content-type"] == JSON_TYPE
    assert response.headers["x-request-id"] == "req_track_poll_001"
    body = response.json()
    assert body["order_id"] == order_id
    assert body["tracking_number"] == "DHL1234567890"
    assert body["carrier"] == "dhl"
    assert body["status"] == "out_for_delivery"
    assert body["last_update"] == "2025-10-03T14:08:00Z"
    assert body["estimated_delivery"] == "2025-10-03T17:00:00Z"
    assert body["seq"] == 4
    assert [(h["status"], h["location"], h["timestamp"]) for h in body["history"]] == [
        (e.status, e.location, e.timestamp) for e in LOG_EVENTS
    ]
    assert [h["seq"] for h in body["history"]] == [1, 2, 3, 4]
    assert body["realtime"] == {"enabled": True,
                                "url": f"{WS_BASE}/ws/orders/{order_id}/track"}


async def test_order_without_events_answers_seq_zero(api, keys, order_id, redis_url):
    await add_order(api, order_id, events=())
    body = get_tracking(api, order_id, keys.token("user_1", order_id)).json()
    assert (body["status"], body["seq"], body["history"]) == ("shipped", 0, [])


async def test_token_naming_several_orders(api, keys, order_id, redis_url):
    await add_order(api, order_id)
    token = keys.token("user_1", ["ord_other", order_id])
    assert get_tracking(api, order_id, token).status_code == 200


def test_request_id_is_generated_when_absent(api, keys, redis_url):
    first = get_tracking(api, "ord_x", None)
    second = get_tracking(api, "ord_x", None)
    assert first.headers["x-request-id"].startswith("req_")
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


# --- refusals ----------------------------------------------------------------------------------


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == JSON_TYPE
    assert response.headers["x-request-id"]
    body = response.json()
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]
    return body


async def test_401_for_missing_malformed_expired_and_forged_tokens(api, keys, order_id,
                                                                   redis_url, tmp_path):
    await add_order(api, order_id)
    other_keys = generate_keys(tmp_path)
    cases = {
        "missing": get_tracking(api, order_id, None, X_Request_ID="req_401"),
        "not bearer": get_tracking(api, order_id, None,
                                   Authorization="Basic dXNlcjpwYXNz"),
        "malformed": get_tracking(api, order_id, "not.a.jwt"),
        "expired": get_tracking(api, order_id, keys.token("user_1", order_id, ttl=-60)),
        "forged": get_tracking(api, order_id, other_keys.token("user_1", order_id)),
        "no exp": get_tracking(api, order_id, keys.token("user_1", order_id, exp=None)),
    }
    for name, response in cases.items():
        body = assert_error(response, 401, "UNAUTHORIZED")
        assert response.headers["www-authenticate"] == 'Bearer realm="ordertrack"', name
        assert order_id not in body["message"], name
    assert cases["missing"].headers["x-request-id"] == "req_401"
    assert "expired" in cases["expired"].json()["message"]


async def test_a_token_in_the_query_string_is_not_accepted(api, keys, order_id, redis_url):
    """Query strings end up in access logs: credentials only in the Authorization header."""
    await add_order(api, order_id)
    token = keys.token("user_1", order_id)
    for name in ("token", "access_token", "jwt"):
        assert_error(get_tracking(api, order_id, None, params={name: token}), 401,
                     "UNAUTHORIZED")


async def test_403_for_a_token_naming_another_order(api, keys, order_id, redis_url):
    await add_order(api, order_id)
    response = get_tracking(api, order_id, keys.token("user_2", "ord_someone_elses"),
                            X_Request_ID="req_ws_track_002")
    assert assert_error(response, 403, "FORBIDDEN") == {
        "error": "FORBIDDEN", "message": "You can only track orders you own"}
    assert response.headers["x-request-id"] == "req_ws_track_002"


async def test_403_when_the_token_names_an_order_someone_else_owns(api, keys, order_id,
                                                                  redis_url):
    await add_order(api, order_id, user="alice")
    assert get_tracking(api, order_id, keys.token("alice", order_id)).status_code == 200
    response = get_tracking(api, order_id, keys.token("mallory", order_id))
    assert assert_error(response, 403, "FORBIDDEN")["message"] == "You can only track orders you own"
    assert "user_id" not in get_tracking(api, order_id, keys.token("alice", order_id)).json()


def test_404_for_an_order_the_store_lacks(api, keys, order_id, redis_url):
    body = assert_error(get_tracking(api, order_id, keys.token("user_1", order_id)), 404,
                        "NOT_FOUND")
    assert order_id in body["message"]


def test_unknown_path_is_a_json_404(api, redis_url):
    assert_error(httpx.get(f"{api.base}/api/v2/nothing"), 404, "NOT_FOUND")
    assert_error(httpx.post(f"{api.base}/api/v2/orders/x/tracking"), 405, "METHOD_NOT_ALLOWED")


# --- read-through cache ------------------------------------------------------------------------


async def test_cached_answer_is_refreshed_when_a_newer_seq_is_published(api, keys, order_id,
                                                                         redis_url):
    await add_order(api, order_id)
    token = keys.token("user_1", order_id)
    assert get_tracking(api, order_id, token).json()["seq"] == 4

    # the store changes behind the cache's back: the cached answer is served (TTL 60 s) ...
    newer = TrackingEvent("delivered", "Front door, Brooklyn NY", "2025-10-03T16:40:00Z")
    store = await open_store(api.db)
    try:
        (stored,) = await store.append_events(order_id, [newer])
    finally:
        await store.close()
    assert get_tracking(api, order_id, token).json()["seq"] == 4

    # ... until the gateway publishes seq 5: then the next poll has it
    client = redis.asyncio.Redis.from_url(api.redis)
    try:
        await Publisher(client).publish(order_id, "dhl",
            StoredEvent(order_id, stored.seq, newer.status, newer.location, newer.timestamp, None))
    finally:
        await client.aclose()
    body = get_tracking(api, order_id, token).json()
    assert (body["seq"], body["status"], body["last_update"]) == (
        5, "delivered", "2025-10-03T16:40:00Z")
    assert body["history"][-1] == {"status": "delivered", "location": "Front door, Brooklyn NY",
                                   "timestamp": "2025-10-03T16:40:00Z", "seq": 5}
    # the refreshed answer is what Redis caches for the other API processes
    cached = orjson.loads(redis.Redis.from_url(api.redis).get(redis_layout.rest_cache(order_id)))
    assert cached["seq"] == 5


async def test_published_events_the_store_lacks_come_from_the_stream(api, keys, order_id,
                                                                      redis_url):
    await add_order(api, order_id, events=LOG_EVENTS[:2])
    client = redis.asyncio.Redis.from_url(api.redis)
    try:
        for seq, event in enumerate(LOG_EVENTS[2:], start=3):
            await Publisher(client).publish(order_id, "dhl",
                StoredEvent(order_id, seq, event.status, event.location, event.timestamp,
                            event.estimated_delivery))
    finally:
        await client.aclose()
    body = get_tracking(api, order_id, keys.token("user_1", order_id)).json()
    assert body["seq"] == 4
    assert [h["seq"] for h in body["history"]] == [1, 2, 3, 4]
    assert (body["status"], body["estimated_delivery"]) == ("out_for_delivery",
                                                            "2025-10-03T17:00:00Z")


async def test_late_scans_are_in_history_order_and_leave_the_current_status(api, keys,
                                                                               order_id):
    """A carrier pushes a scan older than the newest (it gets the next seq): the answer lists
    the history by scan time, and the status stays the newest scan's, whether the late scan
    comes from the store or, published before the store shows it, from the stream."""
    late_stored = TrackingEvent("in_transit", "Sort Facility, Pittsburgh PA",
                                "2025-10-02T20:00:00Z")
    late_published = TrackingEvent("in_transit", "Hub, Allentown PA", "2025-10-03T08:00:00Z")
    await add_order(api, order_id, events=[*LOG_EVENTS, late_stored])
    client = redis.asyncio.Redis.from_url(api.redis)
    try:
        await Publisher(client).publish(order_id, "dhl", StoredEvent(
            order_id, 6, late_published.status, late_published.location,
            late_published.timestamp))
    finally:
        await client.aclose()
    body = get_tracking(api, order_id, keys.token("user_1", order_id)).json()
    assert body["seq"] == 6
    assert [(h["seq"], h["timestamp"]) for h in body["history"]] == [
        (1, "2025-10-01T10:00:00Z"), (2, "2025-10-02T06:00:00Z"), (5, "2025-10-02T20:00:00Z"),
        (6, "2025-10-03T08:00:00Z"), (3, "2025-10-03T14:02:00Z"), (4, "2025-10-03T14:08:00Z")]
    assert (body["status"], body["last_update"], body["estimated_delivery"]) == (
        "out_for_delivery", "2025-10-03T14:08:00Z", "2025-10-03T17:00:00Z")


async def test_realtime_enabled_follows_the_flag_key(api, keys, order_id, redis_url):
    await add_order(api, order_id)
    token = keys.token("user_1", order_id)
    flags = redis.Redis.from_url(api.redis)
    assert get_tracking(api, order_id, token).json()["realtime"]["enabled"] is True
    flags.set(redis_layout.FLAG_KEY, orjson.dumps({"enabled": False}))
    assert get_tracking(api, order_id, token).json()["realtime"]["enabled"] is False
    flags.set(redis_layout.FLAG_KEY, orjson.dumps({"enabled": True}))
    assert get_tracking(api, order_id, token).json()["realtime"]["enabled"] is True
    # targeting, as the push pod evaluates it: the order's carrier, the rollout percentage
    flags.set(redis_layout.FLAG_KEY, orjson.dumps({"enabled": True, "carriers": ["fedex"]}))
    assert get_tracking(api, order_id, token).json()["realtime"]["enabled"] is False
    flags.set(redis_layout.FLAG_KEY, orjson.dumps({"enabled": True, "carriers": ["dhl"], "percentage": 0}))
    assert get_tracking(api, order_id, token).json()["realtime"]["enabled"] is False
    flags.delete(redis_layout.FLAG_KEY)
    assert get_tracking(api, order_id, token).json()["realtime"]["enabled"] is True


# --- operators' view ---------------------------------------------------------------------------


async def test_fallback_reason_is_counted(api, keys, order_id, redis_url):
    await add_order(api, order_id)
    token = keys.token("user_1", order_id)

    def count(reason: str) -> float:
        for line in httpx.get(f"{api.base}/metrics").text.splitlines():
            if line.startswith(f'ordertrack_api_fallback_requests_total{{reason="{reason}"}}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = count("websocket_disconnected"), count("other")
    get_tracking(api, order_id, token, X_Fallback_Reason="websocket_disconnected")
    get_tracking(api, order_id, token, X_Fallback_Reason="websocket_disconnected")
    get_tracking(api, order_id, token, X_Fallback_Reason="made-up reason")
    assert (count("websocket_disconnected"), count("other")) == (before[0] + 2, before[1] + 1)


def test_openapi_describes_answer_and_error_bodies(api, redis_url):
    schema = httpx.get(f"{api.base}/openapi.json").json()
    operation = schema["paths"]["/api/v2/orders/{order_id}/tracking"]["get"]
    assert set(operation["responses"]) == {"200", "401", "403", "404", "503"}
    for status in ("401", "403", "404"):
        ref = operation["responses"][status]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/ErrorBody")
    answer = schema["components"]["schemas"]["TrackingAnswer"]
    assert {"order_id", "tracking_number", "carrier", "status", "last_update",
            "estimated_delivery", "history", "seq", "realtime"} <= set(answer["required"])
    assert schema["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_tracking_page_and_its_files_are_served(api, redis_url):
    page = httpx.get(f"{api.base}/orders/ord_1a2b3c4d5e6f")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/static/tracking-page.js">' in page.text
    for name, kind in [("tracking-client.js", "javascript"), ("tracking-page.js", "javascript"),
                       ("tracking.css", "text/css")]:
        response = httpx.get(f"{api.base}/static/{name}")
        assert response.status_code == 200, name
        assert kind in response.headers["content-type"], name
    assert "export class TrackingClient" in httpx.get(
        f"{api.base}/static/tracking-client.js").text


def test_missing_public_key_stops_start_up_with_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ordertrack", "api"],
        env={"PATH": "/usr/bin:/bin", "JWT_PUBLIC_KEY": str(tmp_path / "absent.pem")},
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ordertrack api: invalid JWT_PUBLIC_KEY: expected PEM text or the path of a PEM file"]


async def test_without_redis_answers_come_from_the_store_with_realtime_off(own_redis, keys,
                                                                           tmp_path, order_id):
    with running_api(own_redis, keys, tmp_path, REST_CACHE_TTL_SECONDS="0.2") as api:
        await add_order(api, order_id)
        token = keys.token("user_1", order_id)
        assert get_tracking(api, order_id, token).json()["realtime"]["enabled"] is True

        own_redis.stop()
        response = get_tracking(api, order_id, token)
        assert response.status_code == 200
        body = response.json()
        assert (body["seq"], body["status"]) == (4, "out_for_delivery")
        assert body["realtime"]["enabled"] is False
        assert_error(get_tracking(api, "ord_unknown", keys.token("user_1", "ord_unknown")), 404,
                     "NOT_FOUND")

        own_redis.start()
        wait_for(lambda: get_tracking(api, order_id, token).json()["realtime"]["enabled"],
                 timeout=10, what="realtime back on once Redis is back")


async def test_keys_from_a_jwks_url_as_the_pod_takes_them(keys, tmp_path, redis_server,
                                                         order_id):
    """`JWT_JWKS_URL` (no PEM): the same JWT settings as the push pod; keys chosen by `kid`."""
    import time

    import jwt

    with jwks_server(keys.public_pem, "key-2026") as url, running_api(
            redis_server, keys, tmp_path, JWT_PUBLIC_KEY="", JWT_JWKS_URL=url) as api:
        await add_order(api, order_id)

        def signed(kid: str) -> str:
            claims = {"sub": "user_1", "order_id": order_id, "exp": time.time() + 60}
            return jwt.encode(claims, keys.private_pem, "RS256", headers={"kid": kid})

        assert get_tracking(api, order_id, signed("key-2026")).status_code == 200
        assert_error(get_tracking(api, order_id, signed("retired")), 401, "UNAUTHORIZED")
