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
import shutil
import tempfile
import threading
import time
from pathlib import Path

from bench.lib import (
    SUBPROTOCOL,
    generate_key_pair,
    make_token,
    order_id,
    percentile,
    start_pod,
    start_redis,
    stop_process,
)


def scrape_raw(port: int) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        while sock.recv(65536):
            pass


def summary(values: list[float]) -> dict[str, float | int]:
    ordered = sorted(values)
    return {"count": len(ordered), "p50_ms": percentile(ordered, 50) * 1e3,
            "p99_ms": percentile(ordered, 99) * 1e3, "max_ms": ordered[-1] * 1e3 if ordered else 0}


async def heartbeats(url: str, token: str, seconds: float) -> list[tuple[float, float]]:
    from websockets.asyncio.client import connect

    out = []
    async with connect(url, subprotocols=[SUBPROTOCOL],
                       additional_headers={"Authorization": f"Bearer {token}"}) as ws:
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
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    workdir = Path(tempfile.mkdtemp(prefix="ordertrack-stall-"))
    redis_proc = pod = None
    try:
        private_pem, public_path = generate_key_pair(workdir)
        redis_proc, redis_url = start_redis(workdir)
        pod, port, metrics_port = start_pod(redis_url, public_path, 100, 30, workdir / "pod.log")
        token = make_token(load_pem_private_key(private_pem, password=None), 0)
        scrapes: list[tuple[float, float]] = []
        halt = threading.Event()

        def scraper() -> None:
            while not halt.wait(args.every):
                began = time.perf_counter()
                scrape_raw(metrics_port)
                scrapes.append((began, time.perf_counter()))

        thread = threading.Thread(target=scraper, daemon=True)
        thread.start()
        rtts = asyncio.run(heartbeats(f"ws://127.0.0.1:{port}/ws/orders/{order_id(0)}/track",
                                      token, args.seconds))
        halt.set()
        thread.join()
    finally:
        for proc in (pod, redis_proc):
            if proc is not None:
                stop_process(proc)
        shutil.rmtree(workdir, ignore_errors=True)
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
