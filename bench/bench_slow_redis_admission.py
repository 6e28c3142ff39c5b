"""Admission under a far-away Redis: how many new connections get their `connection_ack` or a
4002, and how long after their 101.

Run: .venv/bin/python -m bench.bench_slow_redis_admission [--delay 2] [--clients 20]
     [--spread 0.5] [--deadline 5] [--pod-pythonpath DIR (another tree's src: before/after)]

A private redis-server behind `ordertrack.devtools.delay_proxy` adding `--delay` seconds each
way, one `ordertrack serve` (REDIS_SUBSCRIBE_TIMEOUT_SECONDS `--deadline`). Once the pod is
ready the delay is switched on; one client connects first (Redis has been far away for a while),
then `--clients` WebSocket clients connect one after another over `--spread` seconds. Each
records its outcome (ack or close code) and the time from its 101 to it. Prints one markdown row.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections import Counter

import websockets

from bench.lib import markdown, stack, ws_connect
from ordertrack.devtools.delay_proxy import DelayProxy


async def outcome(port: int, token: str, order_id: str) -> tuple[str, float]:
    ws = await ws_connect(port, order_id, token, open_timeout=30)
    opened = time.monotonic()
    try:
        message = json.loads(await asyncio.wait_for(ws.recv(), 60))
        result = "ack" if message["event"] == "connection_ack" else message["event"]
        await ws.close()
    except websockets.ConnectionClosed as exc:
        result = str(exc.rcvd.code if exc.rcvd else 1006)
    return result, time.monotonic() - opened


async def run(args) -> tuple[Counter, list[float]]:
    with stack() as world:
        proxy = DelayProxy(world.redis_port).start()
        try:
            _, port, _ = world.pod(proxy.url, PYTHONPATH=args.pod_pythonpath,
                                   REDIS_SUBSCRIBE_TIMEOUT_SECONDS=args.deadline)
            tokens = [world.keys.token(f"slow_u{i}", f"ord_slow{i}", alg="ES256")
                      for i in range(args.clients + 1)]
            proxy.set_delay(args.delay)
            await outcome(port, tokens[-1], f"ord_slow{args.clients}")

            async def one(i: int) -> tuple[str, float]:
                await asyncio.sleep(args.spread * i / args.clients)
                return await outcome(port, tokens[i], f"ord_slow{i}")

            results = await asyncio.gather(*(one(i) for i in range(args.clients)))
        finally:
            world.stop_pods()
            proxy.stop()
    return Counter(r for r, _ in results), [t for _, t in results]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=2.0, help="seconds each way")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--spread", type=float, default=0.5)
    parser.add_argument("--deadline", type=float, default=5.0)
    parser.add_argument("--pod-pythonpath", default=os.environ.get("PYTHONPATH", ""))
    args = parser.parse_args()
    outcomes, times = asyncio.run(run(args))
    other = sum(n for r, n in outcomes.items() if r not in ("ack", "4002"))
    print(markdown(["delay each way", "clients", "acked", "4002", "other", "median s", "max s"],
                   [f"{args.delay:g} s", args.clients, outcomes["ack"], outcomes["4002"], other,
                    f"{statistics.median(times):.2f}", f"{max(times):.2f}"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
