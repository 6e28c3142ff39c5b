"""One-off: CPU a pod's subscription costs at 5K / 20K / 40K msg/s of UNWATCHED traffic.

Run: .venv/bin/python -m bench.pubsub_cpu [seconds per level, default 3]

A private redis-server; for each subscriber kind a child process on uvloop holds the pod's
`PSUBSCRIBE order:tracking:*` and watches nothing: `old` reads it the way push/subscription.py did
before issue 9 (redis.asyncio `PubSub.get_message`), `cython` and `python` with push/pubsub_reader.py's
two implementations. This process PUBLISHes at a steady rate (pipelined every 10 ms) and reads
the child's CPU time from /proc (psutil). The child prints how many messages it read.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import psutil
import redis
import uvloop

from bench.lib import cli, publish_steady, stack, stop_process, unwatched_message
from ordertrack import redis_layout

RATES = (5_000, 20_000, 40_000)
KINDS = ("old", "cython", "python")


async def subscribe(kind: str, url: str) -> None:
    count = 0
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    if kind == "old":
        client = redis.asyncio.Redis.from_url(url)
        pubsub = client.pubsub()
        await pubsub.psubscribe(redis_layout.CHANNEL_PATTERN)
        print("live", flush=True)
        watched: dict = {}
        while not stop.is_set():
            message = await pubsub.get_message(timeout=0.2)
            if message is not None and message["type"] == "pmessage":
                count += 1
                watched.get(message["channel"][len(redis_layout.CHANNEL_PREFIX):].decode())
    else:
        from ordertrack import redis_connect
        from ordertrack.push import pubsub_reader

        live = asyncio.Event()
        address = await redis_connect.subscription_address(redis_connect.parse_redis_url(url))
        reader = await pubsub_reader.connect(address, {}, print, on_live=live.set,
                                             impl=pubsub_reader.IMPLEMENTATIONS[kind])
        await live.wait()
        print("live", flush=True)
        await stop.wait()
        count = reader.received
    print(count, flush=True)


def measure(kind: str, url: str, rate: int, seconds: float) -> tuple[float, int, int, float]:
    child = subprocess.Popen([sys.executable, "-m", "bench.pubsub_cpu", "--subscriber", kind, url],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "live"
        proc = psutil.Process(child.pid)
        before = proc.cpu_times()
        wall = time.perf_counter()
        sent = publish_steady(url, rate, seconds, unwatched_message)
        time.sleep(0.3)  # let it finish what is queued
        after = proc.cpu_times()
        wall = time.perf_counter() - wall
        child.send_signal(signal.SIGTERM)
        got = int(child.stdout.readline())
    finally:
        stop_process(child)
    cpu = (after.user + after.system) - (before.user + before.system)
    return 100 * cpu / wall, sent, got, sent / (wall - 0.3)


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--subscriber":
        uvloop.run(subscribe(sys.argv[2], sys.argv[3]))
        return 0
    seconds = cli(__doc__, seconds=3.0).seconds
    with stack() as world:
        for rate in RATES:
            for kind in KINDS:
                cpu, sent, got, achieved = measure(kind, world.redis_url, rate, seconds)
                us = cpu / 100 * (seconds + 0.3) / max(got, 1) * 1e6
                print(f"{kind:7s} target {rate:6,d}/s achieved {achieved:8,.0f}/s: "
                      f"CPU {cpu:5.1f} % of a core, {us:5.2f} us/msg, read {got:,} of {sent:,}",
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
