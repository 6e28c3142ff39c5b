"""Running `ordertrack api` and asking it for an order's tracking, as a client does."""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx
import pytest

from ordertrack.models import Order, TrackingEvent
from ordertrack.store import open_store
from tests.support import (
    ProcessGroup,
    free_port,
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
