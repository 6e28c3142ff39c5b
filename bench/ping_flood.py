"""A client that floods a pod with pings and never reads: what the pod's memory does.

Run: .venv/bin/python -m bench.ping_flood [megabytes of pings, default 80]

The issue this guards: a pod's RSS went 51 -> 283 MB for 160 MB of pings, every one answered
into our write buffer. The pod answers only the latest ping of each read batch, and stops
reading a client whose answers it cannot write, so RSS stays flat. Starts a private
redis-server and one `ordertrack serve`, opens one raw WebSocket with a 4 KB receive buffer,
writes the pings and a text marker, waits until the pod has read every byte (its `rchar`,
/proc's count of bytes read) or stopped reading the client, and prints the RSS before and
after. The unit suite (tests/test_push_edges.py) checks the once-per-batch answers by count;
this prints the figure, it does not judge it (a figure depends on the machine).
"""

from __future__ import annotations

import asyncio
import time

import psutil

from bench.lib import cli, raw_upgrade, stack

PING = bytes([0x89, 0x80 | 125]) + b"\0\0\0\0" + b"p" * 125  # masked with a zero key
MARKER = b'{"event":"heartbeat"}'


def text_frame(payload: bytes) -> bytes:
    return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


async def flood(port: int, token: str, megabytes: int) -> int:
    _, writer = await asyncio.open_connection(sock=await raw_upgrade(port, "ord_ping", token))
    batch = PING * 4000  # ~0.5 MB
    sent = 0
    while sent < megabytes << 20:
        writer.write(batch)
        await writer.drain()
        sent += len(batch)
    writer.write(text_frame(MARKER))
    await writer.drain()
    return sent


def main() -> None:
    megabytes = cli(__doc__, megabytes=80).megabytes
    with stack() as world:
        pod, port, _ = world.pod(LOG_LEVEL="info")
        process = psutil.Process(pod.pid)
        rss_before, read_before = process.memory_info().rss, process.io_counters().read_chars
        started = time.perf_counter()
        sent = asyncio.run(flood(port, world.keys.token("pinger", "ord_ping"), megabytes))
        # until the pod has read it all, or has read nothing more for 2 s (it stopped reading)
        last, quiet_since = -1, time.monotonic()
        while True:
            read = process.io_counters().read_chars - read_before
            if read >= sent:
                break
            if read != last:
                last, quiet_since = read, time.monotonic()
            elif time.monotonic() - quiet_since > 2:
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        rss_after = process.memory_info().rss
        print(f"ping flood: {sent / 2**20:.0f} MB of pings sent, {read / 2**20:.0f} MB read "
              f"by the pod in {elapsed:.1f} s")
        print(f"pod RSS: {rss_before / 2**20:.0f} MB before, {rss_after / 2**20:.0f} MB after "
              f"({(rss_after - rss_before) / 2**20:+.0f} MB)")


if __name__ == "__main__":
    main()
