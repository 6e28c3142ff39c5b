"""PUBSUB_MODE pattern vs sharded on a real 3-master Redis Cluster (issue 22), one run.

A 3-master cluster (a replica each), PODS pods sharing one port (REUSE_PORT: the kernel spreads
the connections), CONNECTIONS watchers (loadgen workers, one order each), RATE updates/s through
publish.lua. Each mode in turn (`pattern`, then `sharded`: the pods are restarted in it, the
publisher switched): establishment (connect -> connection_ack, a sample of fresh orders),
delivery p50/p99 (publish -> client), what Redis sent (the pods' messages read, each master's
output bytes, the cluster bus's publish messages), each pod's messages read and read CPU. Then,
sharded, during the hold: a slot range migrated (`redis-cli --cluster reshard`) and a master
killed: updates lost / duplicated (received vs published x watchers) and time to normal.

    python -m bench.bench_sharded [--pods 3] [--connections 3000] [--rate 300] [--hold 20]

Prints the figures as a markdown table (BENCHMARKS.md) and the JSON (`--json FILE`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import redis as sync_redis

from bench.lib import (
    Feeder,
    cpu_seconds,
    generate_key_pair,
    make_token,
    markdown,
    metric_sum,
    order_id,
    percentile,
    scrape,
    start_pod,
    ws_connect,
)
from bench.loadgen import LoadGenerator
from ordertrack import redis_connect
from ordertrack.devtools.processes import free_port, stop_process
from ordertrack.devtools.redis_topologies import ClusterTopology


class Cluster:
    def __init__(self, workdir: Path):
        self.topology = ClusterTopology(workdir, replicas=1)

    def node_stats(self) -> dict[int, dict]:
        out = {}
        for port in self.topology.master_ports():
            client = sync_redis.Redis(port=port, decode_responses=True)
            try:
                stats = client.info("stats")
                info = client.execute_command("CLUSTER INFO")
                out[port] = {"net_out": stats["total_net_output_bytes"],
                             "bus_publish": int(info.get("cluster_stats_messages_publish_sent", 0)),
                             "bus_publishshard": int(info.get("cluster_stats_messages_publishshard_sent", 0))}
            finally:
                client.close()
        return out


async def establishment(port: int, private_pem: bytes, first_index: int, count: int) -> list[float]:
    """connect -> connection_ack for `count` connections on orders no pod follows yet."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(private_pem, password=None)
    times = []
    for index in range(first_index, first_index + count):
        started = time.perf_counter()
        async with ws_connect(port, order_id(index), make_token(key, index), open_timeout=10) as ws:
            ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert ack["event"] == "connection_ack", ack
            times.append(time.perf_counter() - started)
    return times


def ms(values: list[float], pct: float) -> float:
    return round(percentile(sorted(values), pct) * 1000, 2) if values else float("nan")


async def run_mode(mode: str, args, cluster: Cluster, workdir: Path, private_pem: bytes,
                   public_path: Path) -> dict:
    os.environ["PUBSUB_MODE"] = mode
    port = free_port()
    pods = [start_pod(cluster.topology.url, public_path, args.connections, 30.0,
                      workdir / f"{mode}-pod{i}.log", shared_port=port, name=f"{mode}-pod{i}")
            for i in range(args.pods)]
    feeder = Feeder(cluster.topology.url, args.connections, mode, args.seq)
    gen = LoadGenerator("127.0.0.1", port, private_pem, args.connections)
    result: dict = {"mode": mode}
    try:
        opened = gen.open(args.connections)
        result["connections_open"] = opened["open"]
        result["connect_failures"] = opened["failures"]
        await asyncio.sleep(2.0)  # the ramp's admissions settle
        # establishment on fresh orders (sharded: a subscribe round trip before the ack)
        est = await establishment(port, private_pem, 10_000_000, args.establish)
        result["establish_p50_ms"], result["establish_p99_ms"] = ms(est, 50), ms(est, 99)
        gen.stats(reset=True)
        before_pods = [(metric_sum(scrape(m), "ordertrack_ws_redis_messages_total") or 0,
                        cpu_seconds(p.pid)) for p, _, m in pods]
        before_nodes = cluster.node_stats()
        started = time.monotonic()
        await feeder.run(args.rate, args.hold)
        elapsed = time.monotonic() - started
        await asyncio.sleep(1.0)
        stats = gen.stats(reset=True)
        after_pods = [(metric_sum(scrape(m), "ordertrack_ws_redis_messages_total") or 0,
                       cpu_seconds(p.pid)) for p, _, m in pods]
        after_nodes = cluster.node_stats()
        lat = [latency for _, latency in stats["latencies"]]
        reads = [a[0] - b[0] for a, b in zip(after_pods, before_pods, strict=True)]
        cpus = [a[1] - b[1] for a, b in zip(after_pods, before_pods, strict=True)]
        result.update({
            "published_per_s": round(feeder.published / elapsed),
            "delivered": stats["updates"],
            "delivery_p50_ms": ms(lat, 50), "delivery_p99_ms": ms(lat, 99),
            "redis_sends_per_s": round(sum(reads) / elapsed),
            "pod_messages_read_per_s": [round(r / elapsed) for r in reads],
            "pod_cpu_percent": [round(c / elapsed * 100, 1) for c in cpus],
            "master_net_out_kib_per_s": {str(port): round((after_nodes[port]["net_out"]
                                                          - before_nodes[port]["net_out"]) / elapsed / 1024, 1)
                                         for port in after_nodes},
            "bus_publish_per_s": round(sum(after_nodes[p]["bus_publish"] - before_nodes[p]["bus_publish"]
                                           for p in after_nodes) / elapsed),
        })
        if mode == "sharded" and args.faults:
            result["faults"] = await faults(args, cluster, feeder, gen, pods)
    finally:
        gen.close()
        for proc, _, _ in pods:
            stop_process(proc)
        await redis_connect.close_client(feeder.redis)
    return result


async def faults(args, cluster: Cluster, feeder: Feeder, gen: LoadGenerator, pods) -> dict:
    """A slot range migrated, then a master killed, while updates flow; then how long until every
    published update reached its watcher, and how many never did / came twice."""
    topology = cluster.topology
    gen.stats(reset=True)
    published_before = feeder.published
    masters = topology.master_ports()
    feed = asyncio.create_task(feeder.run(args.rate, args.hold))
    await asyncio.sleep(args.hold / 4)
    reshard_started = time.monotonic()
    await asyncio.to_thread(topology.reshard, masters[0], masters[1], 500)
    reshard_s = time.monotonic() - reshard_started
    await asyncio.sleep(args.hold / 4)
    victim = masters[2]
    killed_at = time.monotonic()
    topology.kill(victim)
    await asyncio.to_thread(topology.wait_failed_over, victim, 60)
    failover_s = time.monotonic() - killed_at
    await feed
    fed_at = time.monotonic()
    published = feeder.published - published_before
    # every published update delivered (one watcher per order): how long after the last publish
    delivered = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        delivered += gen.stats(reset=True)["updates"]
        if delivered >= published:
            break
        await asyncio.sleep(0.2)
    normal_s = time.monotonic() - fed_at
    return {"published": published, "delivered": delivered,
            "lost": max(0, published - delivered), "duplicated": max(0, delivered - published),
            "reshard_500_slots_s": round(reshard_s, 1), "failover_s": round(failover_s, 1),
            "last_publish_to_all_delivered_s": round(normal_s, 1),
            "publish_retries": feeder.failed_attempts}


def figures(results: list[dict]) -> str:
    rows = [
        ("connections open", "connections_open"), ("updates/s published", "published_per_s"),
        ("Redis sends/s (pods' messages read)", "redis_sends_per_s"),
        ("each pod's messages read/s", "pod_messages_read_per_s"),
        ("cluster bus publish messages/s", "bus_publish_per_s"),
        ("each master's output KiB/s", "master_net_out_kib_per_s"),
        ("each pod's CPU %", "pod_cpu_percent"),
        ("establishment p50 / p99 ms", ("establish_p50_ms", "establish_p99_ms")),
        ("delivery p50 / p99 ms", ("delivery_p50_ms", "delivery_p99_ms")),
    ]
    lines = [markdown(["figure", *(r["mode"] for r in results)], *(
        [label, *(" / ".join(str(r.get(k)) for k in (key if isinstance(key, tuple) else (key,)))
                  for r in results)] for label, key in rows))]
    for r in results:
        if "faults" in r:
            lines.append(f"\n{r['mode']}, faults during the hold: {json.dumps(r['faults'])}")
    return "\n".join(lines)


async def main_async(args) -> list[dict]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-sharded-"))
    cluster = Cluster(workdir / "cluster")
    cluster.topology.start()
    private_pem, public_path = generate_key_pair(workdir)
    results = []
    args.seq = {}
    try:
        for mode in args.modes.split(","):
            results.append(await run_mode(mode, args, cluster, workdir, private_pem, public_path))
            print(json.dumps(results[-1]), file=sys.stderr)
    finally:
        cluster.topology.stop()
    print(f"PODS={args.pods} CONNECTIONS={args.connections} RATE={args.rate}/s HOLD={args.hold}s "
          f"(one order per connection, 3 masters + 3 replicas, {os.cpu_count()} cores)")
    print(figures(results))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=3)
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--hold", type=float, default=20.0)
    parser.add_argument("--establish", type=int, default=100,
                        help="connections timed from connect to connection_ack, per mode")
    parser.add_argument("--modes", default="pattern,sharded")
    parser.add_argument("--no-faults", dest="faults", action="store_false")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    results = asyncio.run(main_async(args))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    bad = sum(r.get("faults", {}).get("lost", 0) + r.get("faults", {}).get("duplicated", 0)
              for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())

