"""REST fallback throughput: wrk against `GET /api/v2/orders/{id}/tracking` on one uvicorn worker.

Run by hand (needs `wrk` and `redis-server` on PATH):

    .venv/bin/python -m bench.bench_api [--seconds 10] [--connections 50] [--orders 100]

It starts a private redis-server, a SQLite store with `--orders` orders of 8 events each, one
`ordertrack api` process (uvloop + httptools, one worker) pinned to one core when possible,
and wrk (pinned to the other cores) with valid JWTs, round-robin over the orders. Prints
requests/s and latency percentiles; the target is >= 3,000 req/s and p99 < 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import time

from bench.lib import REPO, Stack, free_port, stack, stop_process
from ordertrack.devtools.processes import wait_http_ok

WRK_SCRIPT = """
local tokens = {%(tokens)s}
local paths = {%(paths)s}
local i = 0
request = function()
  i = i + 1
  local n = (i %% #paths) + 1
  return wrk.format("GET", paths[n], {["Authorization"] = "Bearer " .. tokens[n],
                                      ["X-Fallback-Reason"] = "websocket_disconnected"})
end
"""

EVENTS = [
    ("shipped", "Warehouse, Chicago IL"), ("in_transit", "Sort Facility, Columbus OH"),
    ("in_transit", "Hub, Pittsburgh PA"), ("in_transit", "Sort Facility, Harrisburg PA"),
    ("in_transit", "Hub, Allentown PA"), ("in_transit", "Distribution Center, Newark NJ"),
    ("in_transit", "Station, Queens NY"), ("out_for_delivery", "Local Delivery Vehicle, Brooklyn NY"),
]


async def seed(db_url: str, orders: int) -> list[str]:
    from ordertrack.models import Order, TrackingEvent
    from ordertrack.store import open_store

    store = await open_store(db_url)
    ids = []
    try:
        for n in range(orders):
            order_id = f"ord_bench_{n:05d}"
            await store.add_order(Order(order_id, f"user_{n}", "dhl", f"DHL{n:010d}"))
            await store.append_events(order_id, [
                TrackingEvent(status, location, f"2025-10-0{1 + i // 3}T{10 + i:02d}:00:00Z",
                              "2025-10-04T18:00:00Z")
                for i, (status, location) in enumerate(EVENTS)
            ])
            ids.append(order_id)
    finally:
        await store.close()
    return ids


def parse_wrk(output: str) -> dict[str, float]:
    """Requests/s and latency percentiles (ms) from `wrk --latency` output."""
    figures: dict[str, float] = {}
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if match:
        figures["rps"] = float(match.group(1))
    for pct, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", output,
                                       re.M):
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
        figures[f"p{pct}_ms"] = float(value) * scale
    match = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    figures["non_2xx"] = float(match.group(1)) if match else 0.0
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", default="10,50",
                        help="comma-separated wrk connection counts, one run each")
    parser.add_argument("--orders", type=int, default=100)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2

    with stack("bench_api_") as world:
        return measure(args, world)


def measure(args: argparse.Namespace, world: Stack) -> int:
    work, keys = world.workdir, world.keys
    db_url = f"sqlite:///{work / 'tracking.db'}"
    order_ids = asyncio.run(seed(db_url, args.orders))
    port = free_port()
    cores = sorted(os.sched_getaffinity(0))
    api_cmd = [sys.executable, "-m", "ordertrack", "api"]
    wrk_prefix: list[str] = []
    if len(cores) >= 2 and shutil.which("taskset"):
        api_cmd = ["taskset", "-c", str(cores[0]), *api_cmd]
        wrk_prefix = ["taskset", "-c", ",".join(map(str, cores[1:]))]
    env = dict(os.environ, API_HOST="127.0.0.1", API_PORT=str(port), DATABASE_URL=db_url,
               REDIS_URL=world.redis_url, JWT_PUBLIC_KEY=str(keys.public_path), LOG_LEVEL="warning")
    api = subprocess.Popen(api_cmd, env=env, cwd=REPO)
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/healthz")
        tokens = [keys.token(f"user_{n}", order_id, ttl=3600)
                  for n, order_id in enumerate(order_ids)]
        script = work / "tracking.lua"
        script.write_text(WRK_SCRIPT % {
            "tokens": ", ".join(f'"{t}"' for t in tokens),
            "paths": ", ".join(f'"/api/v2/orders/{o}/tracking"' for o in order_ids),
        })
        base = f"http://127.0.0.1:{port}"
        # warm-up: caches filled, tokens verified once
        subprocess.run([*wrk_prefix, "wrk", "-t1", "-c10", "-d2s", "-s", str(script), base],
                       check=True, capture_output=True)
        pinned = "pinned to 1 core" if wrk_prefix else "unpinned"
        print(f"REST tracking endpoint, one uvicorn worker ({pinned}), {args.orders} orders, "
              f"{args.seconds} s per run; targets: >= 3,000 req/s, p99 < 20 ms")
        for connections in [int(c) for c in args.connections.split(",") if c.strip()]:
            time.sleep(0.5)
            result = subprocess.run(
                [*wrk_prefix, "wrk", "-t1", f"-c{connections}", f"-d{args.seconds}s",
                 "--latency", "-s", str(script), base],
                check=True, capture_output=True, text=True)
            f = parse_wrk(result.stdout)
            print(f"  {connections:4d} connections: {f.get('rps', 0):8,.0f} req/s   "
                  f"p50 {f.get('p50_ms', 0):6.2f} ms  p90 {f.get('p90_ms', 0):6.2f} ms  "
                  f"p99 {f.get('p99_ms', 0):6.2f} ms   non-2xx {f['non_2xx']:.0f}")
        return 0
    finally:
        stop_process(api, timeout=10)


if __name__ == "__main__":
    sys.exit(main())
