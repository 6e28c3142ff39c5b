"""The gateway's test helpers: the carrier sandbox fixture (registered in conftest.py), orders
in a store, the gateway's environment, a channel subscriber, the gateway in process."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import orjson
import pytest
import redis

from ordertrack import redis_layout
from ordertrack.models import Order
from ordertrack.store import open_store

#: recorded carrier answers
FIXTURES = Path(__file__).parent.parent / "fixtures" / "carriers"


NUMBERS = {"dhl": "JD014600006281230704", "fedex": "794843185271", "ups": "1Z12345E0205271688"}


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
