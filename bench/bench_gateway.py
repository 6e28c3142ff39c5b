"""Gateway bench (run by hand: `python -m bench.bench_gateway [--orders 300 --rounds 3]`).

1. Staleness table for capacity planners: active orders per carrier -> effective poll period
   (seconds between two polls of the same order) under the contract quotas and intervals,
   FedEx batching (30 numbers per request) counted. Pure arithmetic from the scheduler.
2. Throughput on one core: a private redis-server, the carrier sandbox (another process, its
   quotas lifted) and a SQLite store; every round advances every shipment one event, then
   polls all orders through the real Poller (parse + store + publish). Prints orders/s.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from types import SimpleNamespace

import httpx

from bench.lib import free_port, stack
from ordertrack.commands.capacity import format_period
from ordertrack.config import load
from ordertrack.devtools.processes import ProcessGroup, wait_http_ok
from ordertrack.gateway.main import build_gateway, carriers_to_poll
from ordertrack.gateway.scheduler import effective_period, spacing
from ordertrack.gateway.settings import SETTINGS
from ordertrack.sandbox import (
    DHL_API_KEY,
    FEDEX_CLIENT_ID,
    FEDEX_CLIENT_SECRET,
    UPS_CLIENT_ID,
    UPS_CLIENT_SECRET,
)

CONTRACT = {  # carrier: (interval s, requests/hour, numbers per request)
    "dhl": (60, 2000, 1),
    "fedex": (90, 1000, 30),
    "ups": (120, 500, 1),
}
LEVELS = (10, 50, 100, 500, 1_000, 5_000, 10_000, 50_000)


def staleness_table() -> str:
    lines = ["effective poll period (time between two polls of one order) by active orders:",
             f"{'active orders':>14} | " + " | ".join(f"{c:>12}" for c in CONTRACT)]
    for n in LEVELS:
        cells = [format_period(effective_period(n, iv, rate, batch))
                 for iv, rate, batch in CONTRACT.values()]
        lines.append(f"{n:>14,} | " + " | ".join(f"{cell:>12}" for cell in cells))
    lines.append("orders polled at the full interval, at most: " + ", ".join(
        f"{c} {int(rate * iv / 3600) * batch:,}" for c, (iv, rate, batch) in CONTRACT.items()))
    lines.append("request spacing at 1,000 orders: " + ", ".join(
        f"{c} {spacing(1000, iv, rate, batch):.2f} s" for c, (iv, rate, batch) in CONTRACT.items()))
    return "\n".join(lines)


def bench_settings(sandbox: str, redis_url: str, db_url: str) -> SimpleNamespace:
    """`ordertrack poll`'s settings against the sandbox, every quota lifted."""
    lifted = str(10**9)
    return load(SETTINGS, environ={
        "REDIS_URL": redis_url, "DATABASE_URL": db_url, "REPLICA_NAME": "bench",
        "DHL_QUOTA_PER_HOUR": lifted, "DHL_BURST_PER_MINUTE": lifted,
        "FEDEX_QUOTA_PER_HOUR": lifted, "UPS_QUOTA_PER_HOUR": lifted,
        "DHL_API_URL": sandbox, "DHL_API_KEY": DHL_API_KEY,
        "FEDEX_API_URL": sandbox, "FEDEX_CLIENT_ID": FEDEX_CLIENT_ID,
        "FEDEX_CLIENT_SECRET": FEDEX_CLIENT_SECRET,
        "UPS_API_URL": sandbox, "UPS_CLIENT_ID": UPS_CLIENT_ID,
        "UPS_CLIENT_SECRET": UPS_CLIENT_SECRET})


async def throughput(sandbox: str, redis_url: str, db_url: str, carrier: str, orders: int,
                     rounds: int, concurrency: int) -> list[float]:
    from ordertrack.models import Order

    settings = bench_settings(sandbox, redis_url, db_url)
    chosen = [c for c in carriers_to_poll(settings) if c.carrier == carrier]
    gateway = await build_gateway(settings, chosen)
    poller, metrics = gateway.poller, gateway.metrics
    client = gateway.loops[0].client
    prefix = "JD0146" if carrier == "dhl" else "7948"
    store = poller.store
    batch = client.batch_size
    all_orders = [Order(f"bench_{carrier}_{i}", "user_bench", carrier, f"{prefix}{i:08d}")
                  for i in range(orders)]
    for order in all_orders:
        await store.add_order(order)
    batches = [all_orders[i:i + batch] for i in range(0, orders, batch)]
    slots = asyncio.Semaphore(concurrency)

    async def one(group):
        async with slots:
            await poller.poll_batch(carrier, client, group)

    rates = []
    async with httpx.AsyncClient() as admin:
        for round_no in range(rounds + 1):
            if round_no:  # round 0 creates the shipments (first event each)
                (await admin.post(f"{sandbox}/_admin/advance",
                                  json={"carrier": carrier, "steps": 1})).raise_for_status()
            before = sum(s.value for s in _samples(metrics, "published"))
            start = time.perf_counter()
            await asyncio.gather(*(one(group) for group in batches))
            elapsed = time.perf_counter() - start
            published = sum(s.value for s in _samples(metrics, "published")) - before
            if round_no:
                rates.append(orders / elapsed)
                print(f"  {carrier} round {round_no}: {orders} orders in {elapsed:.2f} s = "
                      f"{orders / elapsed:,.0f} orders/s ({published:.0f} events published)")
    await gateway.aclose()
    return rates


def _samples(metrics, name):
    counter = getattr(metrics, name)
    return [s for m in counter.collect() for s in m.samples if s.name.endswith("_total")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    print(staleness_table())
    print()
    with stack("bench_gateway_") as world:
        port = free_port()
        group = ProcessGroup()
        group.start("sandbox", "--port", str(port))
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http_ok(f"{url}/_admin/health")
            httpx.post(f"{url}/_admin/config", json={
                "dhl_quota_per_hour": 10**8, "dhl_quota_per_minute": 10**8,
                "fedex_quota_per_hour": 10**8, "ups_quota_per_hour": 10**8,
            }).raise_for_status()
            if hasattr(os, "sched_setaffinity"):  # this process only, after the children
                os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
            print(f"throughput (one gateway process on one core; sandbox, redis in others; "
                  f"{args.orders} orders, concurrency {args.concurrency}):")
            for carrier in ("dhl", "fedex"):
                rates = asyncio.run(throughput(
                    url, world.redis_url, f"sqlite:///{world.workdir}/{carrier}.db", carrier,
                    args.orders, args.rounds, args.concurrency))
                print(f"  {carrier}: best {max(rates):,.0f} orders/s "
                      f"(parsed + stored + published, one new event each)")
        finally:
            group.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
