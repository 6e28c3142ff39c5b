"""Affinity at the edge with PUBSUB_MODE=sharded (issue 22, item 5): does hashing connections by
order id at the load balancer lower Redis's work and the subscription churn? One run.

PODS sharded pods (each on its own port) behind nginx (from Debian, as `make bench-peers`
installs it), CONNECTIONS watchers, WATCHERS of them per order, RATE updates/s through
publish.lua, a private redis-server. Each balancer in turn, pods restarted, the same clients
and orders: `round-robin` (what a Kubernetes Service or a plain balancer does), `random` and `hash`
(nginx `hash $order_id consistent`, the local stand-in for Kong's upstream
`hash_on: uri_capture`, deploy/kong.yaml). Per balancer: the pods' shard subscriptions per
order, Redis sends per update (the pods' messages read over the updates published), the
connections per pod, the channels subscribed per connection opened (each arrival on a pod
that does not follow its order yet costs an SSUBSCRIBE'd channel: the churn), and delivery
p50/p99 (through nginx).

    python -m bench.bench_affinity [--pods 3] [--connections 6000] [--watchers 3] [--rate 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.lib import (
    Feeder,
    generate_key_pair,
    markdown,
    metric_sum,
    percentile,
    scrape,
    start_pod,
)
from bench.loadgen import LoadGenerator
from ordertrack import redis_connect
from ordertrack.devtools.processes import die_with, free_port, stop_process, wait_for
from ordertrack.devtools.redis_server import RedisServer

#: nginx's upstream balancing per name: round-robin (its default, a Kubernetes Service's way),
#: random (arrivals in no order), hash (affinity by order id)
BALANCERS = {"round-robin": "", "random": "random;", "hash": "hash $order_id consistent;"}

NGINX_CONF = """daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 20000;
error_log {workdir}/nginx-error.log warn;
pid {workdir}/nginx.pid;
events {{ worker_connections 19000; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/client_body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    upstream pods {{
        {balance}
{servers}
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location ~ "^/ws/orders/(?<order_id>[^/]{{1,128}})/track$" {{
            proxy_pass http://pods;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header Host $host;
            proxy_read_timeout 1h;
            proxy_buffering off;
        }}
    }}
}}
"""


def start_nginx(workdir: Path, port: int, pod_ports: list[int], balance: str) -> subprocess.Popen:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    servers = "\n".join(f"        server 127.0.0.1:{p};" for p in pod_ports)
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(workdir=workdir, port=port, servers=servers, balance=balance))
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            preexec_fn=die_with(os.getpid()))

    def listening() -> bool:
        import socket

        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    wait_for(listening, 10, what=f"nginx on {port}")
    return proc


def pods_sum(pods, metric: str) -> list[float]:
    return [metric_sum(scrape(m), metric) or 0.0 for _, _, m in pods]


async def run_balancer(name: str, args, redis_url: str, workdir: Path, private_pem: bytes,
                       public_path: Path) -> dict:
    pods = [start_pod(redis_url, public_path, args.connections, 30.0,
                      workdir / f"{name}-pod{i}.log", name=f"{name}-pod{i}",
                      env={"PUBSUB_MODE": "sharded"})
            for i in range(args.pods)]
    port = free_port()
    (workdir / name).mkdir()
    nginx = start_nginx(workdir / name, port, [p for _, p, _ in pods], BALANCERS[name])
    orders = args.connections // args.watchers
    feeder = Feeder(redis_url, orders, "sharded", args.seq)
    gen = LoadGenerator("127.0.0.1", port, private_pem, args.connections,
                        watchers_per_order=args.watchers)
    result: dict = {"balancer": name}
    try:
        opened = gen.open(args.connections)
        result["connections_open"] = opened["open"]

        def settled() -> bool:
            return sum(pods_sum(pods, "ordertrack_ws_active_connections")) >= opened["open"]
        wait_for(settled, 30, what="every connection acked on its pod")
        subscriptions = pods_sum(pods, "ordertrack_ws_redis_shard_subscriptions")
        result["connections_per_pod"] = [int(c) for c in pods_sum(pods, "ordertrack_ws_active_connections")]
        result["subscriptions_per_order"] = round(sum(subscriptions) / orders, 2)
        # every subscription was one SSUBSCRIBE'd channel: the subscribe work per arrival
        result["subscriptions_per_connection"] = round(sum(subscriptions) / opened["open"], 2)
        gen.stats(reset=True)
        before = sum(pods_sum(pods, "ordertrack_ws_redis_messages_total"))
        published_before = feeder.published
        started = time.monotonic()
        await feeder.run(args.rate, args.hold)
        elapsed = time.monotonic() - started
        await asyncio.sleep(1.0)  # the last updates reach their clients before the count
        stats = gen.stats(reset=True)
        published = feeder.published - published_before
        read = sum(pods_sum(pods, "ordertrack_ws_redis_messages_total")) - before
        lat = sorted(latency for _, latency in stats["latencies"])
        result.update({
            "updates_per_s": round(published / elapsed),
            "redis_sends_per_update": round(read / published, 2) if published else None,
            "delivered_per_update": round(stats["updates"] / published, 2) if published else None,
            "delivery_p50_ms": round(percentile(lat, 50) * 1000, 2) if lat else None,
            "delivery_p99_ms": round(percentile(lat, 99) * 1000, 2) if lat else None,
        })
    finally:
        gen.close()
        stop_process(nginx)
        for proc, _, _ in pods:
            stop_process(proc)
        await redis_connect.close_client(feeder.redis)
    return result


def figures(results: list[dict]) -> str:
    names = [r["balancer"] for r in results]
    rows = [
        ("connections per pod", "connections_per_pod"),
        ("shard subscriptions per order (all pods)", "subscriptions_per_order"),
        ("updates/s published", "updates_per_s"),
        ("Redis sends per update (pods' messages read)", "redis_sends_per_update"),
        ("frames delivered per update", "delivered_per_update"),
        ("delivery p50 / p99 ms (through nginx)", ("delivery_p50_ms", "delivery_p99_ms")),
        ("channels subscribed per connection opened (subscription churn)", "subscriptions_per_connection"),
    ]
    table = []
    for label, key in rows:
        if isinstance(key, tuple):
            table.append([label, *(f"{r[key[0]]} / {r[key[1]]}" for r in results)])
        else:
            table.append([label, *(str(r[key]) for r in results)])
    return markdown(["figure", *names], *table)


async def main_async(args) -> list[dict]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-affinity-"))
    redis = RedisServer(workdir / "redis", maxclients=args.connections + 1000, die_with_parent=True)
    redis.start()
    try:
        private_pem, public_path = generate_key_pair(workdir)
        args.seq = {}
        return [await run_balancer(name, args, redis.url, workdir, private_pem, public_path)
                for name in args.balancers.split(",")]
    finally:
        redis.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=3)
    parser.add_argument("--connections", type=int, default=6000)
    parser.add_argument("--watchers", type=int, default=3, help="watchers per order")
    parser.add_argument("--rate", type=float, default=300.0, help="updates/s over the orders")
    parser.add_argument("--hold", type=float, default=20.0)
    parser.add_argument("--balancers", default="round-robin,random,hash")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    results = asyncio.run(main_async(args))
    print(f"PODS={args.pods} CONNECTIONS={args.connections} WATCHERS/ORDER={args.watchers} "
          f"RATE={args.rate}/s HOLD={args.hold}s (PUBSUB_MODE=sharded, "
          f"one redis-server, nginx in front)")
    print(figures(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
