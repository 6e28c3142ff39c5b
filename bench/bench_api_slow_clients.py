"""Slow and oversized request heads against one `ordertrack api` process.

Run by hand (needs `redis-server` on PATH):

    .venv/bin/python -m bench.bench_api_slow_clients [--big 30] [--slow 200] [--wait 15]

Two figures:
- the API's RSS before and after `--big` clients each send 10 MB of one header, never
  finishing it (without a head-size limit the API buffers all of it);
- how many of `--slow` clients that send half a request head and stop are still connected
  after `--wait` seconds (without a head timeout: all of them).
"""

from __future__ import annotations

import argparse
import socket
import sys
import time

from bench.lib import free_port, rss_kb, stack
from ordertrack.devtools.processes import ProcessGroup, wait_http_ok

BIG_HEADER_BYTES = 10 * 1024 * 1024


def still_open(sock: socket.socket) -> bool:
    """True when the server has neither answered nor closed this connection."""
    sock.setblocking(False)
    try:
        sock.recv(65536)  # an answer, or b"" for a close
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def big_heads(port: int, clients: int) -> list[socket.socket]:
    socks = []
    for _ in range(clients):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.settimeout(5)
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nX-Big: ")
            sent, chunk = 0, b"a" * 65536
            while sent < BIG_HEADER_BYTES:
                sent += sock.send(chunk)
        except OSError:
            pass  # the server refused and closed: what a bounded server does
        socks.append(sock)
    return socks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", type=int, default=30)
    parser.add_argument("--slow", type=int, default=200)
    parser.add_argument("--wait", type=float, default=15.0)
    args = parser.parse_args()

    with stack() as world:
        port = free_port()
        group = ProcessGroup()
        api = group.start("api", env={
            "API_HOST": "127.0.0.1", "API_PORT": str(port), "REDIS_URL": world.redis_url,
            "DATABASE_URL": f"sqlite:///{world.workdir}/tracking.db",
            "JWT_PUBLIC_KEY": str(world.keys.public_path), "LOG_LEVEL": "error"})
        try:
            wait_http_ok(f"http://127.0.0.1:{port}/healthz")
            before = rss_kb(api.pid) / 1024
            big = big_heads(port, args.big)
            time.sleep(1)
            print(f"RSS with {args.big} clients each 10 MB into one header: "
                  f"{before:.0f} MB -> {rss_kb(api.pid) / 1024:.0f} MB")
            for sock in big:
                sock.close()
            slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(args.slow)]
            for sock in slow:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nX-Part")
            time.sleep(args.wait)
            print(f"incomplete requests still open after {args.wait:g} s: "
                  f"{sum(still_open(sock) for sock in slow)} of {args.slow}")
            for sock in slow:
                sock.close()
        finally:
            group.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
