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
import contextlib
import json
import time

from bench.lib import Stack, markdown, stack, summary, ws_connect
from ordertrack import redis_connect
from ordertrack.devtools.redis_topologies import ClusterTopology
from ordertrack.gateway.publisher import Publisher
from ordertrack.models import StoredEvent


async def run_one(world: Stack, url: str, name: str, clients: int, orders: int, events: int,
                  rate: float) -> list[float]:
    _, port, _ = world.pod(url, log=f"pod-{name}.log", MAX_CONNECTIONS_PER_USER=clients)
    try:
        return await deliveries(world, port, url, clients, orders, events, rate)
    finally:
        world.stop_pods()


async def deliveries(world: Stack, port: int, url: str, clients: int, orders: int, events: int,
                     rate: float) -> list[float]:
    started: dict[tuple[str, int], float] = {}
    latencies: list[float] = []
    expected = events * clients // orders
    done = asyncio.Event()
    order_ids = [f"ord_bench{i}" for i in range(orders)]
    redis = redis_connect.command_client(redis_connect.parse_redis_url(url))
    publisher = Publisher(redis)
    # warm-up, not measured: the cluster's slot map, the script on every node (seq 1)
    for order_id in order_ids:
        await publisher.publish(order_id, "dhl", update(order_id, 1))
    sockets = []
    for i in range(clients):
        order_id = order_ids[i % orders]
        ws = await ws_connect(port, order_id, world.keys.token("bench", order_id))
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
    return latencies


def update(order_id: str, seq: int) -> StoredEvent:
    return StoredEvent(order_id, seq, "in_transit", "Newark NJ", "2025-10-03T14:00:00Z",
                       "2025-10-04T18:00:00Z", raw={})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--orders", type=int, default=50)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=400)
    args = parser.parse_args()
    expected = args.events * args.clients // args.orders
    rows = []
    with stack() as world, contextlib.ExitStack() as topologies:
        for name, cluster in (("single Redis", None),
                              ("3-master cluster", ClusterTopology(world.workdir / "cluster"))):
            url = world.redis_url
            if cluster is not None:
                cluster.start()
                topologies.callback(cluster.stop)
                url = cluster.url
            latencies = asyncio.run(run_one(world, url, name.split()[0], args.clients,
                                            args.orders, args.events, args.rate))
            s = summary(latencies)
            rows.append([name, f"{s['count']}/{expected}", f"{s['p50_ms']:.2f}",
                         f"{s['p99_ms']:.2f}", f"{s['max_ms']:.2f}"])
    print(f"{args.clients} clients, {args.orders} orders, {args.events} events at {args.rate:g}/s, one pod")
    print(markdown(["Redis", "frames delivered", "p50 ms", "p99 ms", "max ms"], *rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
