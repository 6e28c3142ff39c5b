"""Carrier push bench (run by hand: `python -m bench.bench_ingest [--events 3000 --share 0.7]`).

1. The staleness table of bench_gateway recomputed with push: a share of each carrier's
   active orders is pushed (its scans arrive within a second; it is polled only every
   PUSH_SAFETY_NET_SECONDS as a safety net) and the quota goes to the others. Pure arithmetic
   from the scheduler (`period_with_push`).
2. Ingest throughput on one core: a real `ordertrack ingest` process pinned to one core, a
   private redis-server and a store (`--store sqlite`: a fresh SQLite file; `--store
   postgres`: a fresh schema on `--pg-url`, dropped after); signed FedEx deliveries (one new
   scan each, over many orders) are posted concurrently. Prints verified + stored +
   published events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from bench.bench_gateway import CONTRACT, LEVELS
from bench.lib import cpu_seconds, free_port, stack, stop_process
from ordertrack.commands.capacity import format_period
from ordertrack.devtools.postgres import private_schema
from ordertrack.gateway.scheduler import period_with_push
from ordertrack.ingest.auth import fedex_signature

SECRET = "bench-secret"
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def staleness_table(share: float, safety_net: float) -> str:
    lines = [f"effective poll period of orders WITHOUT push, {share:.0%} of orders pushed "
             f"(those polled every {format_period(safety_net)} as a safety net):",
             f"{'active orders':>14} | " + " | ".join(f"{c:>12}" for c in CONTRACT)]
    for n in LEVELS:
        pushed = round(n * share)
        cells = [format_period(period_with_push(n - pushed, pushed, iv, safety_net, rate, batch))
                 for iv, rate, batch in CONTRACT.values()]
        lines.append(f"{n:>14,} | " + " | ".join(f"{cell:>12}" for cell in cells))
    return "\n".join(lines)


def fedex_delivery(number: str, index: int) -> tuple[bytes, dict[str, str]]:
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 3600 + index))
    body = json.dumps({"eventId": f"{number}-{index}", "trackingNumber": number,
                       "trackResults": [{"scanEvents": [{
                           "date": when + "-00:00", "eventType": "AR",
                           "eventDescription": "Arrived at FedEx location",
                           "scanLocation": {"city": "MEMPHIS", "stateOrProvinceCode": "TN",
                                            "countryCode": "US"}}]}]}).encode()
    return body, {"fdx-signature": fedex_signature(body, SECRET),
                  "Content-Type": "application/json"}


def raw_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {len(body)}\r\n"
            f"{head}\r\n").encode() + body


async def fire(host: str, port: int, path: str, orders: int, events: int,
               concurrency: int) -> tuple[float, int]:
    """Post the deliveries over `concurrency` kept-alive connections, one request in flight
    on each: raw HTTP/1.1, so that the client costs the ingest's core little (an httpx client
    took twice the ingest's CPU time)."""
    requests = [raw_request(host, port, path, *fedex_delivery(f"FXB{i % orders:05d}", i))
                for i in range(events)]
    pending = iter(requests)
    ok = 0

    async def connection() -> None:
        nonlocal ok
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for request in pending:
                writer.write(request)
                status, *lines = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
                length = next(int(line.split(b":", 1)[1]) for line in lines
                              if line.lower().startswith(b"content-length:"))
                body = await reader.readexactly(length)
                ok += status.split(b" ", 2)[1] == b"200" and json.loads(body)["stored"] == 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return time.perf_counter() - start, ok


@contextmanager
def store_url(kind: str, tmp: Path, pg_url: str):
    """A fresh, empty store of `kind`: a SQLite file in `tmp`, or a schema of its own."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp}/ingest.db"
        return
    with private_schema(pg_url, "bench") as url:
        yield url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--orders", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--share", type=float, default=0.7, help="share of orders pushed")
    parser.add_argument("--safety-net", type=float, default=1800.0)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--pg-url", default=PG_URL, help="PostgreSQL for --store postgres")
    args = parser.parse_args()

    print(staleness_table(args.share, args.safety_net))
    print()
    from ordertrack.devtools.processes import wait_http_ok
    from ordertrack.models import Order
    from ordertrack.store import open_store

    with stack("bench_ingest_") as world, store_url(args.store, world.workdir, args.pg_url) as db:

        async def seed() -> None:
            async with open_store(db) as store:
                for i in range(args.orders):
                    await store.add_order(Order(f"ord_{i}", "user_b", "fedex", f"FXB{i:05d}"))

        asyncio.run(seed())
        port = free_port()
        env = {**os.environ, "REDIS_URL": world.redis_url, "DATABASE_URL": db,
               "INGEST_HOST": "127.0.0.1", "INGEST_PORT": str(port),
               "FEDEX_WEBHOOK_SECRET": SECRET, "LOG_LEVEL": "warning"}
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        pin = ["taskset", "-c", str(cores[-1])] if len(cores) > 1 else []
        ingest = subprocess.Popen([*pin, sys.executable, "-m", "ordertrack", "ingest"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_http_ok(f"http://127.0.0.1:{port}/healthz")
            cpu_before, client_before = cpu_seconds(ingest.pid), time.process_time()
            elapsed, ok = asyncio.run(fire("127.0.0.1", port, "/webhooks/fedex", args.orders,
                                           args.events, args.concurrency))
            cpu = cpu_seconds(ingest.pid) - cpu_before
            client_cpu = time.process_time() - client_before
            print(f"ingest on one core, {args.store}: {args.events} signed FedEx deliveries over "
                  f"{args.orders} orders, concurrency {args.concurrency}: {elapsed:.2f} s = "
                  f"{args.events / elapsed:,.0f} events/s verified + stored + published "
                  f"({ok} stored as new); ingest used {cpu:.2f} CPU s = "
                  f"{args.events / cpu:,.0f} events per CPU second; the client {client_cpu:.2f} "
                  f"CPU s (load average {os.getloadavg()[0]:.1f})")
        finally:
            stop_process(ingest, timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
