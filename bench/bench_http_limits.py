"""Ingest under oversized and trickled bodies (issue 17, items 1-2): run by hand,
`python -m bench.bench_http_limits [--src DIR] [--tricklers 500]`.

Starts a real `ordertrack ingest` (from `--src`, default this tree's `src`, so a checkout
without the limits can be measured the same way) with a private redis-server and a fresh
SQLite store, then, measuring the ingest process's RSS (peak, sampled every 20 ms) and open
fds from /proc:
1. a 64 MB body with a declared Content-Length, sent as fast as the socket takes it;
2. a 64 MB chunked body with a wrong FedEx signature;
3. `--tricklers` connections that send nothing (the floor: a socket and its protocol), then as
   many clients at once each sending a DHL delivery's body one byte a second.
Raw sockets, no import of the ordertrack under test: the same script measures before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.lib import REPO, free_port, rss_kb, stop_process
from ordertrack.devtools.processes import wait_port
from ordertrack.devtools.redis_server import RedisServer

DHL_SECRET = "bench-dhl"
BODY = 64 * 1024 * 1024
CHUNK = 64 * 1024


def rss_mb(pid: int) -> float:
    return rss_kb(pid) / 1024


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Peak:
    """The process's highest RSS while the block runs (sampled every 20 ms)."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()

    def __enter__(self) -> Peak:
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mb(self.pid))

    def __exit__(self, *exc) -> None:
        time.sleep(0.3)  # let the server finish with what it read
        self._stop.set()
        self.thread.join()


def send_body(port: int, head: bytes, chunks, seconds: float = 60.0) -> tuple[str, int, float]:
    """Send head then chunks until the server stops taking them; (status line, bytes, s)."""
    started = time.monotonic()
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as sock:
        sock.sendall(head)
        try:
            for chunk in chunks:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        try:
            status = sock.recv(200).split(b"\r\n", 1)[0].decode(errors="replace")
        except OSError as exc:
            status = f"({type(exc).__name__})"
    return status or "(closed, no answer)", sent, time.monotonic() - started


async def trickler(port: int, results: list[str], hold: float) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        results.append(f"connect: {type(exc).__name__}")
        return
    writer.write(b"POST /webhooks/dhl HTTP/1.1\r\nHost: b\r\nContent-Length: 1000\r\n"
                 b"X-Webhook-Token: " + DHL_SECRET.encode() + b"\r\n\r\n")
    end = time.monotonic() + hold
    answer = b""
    try:
        while time.monotonic() < end:
            writer.write(b"{")
            try:
                answer = await asyncio.wait_for(reader.read(200), 1.0)
                break
            except TimeoutError:
                continue
    except OSError:
        pass
    writer.close()
    results.append(answer.split(b"\r\n", 1)[0].decode(errors="replace") or "no answer")


async def idle(pid: int, port: int, n: int) -> None:
    """The floor: `n` connections that send nothing (the head timeout, 10 s, ends them)."""
    base_rss, base_fds = rss_mb(pid), fds(pid)
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(n)]
    await asyncio.sleep(5)
    print(f"{n} idle connections (no bytes), 5 s in: RSS {rss_mb(pid):.1f} MB "
          f"(+{rss_mb(pid) - base_rss:.1f}), fds {fds(pid)} (+{fds(pid) - base_fds})")
    for _reader, writer in conns:
        writer.close()


async def tricklers(pid: int, port: int, n: int, hold: float) -> None:
    results: list[str] = []
    base_rss, base_fds = rss_mb(pid), fds(pid)
    tasks = [asyncio.create_task(trickler(port, results, hold)) for _ in range(n)]
    await asyncio.sleep(5)
    held_rss, held_fds = rss_mb(pid), fds(pid)
    print(f"{n} tricklers, 5 s in: RSS {held_rss:.1f} MB (+{held_rss - base_rss:.1f}), "
          f"fds {held_fds} (+{held_fds - base_fds})")
    await asyncio.gather(*tasks)
    await asyncio.sleep(1)
    counts: dict[str, int] = {}
    for result in results:
        counts[result] = counts.get(result, 0) + 1
    print(f"  after {hold:g} s at most: {counts}; ingest RSS {rss_mb(pid):.1f} MB, "
          f"fds {fds(pid)}")


class Ingest:
    """A fresh `ordertrack ingest` (and its redis-server) for one scenario."""

    def __init__(self, src: str, tmp: str):
        self.src, self.tmp = src, tmp

    def __enter__(self) -> Ingest:
        self.port = free_port()
        self.redis = RedisServer(Path(self.tmp) / f"redis-{self.port}")
        self.redis.start()
        env = {**os.environ, "PYTHONPATH": self.src, "REDIS_URL": self.redis.url,
               "DATABASE_URL": f"sqlite:///{self.tmp}/t{self.port}.db",
               "INGEST_HOST": "127.0.0.1", "INGEST_PORT": str(self.port),
               "FEDEX_WEBHOOK_SECRET": "bench-fedex", "DHL_WEBHOOK_SECRET": DHL_SECRET,
               "INGEST_REQUEST_BODY_TIMEOUT_SECONDS": "10", "LOG_LEVEL": "error"}
        self.proc = subprocess.Popen([sys.executable, "-m", "ordertrack", "ingest"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc, "ingest")
        self.pid = self.proc.pid
        return self

    def __exit__(self, *exc) -> None:
        stop_process(self.proc, timeout=10)
        self.redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", default=str(REPO / "src"), help="the ordertrack to run")
    parser.add_argument("--tricklers", type=int, default=500)
    parser.add_argument("--hold", type=float, default=20.0,
                        help="how long a trickler keeps sending without an answer")
    args = parser.parse_args()
    piece = b"a" * CHUNK
    bodies = (
        ("64 MB, declared Content-Length",
         f"POST /webhooks/fedex HTTP/1.1\r\nHost: b\r\nContent-Length: {BODY}\r\n"
         "fdx-signature: wrong\r\n\r\n".encode(),
         lambda: (piece for _ in range(BODY // CHUNK))),
        ("64 MB, chunked",
         b"POST /webhooks/fedex HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked\r\n"
         b"fdx-signature: wrong\r\n\r\n",
         lambda: [*(b"%x\r\n%s\r\n" % (CHUNK, piece) for _ in range(BODY // CHUNK)),
                  b"0\r\n\r\n"]),
    )
    print(f"ordertrack from {args.src}; each scenario on a fresh ingest process")
    with tempfile.TemporaryDirectory() as tmp:
        for name, head, chunks in bodies:
            with Ingest(args.src, tmp) as ingest:
                before = rss_mb(ingest.pid)
                with Peak(ingest.pid) as peak:
                    status, sent, took = send_body(ingest.port, head, chunks())
                print(f"{name}: {status!r} after {sent / 2**20:.1f} MB sent, {took:.2f} s; "
                      f"ingest RSS {before:.1f} -> peak {peak.peak:.1f} MB "
                      f"(+{peak.peak - before:.1f}), then {rss_mb(ingest.pid):.1f} MB")
        with Ingest(args.src, tmp) as ingest:
            asyncio.run(idle(ingest.pid, ingest.port, args.tricklers))
        with Ingest(args.src, tmp) as ingest:
            asyncio.run(tricklers(ingest.pid, ingest.port, args.tricklers, args.hold))


if __name__ == "__main__":
    main()
