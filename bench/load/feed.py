"""The update feeder: one tracking update per order every `interval` during the hold.

Ours goes through the REAL path, the gateway's publish Lua (`gateway.publisher.Publisher`:
stream + state + PUBLISH in one call); the peers are fed the way each is built to be fed:
"redis-publish" (PUBLISH order:tracking:{order_id} <the same message JSON>) or "nchan-http"
(POST http://127.0.0.1:{port}/pub/{order_id} with the client frame, `bench.peers.nchan_body`). Order `j` is updated at
`hold_start + (j / orders + k) * interval`, so the rate is steady at orders / interval.

It keeps up on a loaded machine by batching: everything due is sent as ONE pipeline of script
calls (or PUBLISHes), one round trip per batch, one batch in flight; a late batch simply
carries more updates (`BATCH_MAX` at most), so the feeder catches up instead of queueing
tasks. nchan's publisher is HTTP: its POSTs go `HTTP_IN_FLIGHT` at a time over keep-alive.
Each update carries its send time in `location` (bench.lib.bench_location), taken just
before its batch is sent; how late that is against its schedule is the feeder's lateness.
A failed publish gives its seq back (the order's next update reuses it), so clients never
count a gap for an update that was never published.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import multiprocessing.connection
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.lib import bench_location, order_id, percentile
from bench.peers import nchan_body

log = logging.getLogger("ordertrack.bench.load.feed")

TICK = 0.005
CARRIER = "dhl"
ESTIMATED_DELIVERY = "2026-12-24"
RAW = {"bench": True}
#: publishes in one pipeline round trip at most (a batch is everything due, up to this)
BATCH_MAX = 1_000
#: concurrent POSTs to nchan's publisher (over as many keep-alive connections)
HTTP_IN_FLIGHT = 4
#: a Redis round trip slower than this fails its batch (counted, seqs given back)
REDIS_TIMEOUT_SECONDS = 10.0


@dataclass
class FeedSpec:
    #: "lua" | "redis-publish" | "nchan-http" | "mixed" (even orders through the publish Lua,
    #: odd ones by a bare PUBLISH of the same message: the two paths within one run)
    mode: str
    redis_url: str
    orders: int
    interval: float
    hold_start: float
    hold_seconds: float
    nchan_port: int = 0
    #: the first order's index (the orders are first_order .. first_order + orders - 1)
    first_order: int = 0
    #: "lua": let redis-py send SCRIPT EXISTS before every pipelined batch (its default, one
    #: more round trip per batch that the gateway's own single calls never make); off, the
    #: feeder loads the script once and sends EVALSHA alone
    script_check: bool = False


def due_updates(orders: int, interval: float, elapsed: float) -> int:
    """How many updates are due `elapsed` seconds into the hold (pure: the feeder's schedule)."""
    if elapsed < 0:
        return 0
    return int(elapsed * orders / interval) + 1


def scheduled_at(n: int, orders: int, interval: float) -> float:
    """Seconds into the hold at which update `n` is due (the inverse of `due_updates`)."""
    return n * interval / orders


def next_batch(issued: int, due: int, total: int, limit: int = BATCH_MAX) -> range:
    """The updates to send now: every due one not yet sent, at most `limit` (pure)."""
    return range(issued, min(due, total, issued + limit))


def lateness(samples: list[float]) -> dict[str, float]:
    """p50 / p99 / max in ms of seconds-late samples."""
    ordered = sorted(samples)
    return {"p50_ms": percentile(ordered, 50) * 1e3, "p99_ms": percentile(ordered, 99) * 1e3,
            "max_ms": (ordered[-1] if ordered else float("nan")) * 1e3}


class KeepAlivePoster:
    """`size` kept-alive HTTP/1.1 connections for POSTs, one request in flight on each.

    Hand-written because the feeder must not be the bottleneck: httpx spent ~1 ms of CPU per
    POST here (nchan's publisher alone topped out at ~900 POSTs/s with the client at 100 % of
    a core and nginx at 8 %); this costs a few tens of us."""

    def __init__(self, host: str, port: int, size: int):
        self.host, self.port = host, port
        self.idle: asyncio.Queue[_PostConnection] = asyncio.Queue()
        self.all: list[_PostConnection] = []
        for _ in range(size):
            conn = _PostConnection(host, port)
            self.all.append(conn)
            self.idle.put_nowait(conn)

    @contextlib.asynccontextmanager
    async def connection(self):
        conn = await self.idle.get()
        try:
            yield conn
        finally:
            self.idle.put_nowait(conn)

    def close(self) -> None:
        for conn in self.all:
            conn.close()


class _PostConnection:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        #: POSTs sent again because nginx had closed the kept-alive connection
        self.retries = 0

    async def post(self, path: str, body: bytes, timeout: float = 5.0) -> None:
        """POST `body`; raises on a status >= 300 or a broken connection (which is dropped,
        so the next POST reconnects)."""
        try:
            await asyncio.wait_for(self._post(path, body), timeout)
        except BaseException:
            self.close()
            raise

    async def _post(self, path: str, body: bytes) -> None:
        request = (b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (path.encode(), self.host.encode(), len(body), body))
        while True:
            fresh = self.writer is None
            if fresh:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.writer.write(request)
            try:
                head = await self.reader.readuntil(b"\r\n\r\n")
                break
            except (asyncio.IncompleteReadError, ConnectionError):
                # nginx closes idle keep-alive connections when it runs short of connections
                # (bench/peers NCHAN_CONNECTION_LIMIT): a reused one closed before answering is
                # retried once on a new connection, as HTTP clients do; a new one is an error
                self.close()
                if fresh:
                    raise
                self.retries += 1
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        answer = await self.reader.readexactly(length) if length else b""
        if b"connection: close" in head.lower():
            self.close()
        if status >= 300:
            raise RuntimeError(f"publisher answered {status}: {answer[:200]!r}")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Feeder:
    def __init__(self, spec: FeedSpec, on_status: Callable[[dict[str, Any]], None] | None = None):
        self.spec = spec
        #: called about once a second with {"sent", "due", "late_ms"} (the progress line)
        self.on_status = on_status
        self.seq: dict[int, int] = {}
        self.sent = 0
        self.refused = 0
        self.errors = 0
        self.batches = 0
        #: round trip of each batch (one pipeline) or of each POST (nchan)
        self.call_seconds: list[float] = []
        #: (send stamp, seconds from the stamp to the batch's write, to its reply) per batch:
        #: the stamp is what delivery is measured from, so staging a big batch counts in it
        self.batch_times: list[tuple[float, float, float]] = []
        #: (scheduled wall time, seconds late) of every update
        self.lag: list[tuple[float, float]] = []

    async def _setup(self) -> None:
        import redis.asyncio as aioredis

        from ordertrack.gateway.publisher import Publisher

        self.redis = aioredis.Redis.from_url(self.spec.redis_url, socket_timeout=REDIS_TIMEOUT_SECONDS)
        self.publisher = Publisher(self.redis)
        if self.spec.mode in ("lua", "mixed"):
            from ordertrack.gateway.publisher import SCRIPT

            await self.redis.script_load(SCRIPT)
        self.http = None
        if self.spec.mode == "nchan-http":
            self.http = KeepAlivePoster("127.0.0.1", self.spec.nchan_port, HTTP_IN_FLIGHT)

    def _next(self, n: int, sent_at: float) -> tuple[int, str, int, str, str]:
        """(order index j, order_id, seq, location, timestamp) of update `n`; its lateness."""
        spec = self.spec
        j = n % spec.orders
        seq = self.seq[j] = self.seq.get(j, 0) + 1
        due = spec.hold_start + scheduled_at(n, spec.orders, spec.interval)
        self.lag.append((due, sent_at - due))
        stamp = dt.datetime.fromtimestamp(sent_at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return j, order_id(spec.first_order + j), seq, bench_location(sent_at), stamp

    def _failed(self, j: int, seq: int, exc: BaseException) -> None:
        self.errors += 1
        if self.seq.get(j) == seq:
            self.seq[j] = seq - 1  # not published: the order's next update reuses the seq
        if self.errors <= 3:
            log.warning("publish failed: %s", exc)

    async def _send_redis(self, batch: range) -> None:
        """One pipeline round trip: the publish Lua (ours) or PUBLISH (peers) per update."""
        from ordertrack import redis_layout
        from ordertrack.models import StoredEvent

        pipe = self.redis.pipeline(transaction=False)
        sent_at = time.time()
        staged = []
        for n in batch:
            j, order, seq, location, stamp = self._next(n, sent_at)
            lua = self.spec.mode == "lua" or (self.spec.mode == "mixed" and j % 2 == 0)
            staged.append((j, seq, lua))
            if lua:
                await self.publisher.queue(pipe, order, CARRIER, StoredEvent(
                    order, seq, "in_transit", location, stamp, ESTIMATED_DELIVERY, RAW))
            else:
                pipe.publish(redis_layout.channel(order), redis_layout.encode_message(
                    CARRIER, seq, "in_transit", location, stamp, ESTIMATED_DELIVERY, RAW, sent_at))
        if not self.spec.script_check:
            pipe.scripts.clear()  # loaded in _setup: EVALSHA alone, as the gateway sends it
        written_at = time.time()
        started = time.perf_counter()
        try:
            replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # noqa: BLE001 - the whole batch failed: counted, seqs back
            for j, seq, _ in reversed(staged):
                self._failed(j, seq, exc)
            return
        finally:
            await pipe.reset()
        self.call_seconds.append(time.perf_counter() - started)
        self.batch_times.append((sent_at, written_at - sent_at, time.time() - sent_at))
        for (j, seq, lua), reply in zip(staged, replies, strict=True):
            if isinstance(reply, Exception):
                self._failed(j, seq, reply)
            elif lua and int(reply) != 1:
                self.refused += 1
            else:
                self.sent += 1

    async def _post(self, n: int) -> None:
        from ordertrack import redis_layout

        async with self.http.connection() as conn:
            sent_at = time.time()
            j, order, seq, location, stamp = self._next(n, sent_at)
            body = nchan_body(redis_layout.encode_message(CARRIER, seq, "in_transit", location,
                                                          stamp, ESTIMATED_DELIVERY, RAW, sent_at))
            started = time.perf_counter()
            try:
                await conn.post(f"/pub/{order}", body)
            except Exception as exc:  # noqa: BLE001 - counted; the report shows it
                self._failed(j, seq, exc)
                return
            self.call_seconds.append(time.perf_counter() - started)
            self.batch_times.append((sent_at, 0.0, time.time() - sent_at))
            self.sent += 1

    async def _send(self, batch: range) -> None:
        self.batches += 1
        if self.spec.mode == "nchan-http":
            await asyncio.gather(*(self._post(n) for n in batch))
        else:
            await self._send_redis(batch)

    async def run(self) -> dict[str, Any]:
        await self._setup()
        spec = self.spec
        total = due_updates(spec.orders, spec.interval, spec.hold_seconds - 1e-9)
        issued = 0
        cpu_started = None
        reported = 0.0
        while issued < total:
            now = time.time()
            due = due_updates(spec.orders, spec.interval, now - spec.hold_start)
            if self.on_status is not None and issued and now - reported >= 1.0:
                reported = now
                self.on_status({"sent": self.sent, "due": min(due, total),
                                "late_ms": self.lag[-1][1] * 1e3})
            batch = next_batch(issued, due, total)
            if not batch:
                wake = spec.hold_start + scheduled_at(issued, spec.orders, spec.interval)
                await asyncio.sleep(max(TICK, wake - now) if issued == 0 else TICK)
                continue
            if cpu_started is None:
                cpu_started, wall_started = time.process_time(), time.time()
            await self._send(batch)
            issued = batch.stop
        cpu = time.process_time() - cpu_started if cpu_started is not None else 0.0
        wall = time.time() - wall_started if cpu_started is not None else 0.0
        await self.redis.aclose()
        if self.http is not None:
            self.http.close()
        calls = sorted(self.call_seconds)
        late = lateness([s for _, s in self.lag])
        return {
            "mode": spec.mode, "scheduled": total, "sent": self.sent, "refused": self.refused,
            "errors": self.errors, "rate": total / spec.hold_seconds,
            "batches": self.batches, "updates_per_batch": total / self.batches if self.batches else None,
            "publish_p50_ms": percentile(calls, 50) * 1e3,
            "publish_p99_ms": percentile(calls, 99) * 1e3,
            "lateness": late, "schedule_lag_p99_ms": late["p99_ms"],
            "cpu_percent": 100.0 * cpu / wall if wall > 0 else None,
            "http_retries": sum(c.retries for c in self.http.all) if self.http is not None else 0,
            "script_check": spec.script_check,
            "stamp_to_write": lateness([w for _, w, _ in self.batch_times]),
            "stamp_to_reply": lateness([r for _, _, r in self.batch_times]),
            "lag": self.lag,
        }


def feed_main(spec: FeedSpec, pipe: multiprocessing.connection.Connection) -> None:
    import uvloop

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    try:
        feeder = Feeder(spec, lambda status: pipe.send(("status", "feed", status)))
        pipe.send(("done", "feed", uvloop.run(feeder.run())))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the run
        log.exception("feeder failed")
        pipe.send(("error", "feed", f"{type(exc).__name__}: {exc}"))


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.load.feed`: the feeder alone against a private redis-server, at the
    cluster profile's rate by default (45,000 orders / 30 s = 1,500 updates/s through the
    publish Lua), printing what it sent and how late: can it keep up on this machine?"""
    import argparse
    import json
    import shutil
    import tempfile
    from pathlib import Path

    import uvloop

    from bench.lib import start_redis, stop_process

    parser = argparse.ArgumentParser(prog="python -m bench.load.feed", description=main.__doc__)
    parser.add_argument("--orders", type=int, default=45_000)
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--mode", choices=("lua", "redis-publish"), default="lua")
    parser.add_argument("--script-check", action="store_true",
                        help="let redis-py send SCRIPT EXISTS before every batch (its default)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="ordertrack-feed-"))
    proc, url = start_redis(workdir)
    try:
        spec = FeedSpec(args.mode, url, args.orders, args.interval, time.time() + 0.5,
                        args.seconds, script_check=args.script_check)
        result = uvloop.run(Feeder(spec).run())
    finally:
        stop_process(proc)
        shutil.rmtree(workdir, ignore_errors=True)
    result.pop("lag")
    print(json.dumps(result, indent=2))
    return 0 if result["sent"] == result["scheduled"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
