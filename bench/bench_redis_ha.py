"""Delivery latency through one push pod on a single Redis and on a three-master Redis Cluster.

Run: .venv/bin/python -m bench.bench_redis_ha [--clients 200] [--orders 50] [--events 2000]
     [--rate 400]

For each topology: a private redis-server (or cluster), one `ordertrack serve`, `--clients`
WebSocket clients over `--orders` orders; the gateway's own publish path
(`Publisher.publish` through `redis_connect.command_client`) sends `--events` updates at `--rate`
per second. Latency = the client reading the `tracking_update` minus the moment the publish
call started (so it includes the publish script's round trip). Prints a markdown table; the
failover figures come from the fault suite (`pytest tests/test_redis_ha.py -s`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import websockets

from ordertrack import redis_connect
from ordertrack.devtools.keys import generate_keys
from ordertrack.devtools.processes import ProcessGroup, free_port, wait_for
from ordertrack.devtools.redis_server import RedisServer
from ordertrack.devtools.redis_topologies import ClusterTopology
from ordertrack.gateway.publisher import Publisher
from ordertrack.models import StoredEvent

REPO = Path(__file__).resolve().parent.parent
SUBPROTOCOL = "vantage-tracking-v1"


async def run_one(url: str, workdir: Path, keys, clients: int, orders: int, events: int,
                  rate: float) -> list[float]:
    group = ProcessGroup()
    group.cwd = REPO
    port = free_port()
    group.start("serve", env={"REDIS_URL": url, "PORT": str(port), "HOST": "127.0.0.1",
                              "METRICS_PORT": "0", "JWT_PUBLIC_KEY": str(keys.public_path),
                              "MAX_CONNECTIONS_PER_USER": str(clients), "LOG_LEVEL": "warning"},
                log=workdir / "pod.log")
    started: dict[tuple[str, int], float] = {}
    latencies: list[float] = []
    expected = events * clients // orders
    done = asyncio.Event()
    try:
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200,
                 20, what="pod ready")
        order_ids = [f"ord_bench{i}" for i in range(orders)]
        redis = redis_connect.command_client(redis_connect.parse_redis_url(url))
        publisher = Publisher(redis)
        # warm-up, not measured: the cluster's slot map, the script on every node (seq 1)
        for order_id in order_ids:
            await publisher.publish(order_id, "dhl", update(order_id, 1))
        sockets = []
        for i in range(clients):
            order_id = order_ids[i % orders]
            ws = await websockets.connect(
                f"ws://127.0.0.1:{port}/ws/orders/{order_id}/track", subprotocols=[SUBPROTOCOL],
                additional_headers={"Authorization": f"Bearer {keys.token('bench', order_id)}"})
            await ws.recv()  # connection_ack
            sockets.append((order_id, ws))

        async def read(order_id, ws):
            async for raw in ws:
                message = json.loads(raw)
                if message["event"] == "tracking_update":
                    latencies.append(time.perf_counter() - started[(order_id, message["data"]["seq"])])
                    if len(latencies) >= expected:
                        done.set()

        readers = [asyncio.create_task(read(order_id, ws)) for order_id, ws in sockets]
        try:
            for n in range(events):
                order_id = order_ids[n % orders]
                seq = n // orders + 2
                started[(order_id, seq)] = time.perf_counter()
                await publisher.publish(order_id, "dhl", update(order_id, seq))
                await asyncio.sleep(1 / rate)
            try:
                await asyncio.wait_for(done.wait(), 10)
            except TimeoutError:
                pass  # reported as frames delivered < expected
        finally:
            await redis_connect.close_client(redis)
            for task in readers:
                task.cancel()
            for _, ws in sockets:
                await ws.close()
    finally:
        group.stop_all()
    return latencies


def update(order_id: str, seq: int) -> StoredEvent:
    return StoredEvent(order_id, seq, "in_transit", "Newark NJ", "2025-10-03T14:00:00Z",
                       "2025-10-04T18:00:00Z", raw={})


def summary(name: str, latencies: list[float], expected: int) -> str:
    ordered = sorted(latencies)
    p = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return (f"| {name} | {len(latencies)}/{expected} | {statistics.median(ordered) * 1000:.2f} | "
            f"{p(0.99):.2f} | {ordered[-1] * 1000:.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--orders", type=int, default=50)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=400)
    args = parser.parse_args()
    expected = args.events * args.clients // args.orders
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        keys = generate_keys(workdir / "keys")
        single = RedisServer(workdir / "single")
        single.start()
        try:
            (workdir / "s").mkdir()
            latencies = asyncio.run(run_one(single.url, workdir / "s", keys, args.clients,
                                            args.orders, args.events, args.rate))
            rows.append(summary("single Redis", latencies, expected))
        finally:
            single.stop()
        cluster = ClusterTopology(workdir / "cluster")
        cluster.start()
        try:
            (workdir / "c").mkdir()
            latencies = asyncio.run(run_one(cluster.url, workdir / "c", keys, args.clients,
                                            args.orders, args.events, args.rate))
            rows.append(summary("3-master cluster", latencies, expected))
        finally:
            cluster.stop()
    print(f"{args.clients} clients, {args.orders} orders, {args.events} events at {args.rate:g}/s, one pod")
    print("| Redis | frames delivered | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
