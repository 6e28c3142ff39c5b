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
import socket
import sys
import tempfile
import time
from pathlib import Path

import psutil

from ordertrack.devtools.keys import generate_keys
from ordertrack.devtools.processes import ProcessGroup, free_port, wait_http_ok
from ordertrack.devtools.redis_server import RedisServer

PING = bytes([0x89, 0x80 | 125]) + b"\0\0\0\0" + b"p" * 125  # masked with a zero key
MARKER = b'{"event":"heartbeat"}'


def text_frame(payload: bytes) -> bytes:
    return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


async def flood(port: int, token: str, megabytes: int) -> int:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(("GET /ws/orders/ord_ping/track HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  "Connection: Upgrade\r\nUpgrade: websocket\r\n"
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                  "Sec-WebSocket-Protocol: vantage-tracking-v1\r\n"
                  f"Authorization: Bearer {token}\r\n\r\n").encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert b" 101 " in head.split(b"\r\n")[0], head
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
    megabytes = int(sys.argv[1]) if len(sys.argv) > 1 else 80
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        redis_server = RedisServer(tmp_path / "redis")
        redis_server.start()
        group = ProcessGroup()
        try:
            keys = generate_keys(tmp_path / "keys")
            port = free_port()
            pod = group.start("serve", env={
                "REDIS_URL": redis_server.url, "PORT": str(port), "HOST": "127.0.0.1",
                "METRICS_PORT": "0", "JWT_PUBLIC_KEY": str(keys.public_path)},
                log=tmp_path / "pod.log")
            wait_http_ok(f"http://127.0.0.1:{port}/readyz")
            process = psutil.Process(pod.pid)
            rss_before, read_before = process.memory_info().rss, process.io_counters().read_chars
            started = time.perf_counter()
            sent = asyncio.run(flood(port, keys.token("pinger", "ord_ping"), megabytes))
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
        finally:
            group.stop_all()
            redis_server.stop()


if __name__ == "__main__":
    main()
