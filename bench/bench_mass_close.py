"""Healthy watchers' delivery latency while one fan-out evicts thousands of slow consumers.

Run: .venv/bin/python -m bench.bench_mass_close [--slow 2000] [--healthy 50] [--rate 200]
     [--pod-pythonpath DIR]   (the pod's PYTHONPATH: e.g. another tree's src, for a before/after)

A private redis-server behind `ordertrack.devtools.delay_proxy` (commands only: pub/sub flows
undelayed), one `ordertrack serve` (WS_MAX_PENDING_BYTES 16384, HEARTBEAT_TIMEOUT_SECONDS 2).
`--healthy` WebSocket clients (the `websockets` library) watch one order each and are acked;
then the proxy holds every command for 120 s, so the `--slow` raw-socket clients that connect
next are held before their ack, and none of them ever reads again. The gateway's publish path
(`Publisher.publish`, straight to Redis) sends `--rate` updates/s round-robin to the healthy
orders; latency = the client reading the update minus the publish call's start.

Phase `reference`: the slow clients connected and idle (no eviction) for `--reference` s.
Phase `eviction`: three ~6 KB updates to the slow clients' one order: the third takes every
held backlog past 16 KB in the same fan-out, so all of them are closed 1013 at once (close
frame, disconnect and cleanup: hub, registry release, the `disconnect` line, metrics; their
sockets take the close frame unread, so the pod's side ends at once). The phase lasts
`--window` seconds from the third update, or until every slow client's `disconnect` line is in
the pod's log if that is later. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import time
from pathlib import Path

import redis.asyncio as aioredis

from bench.lib import (
    Stack,
    bench_location,
    latency_summary,
    markdown,
    parse_bench_location,
    raw_upgrade,
    stack,
    ws_connect,
)
from ordertrack.devtools.delay_proxy import DelayProxy
from ordertrack.gateway.publisher import Publisher
from ordertrack.models import StoredEvent

SLOW_ORDER = "ord_mass_slow"


def event(order_id: str, seq: int, location: str) -> StoredEvent:
    return StoredEvent(order_id, seq, "in_transit", location, "2026-12-06T10:00:00Z")


class LineCounter:
    """Counts the pod's `disconnect` lines for slow consumers, reading only what the log gained
    since the last call (a few KB: scanning the whole log, or starting a grep, each time held
    up the healthy clients' reads, and so their latency, for milliseconds)."""

    NEEDLE = b'"reason":"slow_consumer"'

    def __init__(self, log: Path):
        self.log = log
        self.offset = 0
        self.count = 0
        self.tail = b""

    def __call__(self) -> int:
        with self.log.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        data, self.tail = self.tail + data, b""
        cut = data.rfind(b"\n") + 1
        data, self.tail = data[:cut], data[cut:]
        self.count += data.count(self.NEEDLE)
        return self.count


async def run(args, world: Stack, proxy: DelayProxy) -> dict:
    _, port, _ = world.pod(
        proxy.url, WS_MAX_PENDING_BYTES=16384, HEARTBEAT_TIMEOUT_SECONDS=2,
        REDIS_SUBSCRIBE_TIMEOUT_SECONDS=300, REDIS_SUBSCRIPTION_DEADLINE_SECONDS=300,
        LOG_LEVEL="info", PYTHONPATH=args.pod_pythonpath)
    direct = aioredis.Redis(port=world.redis_port)
    publisher = Publisher(direct)
    samples: list[tuple[float, float]] = []  # (received at, latency)
    silent: list[socket.socket] = []
    healthy = []
    try:
        for i in range(args.healthy):
            ws = await ws_connect(port, f"ord_mass_h{i}", world.keys.token(
                f"mass_h{i}", f"ord_mass_h{i}", alg="ES256"), open_timeout=30)
            assert json.loads(await ws.recv())["event"] == "connection_ack"
            healthy.append(ws)

        async def read(ws) -> None:
            async for raw in ws:
                message = json.loads(raw)
                if message["event"] == "tracking_update":
                    sent = parse_bench_location(message["data"]["location"])
                    if sent is not None:
                        now = time.time()
                        samples.append((now, now - sent))

        readers = [asyncio.create_task(read(ws)) for ws in healthy]
        proxy.set_delay(120)  # admission now waits: the slow ones stay held before their ack
        tokens = [world.keys.token(f"mass_s{i}", SLOW_ORDER, alg="ES256") for i in range(args.slow)]
        for start in range(0, args.slow, 200):
            silent += await asyncio.gather(*(raw_upgrade(port, SLOW_ORDER, t)
                                             for t in tokens[start:start + 200]))

        stop = asyncio.Event()
        seqs = dict.fromkeys(range(args.healthy), 0)

        async def publish_healthy() -> None:
            n = 0
            period = 1 / args.rate
            next_at = time.monotonic()
            while not stop.is_set():
                i = n % args.healthy
                seqs[i] += 1
                await publisher.publish(f"ord_mass_h{i}", "dhl",
                                        event(f"ord_mass_h{i}", seqs[i], bench_location(time.time())))
                n += 1
                next_at += period
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))

        publishing = asyncio.create_task(publish_healthy())
        await asyncio.sleep(1.0)  # warm-up, not measured
        ref_start = time.time()
        await asyncio.sleep(args.reference)
        ref_end = time.time()
        for seq in (1, 2, 3):
            await publisher.publish(SLOW_ORDER, "dhl", event(SLOW_ORDER, seq, "x" * 6000))
        evict_start = time.time()
        deadline = time.monotonic() + 60
        slow_disconnects = LineCounter(world.workdir / "pod.log")
        while slow_disconnects() < args.slow and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        evicted = slow_disconnects()
        evict_done = time.time()
        await asyncio.sleep(max(0.0, evict_start + args.window - time.time()))
        evict_end = max(evict_start + args.window, evict_done)
        stop.set()
        await publishing
        for task in readers:
            task.cancel()

        def window(start: float, end: float) -> dict:
            return latency_summary([(at, lat) for at, lat in samples if start <= at < end])

        return {"reference": window(ref_start, ref_end), "eviction": window(evict_start, evict_end),
                "evicted": evicted, "eviction_seconds": round(evict_done - evict_start, 2)}
    finally:
        for ws in healthy:
            await ws.close()
        for sock in silent:
            sock.close()
        await direct.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", type=int, default=2000)
    parser.add_argument("--healthy", type=int, default=50)
    parser.add_argument("--rate", type=float, default=200.0, help="healthy updates per second")
    parser.add_argument("--reference", type=float, default=4.0, help="seconds of the no-eviction phase")
    parser.add_argument("--window", type=float, default=3.0,
                        help="seconds of the eviction phase at least (until every slow client's line)")
    parser.add_argument("--pod-pythonpath", default=os.environ.get("PYTHONPATH", ""))
    args = parser.parse_args()
    with stack() as world:
        proxy = DelayProxy(world.redis_port, commands_only=True).start()
        try:
            result = asyncio.run(run(args, world, proxy))
        finally:
            world.stop_pods()
            proxy.stop()
    print(f"{args.slow} slow consumers evicted 1013 in one fan-out ({result['evicted']} "
          f"disconnect lines within {result['eviction_seconds']} s); {args.healthy} healthy "
          f"watchers, {args.rate:g} updates/s")
    print(markdown(["phase", "samples", "p50 ms", "p99 ms", "max ms"], *(
        [phase, s["count"], f"{s['p50_ms']:.1f}", f"{s['p99_ms']:.1f}", f"{s['max_ms']:.1f}"]
        for phase, s in ((p, result[p]) for p in ("reference", "eviction")))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
