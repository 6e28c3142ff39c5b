"""`make soak MINUTES=M`: a long run of one pod under steady load, churn, flag flips and a
Redis restart; exits non-zero on a lost event or a leak. Not part of the unit suite.

- N connections (`--connections`, default 5,000), 5 per order, one user each, opened through
  the real upgrade; every client checks its order's `seq`s: each once, without a gap (after
  `connection_ack`, or after a resume, the next update must be `seq + 1`).
- steady updates through the gateway's publish path (`Publisher.publish`: XADD + HSET +
  PUBLISH in one Lua call), a failed publish retried with the same `seq`;
- churn: a share of connections closes every second and reopens, half of them resuming
  (`last_seq`), half fresh (new baseline from the ack);
- flag flips (the Redis provider, as `ordertrack flag` does): FedEx orders switched off for a
  while (their clients get 4003 and reconnect with resume once it is back on);
- a Redis restart in the middle (SHUTDOWN with an append-only file, then the same port again).

Reports the pod's RSS at start, once churn has settled and at the end, events lost and
duplicated, disconnects by reason (the pod's metric), and after closing every client: the pod's
open connections and the users' registry slots left in Redis (both must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import redis.asyncio as aioredis
import websockets
from redis.exceptions import RedisError
from websockets.protocol import State

from bench.lib import (
    die_with_parent,
    free_port,
    generate_key_pair,
    metric_by_label,
    rss_kb,
    scrape,
    start_pod,
    stop_process,
    wait_until,
    ws_connect,
)
from ordertrack import redis_layout
from ordertrack.devtools.keys import mint
from ordertrack.gateway.publisher import Publisher
from ordertrack.models import StoredEvent
from ordertrack.redis_layout import FLAG_KEY

CARRIERS = ("dhl", "fedex", "ups")
#: RSS may grow this much between "churn settled" and the end before it counts as a leak
LEAK_TOLERANCE = 1.15
LEAK_SLACK_BYTES = 24 * 1024 * 1024


class Redis:
    """A private redis-server with an append-only file, restartable on the same port."""

    def __init__(self, workdir: Path):
        self.workdir, self.port, self.proc = workdir, free_port(), None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.workdir),
             "--maxclients", "10000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)
        import redis

        wait_until(redis.Redis(port=self.port, socket_connect_timeout=0.5).ping, 15, "redis-server")

    def restart(self) -> None:
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown"], capture_output=True)
        self.proc.wait(15)
        self.start()

    def stop(self) -> None:
        stop_process(self.proc)


class Client:
    """One customer's connection; checks the order's seqs (each once, no gap)."""

    def __init__(self, soak: Soak, index: int):
        self.soak, self.index = soak, index
        self.order_id = soak.orders[index // 5]
        self.user_id = f"soak_user_{index}"
        self.token = mint(soak.private_pem, self.user_id, [self.order_id], ttl=24 * 3600)
        self.last_seq: int | None = None
        self.ws = None
        self.task: asyncio.Task | None = None
        self.closing = False

    async def run(self, resume: bool) -> None:
        stats = self.soak.stats
        query = f"?last_seq={self.last_seq}" if resume and self.last_seq is not None else ""
        while not self.soak.stopping:
            try:
                self.ws = await ws_connect(self.soak.pod_port, self.order_id, self.token, query,
                                           open_timeout=10, ping_interval=None)
            except (OSError, websockets.InvalidStatus, websockets.InvalidHandshake, TimeoutError):
                stats["upgrade_refused_or_failed"] += 1
                await asyncio.sleep(1 + random.random())
                continue
            if not query:
                self.last_seq = None  # fresh: the ack sets the baseline
            try:
                async for raw in self.ws:
                    self.on_message(json.loads(raw))
            except websockets.ConnectionClosed:
                pass
            code = self.ws.close_code
            if self.closing or self.soak.stopping:
                return
            stats[f"closed_{code}"] += 1
            # 1001/4002/4003: reconnect and resume, as the client library does
            query = f"?last_seq={self.last_seq}" if self.last_seq is not None else ""
            await asyncio.sleep(1 + random.random())

    def on_message(self, message: dict) -> None:
        stats = self.soak.stats
        event, data = message.get("event"), message.get("data") or {}
        if event == "connection_ack":
            if self.last_seq is None:
                self.last_seq = int(data.get("seq") or 0)
        elif event == "tracking_update":
            seq = int(data["seq"])
            if self.last_seq is not None and seq <= self.last_seq:
                stats["duplicated"] += 1
            elif self.last_seq is not None and seq != self.last_seq + 1:
                stats["lost"] += seq - self.last_seq - 1
                self.soak.losses.append((self.order_id, self.last_seq, seq))
            if self.last_seq is None or seq > self.last_seq:
                self.last_seq = seq
            stats["received"] += 1
        elif event == "error":
            stats[f"error_{data.get('code')}"] += 1

    def start(self, resume: bool = False) -> None:
        self.closing = False
        self.task = asyncio.ensure_future(self.run(resume))

    async def close(self) -> None:
        self.closing = True
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 5)
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


class Soak:
    def __init__(self, args, private_pem: bytes):
        self.args, self.private_pem = args, private_pem
        self.orders = [f"ord_soak_{n:05d}" for n in range(max(1, args.connections // 5))]
        self.carrier = {o: CARRIERS[n % 3] for n, o in enumerate(self.orders)}
        self.seq = dict.fromkeys(self.orders, 0)
        self.stats: Counter = Counter()
        self.losses: list = []
        self.stopping = False
        self.pod_port = 0

    async def feed(self, redis_url: str) -> None:
        """Steady updates through the gateway's publish path; a failed publish is retried."""
        client = aioredis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=1)
        publisher = Publisher(client)
        rate, step = self.args.updates_per_second, 0.05
        while not self.stopping:
            started = time.monotonic()
            for _ in range(max(1, int(rate * step))):
                order = random.choice(self.orders)
                seq = self.seq[order] + 1
                event = StoredEvent(order, seq, "in_transit", "Newark NJ", "2025-10-03T14:00:00Z")
                try:
                    await publisher.publish(order, self.carrier[order], event)
                    self.seq[order] = seq
                    self.stats["published"] += 1
                except (RedisError, OSError):  # Redis restarting: the same seq again later
                    self.stats["publish_retried"] += 1
                    await asyncio.sleep(0.2)
            await asyncio.sleep(max(0.0, step - (time.monotonic() - started)))
        await client.aclose()


async def main_async(args) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="ordertrack-soak-"))
    private_pem, public_path = generate_key_pair(workdir)
    redis = Redis(workdir)
    redis.start()
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    # parsed once: PyJWT would parse (and check) the PEM again for each of the N tokens
    soak = Soak(args, load_pem_private_key(private_pem, password=None))
    pod = None
    try:
        pod, soak.pod_port, metrics_port = start_pod(
            redis.url, public_path, args.connections + 1000, args.heartbeat_interval,
            workdir / "pod.log")
        duration = args.minutes * 60
        print(f"soak: {args.connections} connections, {args.minutes} min, pod log {workdir}/pod.log",
              flush=True)
        feeder = asyncio.ensure_future(soak.feed(redis.url))
        clients = [Client(soak, n) for n in range(args.connections)]
        for start in range(0, len(clients), 100):  # ramp up: 100 every 50 ms
            for client in clients[start:start + 100]:
                client.start()
            await asyncio.sleep(0.05)
        ramp_deadline = time.monotonic() + 120
        while time.monotonic() < ramp_deadline:
            open_now = sum(c.ws is not None and c.ws.state is State.OPEN for c in clients)
            if open_now >= len(clients):
                break
            await asyncio.sleep(1)
        print(f"soak: {open_now} of {len(clients)} open after the ramp-up", flush=True)
        await asyncio.sleep(5)
        rss_start = rss_kb(pod.pid) * 1024
        began = time.monotonic()
        control = aioredis.from_url(redis.url)
        restarted = flag_off = False
        rss_settled = None
        churn_until = began + duration * 0.8
        while (now := time.monotonic()) < began + duration:
            elapsed = now - began
            if now < churn_until:  # churn: ~0.5 % of the connections per second
                churned = random.sample(clients, max(1, args.connections // 200))
                await asyncio.gather(*(client.close() for client in churned))
                for client in churned:
                    client.start(resume=random.random() < 0.5)
                soak.stats["churned"] += len(churned)
            if int(elapsed) // 30 != int(elapsed - 1) // 30:
                open_now = sum(c.ws is not None and c.ws.state is State.OPEN for c in clients)
                print(f"soak: {elapsed:.0f}s open={open_now} received={soak.stats['received']} "
                      f"lost={soak.stats['lost']} rss={rss_kb(pod.pid) * 1024 / 2**20:.0f}MB", flush=True)
            if not flag_off and elapsed > duration * 0.2 and elapsed < duration * 0.3:
                await control.set(FLAG_KEY, b'{"enabled": true, "carriers": ["dhl", "ups"]}')
                await control.publish(redis_layout.CONTROL_ALL, redis_layout.encode_flag_changed())
                flag_off = True
            elif flag_off and elapsed > duration * 0.3:
                await control.delete(FLAG_KEY)
                await control.publish(redis_layout.CONTROL_ALL, redis_layout.encode_flag_changed())
                flag_off = False
                soak.stats["flag_flips"] += 1
            if not restarted and elapsed > duration * 0.5:
                await control.aclose()
                redis.restart()
                control = aioredis.from_url(redis.url)
                restarted = True
                print(f"soak: redis restarted at {elapsed:.0f}s", flush=True)
            if rss_settled is None and elapsed > duration * 0.6:
                rss_settled = rss_kb(pod.pid) * 1024
            await asyncio.sleep(1)
        await asyncio.sleep(15)  # churn over: let everyone reconnect and drain in-flight updates
        rss_end = rss_kb(pod.pid) * 1024
        soak.stopping = True
        await feeder
        await asyncio.sleep(3)  # the last published updates reach every client
        text = scrape(metrics_port)
        for client in clients:
            await client.close()
        await control.aclose()

        def pod_empty() -> bool:
            active = metric_by_label(scrape(metrics_port), "ordertrack_ws_active_connections", "pod")
            return sum(active.values()) == 0
        await asyncio.sleep(6)  # the pod's gauges update every 5 s
        try:
            wait_until(pod_empty, 30, "pod with no connections")
            open_after = 0
        except TimeoutError:
            open_after = int(sum(metric_by_label(scrape(metrics_port),
                                                 "ordertrack_ws_active_connections", "pod").values()))
        check = aioredis.from_url(redis.url)
        slots = 0
        async for key in check.scan_iter("ws:user:*"):
            slots += await check.zcard(key)
        await check.aclose()
    finally:
        stop_process(pod)
        redis.stop()

    rss_settled = rss_settled or rss_start
    leak = rss_end > rss_settled * LEAK_TOLERANCE + LEAK_SLACK_BYTES or open_after or slots
    report = {
        "minutes": args.minutes, "connections": args.connections,
        "rss_mb": {"start": round(rss_start / 2**20, 1), "churn_settled": round(rss_settled / 2**20, 1),
                   "end": round(rss_end / 2**20, 1)},
        "events": {"published": soak.stats["published"], "received": soak.stats["received"],
                   "lost": soak.stats["lost"], "duplicated": soak.stats["duplicated"]},
        "disconnects_by_reason": metric_by_label(text, "ordertrack_ws_disconnects_total", "reason"),
        "client_side": {k: v for k, v in soak.stats.items()
                        if k not in ("published", "received", "lost", "duplicated")},
        "after_close": {"pod_connections": open_after, "registry_slots": slots},
        "first_losses": soak.losses[:10],
        # a feeder that published nothing, or clients that received nothing, proves nothing
        "verdict": "FAIL" if (soak.stats["lost"] or soak.stats["duplicated"] or leak
                              or not soak.stats["published"] or not soak.stats["received"])
                   else "PASS",
    }
    print(json.dumps(report, indent=2))
    (workdir / "soak.json").write_text(json.dumps(report, indent=2))
    return 0 if report["verdict"] == "PASS" else 1


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--updates-per-second", type=float, default=200.0)
    parser.add_argument("--heartbeat-interval", type=float, default=30.0)
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
