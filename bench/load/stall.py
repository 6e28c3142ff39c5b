"""`python -m bench.load.stall`: how long one scrape of the pod's /metrics stalls its event loop.

prometheus_client serves /metrics from a thread of the pod's process, so rendering it holds the
GIL the pod's loop needs. A real pod, a private redis-server and one WebSocket client that
heartbeats back to back (each `heartbeat` sent the moment the previous `heartbeat_ack` came):
the round trips of heartbeats in flight while a scrape was, against the others. A scrape every
`--every` seconds for `--seconds`. The figures are the issue-23 evidence for the load test
scraping our pod every 10 s instead of every second (the peers have no /metrics to scrape).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time

from bench.lib import order_id, stack, summary, user_id, ws_connect


def scrape_raw(port: int) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        while sock.recv(65536):
            pass


async def heartbeats(port: int, token: str, seconds: float) -> list[tuple[float, float]]:
    out = []
    async with ws_connect(port, order_id(0), token) as ws:
        await ws.recv()  # connection_ack
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            sent = time.perf_counter()
            await ws.send('{"event":"heartbeat"}')
            await ws.recv()
            out.append((sent, time.perf_counter() - sent))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load.stall", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--every", type=float, default=0.1, help="seconds between scrapes")
    args = parser.parse_args(argv)
    with stack("ordertrack-stall-") as world:
        _, port, metrics_port = world.pod(max_connections=100)
        token = world.keys.token(user_id(0), order_id(0))
        scrapes: list[tuple[float, float]] = []
        halt = threading.Event()

        def scraper() -> None:
            while not halt.wait(args.every):
                began = time.perf_counter()
                scrape_raw(metrics_port)
                scrapes.append((began, time.perf_counter()))

        thread = threading.Thread(target=scraper, daemon=True)
        thread.start()
        rtts = asyncio.run(heartbeats(port, token, args.seconds))
        halt.set()
        thread.join()
    inside, outside = [], []
    k = 0
    for sent, rtt in rtts:
        while k < len(scrapes) and scrapes[k][1] < sent:
            k += 1
        overlaps = k < len(scrapes) and scrapes[k][0] <= sent + rtt
        (inside if overlaps else outside).append(rtt)
    print(json.dumps({
        "scrapes": len(scrapes),
        "scrape": summary([end - began for began, end in scrapes]),
        "heartbeat_rtt_during_a_scrape": summary(inside),
        "heartbeat_rtt_otherwise": summary(outside),
    }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
