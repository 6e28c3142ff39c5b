"""The update feeder process: one tracking update per order every `interval` during the hold.

Ours goes through the REAL path, the gateway's publish Lua (`gateway.publisher.Publisher`:
stream + state + PUBLISH in one call); the peers are fed the way each is built to be fed:
"redis-publish" (PUBLISH order:tracking:{order_id} <the same message JSON>) or "nchan-http"
(POST http://127.0.0.1:{port}/pub/{order_id}). Order `j` is updated at
`hold_start + (j / orders + k) * interval`, so the rate is steady at orders / interval.
Each update carries its send time in `location` (bench.loadgen.bench_location), and each call's
round trip is timed (the log's "publish latency").
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import multiprocessing.connection
import time
from dataclasses import dataclass
from typing import Any

from bench.loadgen import bench_location, order_id, percentile
from ordertrack.models import StoredEvent

log = logging.getLogger("ordertrack.bench.load.feed")

TICK = 0.005
CARRIER = "dhl"


@dataclass
class FeedSpec:
    mode: str  # "lua" | "redis-publish" | "nchan-http"
    redis_url: str
    orders: int
    interval: float
    hold_start: float
    hold_seconds: float
    nchan_port: int = 0


def due_updates(orders: int, interval: float, elapsed: float) -> int:
    """How many updates are due `elapsed` seconds into the hold (pure: the feeder's schedule)."""
    if elapsed < 0:
        return 0
    return int(elapsed * orders / interval) + 1


class Feeder:
    def __init__(self, spec: FeedSpec):
        self.spec = spec
        self.seq: dict[int, int] = {}
        self.sent = 0
        self.refused = 0
        self.errors = 0
        self.call_seconds: list[float] = []
        self.lag: list[float] = []

    async def _setup(self) -> None:
        import redis.asyncio as aioredis

        from ordertrack.gateway.publisher import Publisher

        # a blocking pool: when Redis is slow, calls wait for a connection instead of failing
        pool = aioredis.BlockingConnectionPool.from_url(self.spec.redis_url, max_connections=64,
                                                        timeout=10)
        self.redis = aioredis.Redis(connection_pool=pool)
        self.publisher = Publisher(self.redis)
        self.http = None
        if self.spec.mode == "nchan-http":
            import httpx

            self.http = httpx.AsyncClient(timeout=5.0)

    async def _one(self, n: int) -> None:
        from ordertrack import redis_layout
        from ordertrack.gateway.publisher import message

        j = n % self.spec.orders
        order = order_id(j)
        seq = self.seq[j] = self.seq.get(j, 0) + 1
        sent_at = time.time()
        location = bench_location(sent_at)
        stamp = dt.datetime.fromtimestamp(sent_at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        started = time.perf_counter()
        try:
            if self.spec.mode == "lua":
                ok = await self.publisher.publish(order, CARRIER, StoredEvent(
                    order, seq, "in_transit", location, stamp, "2026-12-24", {"bench": True}))
                self.refused += 0 if ok else 1
            else:
                body = message(CARRIER, seq, "in_transit", location, stamp, "2026-12-24",
                               {"bench": True}, sent_at)
                if self.spec.mode == "redis-publish":
                    await self.redis.publish(redis_layout.channel(order), body)
                else:
                    url = f"http://127.0.0.1:{self.spec.nchan_port}/pub/{order}"
                    (await self.http.post(url, content=body)).raise_for_status()
        except Exception as exc:  # noqa: BLE001 - counted; the report shows it
            self.errors += 1
            self.seq[j] = seq - 1  # not published: the order's next update reuses the seq
            if self.errors <= 3:
                log.warning("publish failed: %s", exc)
            return
        self.call_seconds.append(time.perf_counter() - started)
        self.sent += 1

    async def run(self) -> dict[str, Any]:
        await self._setup()
        spec = self.spec
        total = due_updates(spec.orders, spec.interval, spec.hold_seconds - 1e-9)
        issued = 0
        pending: set[asyncio.Task] = set()
        while issued < total:
            now = time.time()
            due = min(total, due_updates(spec.orders, spec.interval, now - spec.hold_start))
            for n in range(issued, due):
                self.lag.append(now - (spec.hold_start + n * spec.interval / spec.orders))
                task = asyncio.ensure_future(self._one(n))
                pending.add(task)
                task.add_done_callback(pending.discard)
            issued = max(issued, due)
            await asyncio.sleep(TICK if issued else max(TICK, spec.hold_start - now))
        if pending:
            await asyncio.gather(*pending)
        await self.redis.aclose()
        if self.http is not None:
            await self.http.aclose()
        calls = sorted(self.call_seconds)
        lag = sorted(self.lag)
        return {
            "mode": spec.mode, "scheduled": total, "sent": self.sent, "refused": self.refused,
            "errors": self.errors, "rate": total / spec.hold_seconds,
            "publish_p50_ms": percentile(calls, 50) * 1e3,
            "publish_p99_ms": percentile(calls, 99) * 1e3,
            "schedule_lag_p99_ms": percentile(lag, 99) * 1e3,
        }


def feed_main(spec: FeedSpec, pipe: multiprocessing.connection.Connection) -> None:
    import uvloop

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    try:
        pipe.send(("done", "feed", uvloop.run(Feeder(spec).run())))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the run
        log.exception("feeder failed")
        pipe.send(("error", "feed", f"{type(exc).__name__}: {exc}"))
